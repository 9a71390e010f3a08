/** Model-input batches of a fixed, seeded sample of a dataset's test split, for measuring activations. */
import { limitDataset, openDataset } from '../data/open.js';
import { inputShape, toModelInput } from '../data/dataset.js';
import { calibrationFiles, detectorImages } from '../detect/calibration.js';

export interface Sample {
  name: string;
  count: number;
  batches: AsyncIterable<{ input: Float32Array; size: number }>;
}

/** `limit` images (seeded subset) of `dataset`'s test split, normalised as the model's preprocessing says. */
export async function testSample(dataset: string, opts: { dir?: string; resolution: number; preprocess?: string; limit: number; seed: number; batch: number }): Promise<Sample> {
  const src = await openDataset(dataset, 'test', { dir: opts.dir, resolution: opts.resolution, preprocess: opts.preprocess });
  const ds = limitDataset(src.dataset, opts.limit, opts.seed);
  const shape = inputShape(ds, src.input);
  if (shape.height !== opts.resolution || shape.width !== opts.resolution) {
    throw new Error(`dataset '${dataset}' gives ${shape.height}x${shape.width} inputs, the model takes ${opts.resolution}x${opts.resolution}`);
  }
  async function* batches(): AsyncGenerator<{ input: Float32Array; size: number }> {
    for (let start = 0; start < ds.count; start += opts.batch) {
      const idx = Array.from({ length: Math.min(opts.batch, ds.count - start) }, (_, i) => start + i);
      const input = new Float32Array(idx.length * shape.channels * shape.height * shape.width);
      yield { input: toModelInput(ds, idx, input, src.input), size: idx.length };
    }
  }
  return { name: ds.name, count: ds.count, batches: batches() };
}

/**
 * A detector's sample: `limit` photos (seeded subset) of a COCO-format set's test split (a COCO JSON, a folder
 * with test.json) or of an image folder, preprocessed as `mnv2 detect` does.
 */
export async function detectionSample(source: string, opts: { resolution: number; limit: number; seed: number; batch: number }): Promise<Sample> {
  const all = detectorImages(await calibrationFiles(source, 'test'), opts.resolution, source);
  const images = opts.limit > 0 ? all.subset(opts.limit, opts.seed) : all;
  return { name: images.name, count: images.count, batches: images.batches(opts.batch) };
}
