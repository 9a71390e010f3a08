/**
 * Detection datasets as model inputs for training and evaluation: a COCO-format split (the JSON, or a folder
 * holding `<split>.json` as `mnv2 data make fashion-detect` writes it) decoded once into memory (8-bit, as the
 * files hold it; greyscale PNGs become 3 channels), then per image either as `mnv2 detect` sees it (eval: the
 * image resized to the model resolution without a crop or letterbox, pixels to [-1, 1]: detectorPreset) or
 * augmented first (train: torchvision's SSD policy, src/detect/augment.ts, then the same resize). Targets are
 * the boxes normalized to [0, 1] by the (augmented) image size — the TF OD API's convention, the anchors' — with
 * labels 1..C (0 is background).
 *
 * Exact resume: the order of an epoch depends only on (seed, epoch) and each sample's augmentation only on
 * (seed, epoch, position in the epoch), so any batch can be rebuilt on its own.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { loadImageSharp } from '../data/preprocess.js';
import { deriveSeed, epochOrder } from '../data/loader.js';
import { fail } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import type { BatchSource, TaskBatch } from '../train/epochs.js';
import { ssdAugment, type ChwImage, type SsdAugmentOptions } from './augment.js';
import { formatSkips, loadCocoDetection, type DetectionDataset } from './dataset.js';
import type { DetectionTarget } from './losses.js';
import { detectorPreset } from './ssdlite-detector.js';

/** `dataset` is a COCO JSON, or a folder holding `<split>.json`. */
export function cocoSplitFile(dataset: string, split: string): string {
  if (existsSync(dataset) && statSync(dataset).isDirectory()) {
    const f = join(dataset, `${split}.json`);
    if (!existsSync(f)) fail(dataset, `a folder without ${split}.json (give the COCO JSON itself, or another split)`);
    return f;
  }
  if (!existsSync(dataset)) fail(dataset, 'no such file (a detection dataset is a COCO JSON or a folder with <split>.json)');
  return dataset;
}

/** One image's pixels as the file holds them: 8-bit, height × width × channels (1 or 3). */
interface Pixels {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

/** A split decoded into memory. */
export interface DetectionSplit {
  dataset: DetectionDataset;
  pixels: Pixels[];
}

/**
 * Decodes every image of a dataset (alpha dropped; 1 or 3 channels kept as they are). An image that cannot be
 * decoded, or whose size is not its annotation's, is an error naming the file.
 */
export async function decodeSplit(dataset: DetectionDataset, onProgress?: (done: number, total: number) => void): Promise<DetectionSplit> {
  if (dataset.images.length === 0) fail(dataset.name, 'no images to train or evaluate on');
  const pixels: Pixels[] = [];
  for (const [i, im] of dataset.images.entries()) {
    let r;
    try {
      r = await sharp(im.file, { failOn: 'error' }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    } catch (e) {
      fail(im.file, `cannot decode the image (${(e as Error).message})`);
    }
    const { width, height, channels } = r.info;
    if (width !== im.width || height !== im.height) fail(im.file, `the image is ${width}×${height}, its annotation (image id ${im.id}) says ${im.width}×${im.height}`);
    if (channels !== 1 && channels !== 3) fail(im.file, `${channels} colour channels (expected 1 or 3)`);
    pixels.push({ data: new Uint8Array(r.data.buffer, r.data.byteOffset, r.data.length), width, height, channels });
    onProgress?.(i + 1, dataset.images.length);
  }
  return { dataset, pixels };
}

/** A fixed random subset of n images in dataset order (all when n is 0). */
export function limitImages(ds: DetectionDataset, n: number, seed: number): DetectionDataset {
  if (n === 0 || n >= ds.images.length) return ds;
  const idx = new Rng(seed).shuffle(ds.images.map((_, i) => i)).slice(0, n).sort((a, b) => a - b);
  return { ...ds, images: idx.map((i) => ds.images[i]!) };
}

/**
 * Loads split `split` of a COCO-format dataset (images relative to the JSON's folder), picks the images to use
 * (`select`, e.g. a limitImages subset) and decodes them. Skipped or clipped annotations are reported by `log`.
 */
export async function openDetectionSplit(
  dataset: string, split: string, onProgress?: (done: number, total: number) => void, select: (ds: DetectionDataset) => DetectionDataset = (ds) => ds,
  log: (m: string) => void = (m) => console.error(m),
): Promise<DetectionSplit> {
  const file = cocoSplitFile(dataset, split);
  const ds = await loadCocoDetection(file, dirname(file));
  if (ds.skipped.total) log(`${file}: skipped or changed:\n${formatSkips(ds.skipped)}`);
  return decodeSplit(select(ds), onProgress);
}

/** Pixels → float CHW in [0, 1], 3 channels (grey replicated). */
function toChw(p: Pixels): ChwImage {
  const n = p.width * p.height;
  const data = new Float32Array(3 * n);
  for (let c = 0; c < 3; c++) {
    const sc = p.channels === 1 ? 0 : c;
    for (let i = 0; i < n; i++) data[c * n + i] = p.data[i * p.channels + sc]! / 255;
  }
  return { data, channels: 3, height: p.height, width: p.width };
}

/** Float CHW in [0, 1] → 8-bit HWC (rounded, clamped): what the resize of an image file starts from. */
function toPixels(img: ChwImage): Pixels {
  const n = img.width * img.height;
  const data = new Uint8Array(img.channels * n);
  for (let c = 0; c < img.channels; c++) {
    for (let i = 0; i < n; i++) data[i * img.channels + c] = Math.min(255, Math.max(0, Math.round(img.data[c * n + i]! * 255)));
  }
  return { data, width: img.width, height: img.height, channels: img.channels };
}

/** The model input [3, R, R] of 8-bit pixels, exactly as `mnv2 detect` preprocesses an image file. */
function modelInput(p: Pixels, resolution: number, source: string): Promise<Float32Array> {
  const raw = { width: p.width, height: p.height, channels: p.channels as 1 | 3 };
  return loadImageSharp(() => sharp(p.data, { raw }), detectorPreset(resolution), {}, source);
}

/** Pixel boxes [N, 4] → normalized by the image size. */
function normalize(boxes: Float32Array, width: number, height: number): Float32Array {
  return boxes.map((v, k) => v / (k % 2 === 0 ? width : height));
}

export interface DetectionSample {
  input: Float32Array;
  target: DetectionTarget;
}

/** Image `i` of a split as the model sees it, with its target; augmented when `augment` is given. */
export async function detectionSample(split: DetectionSplit, i: number, resolution: number, augment?: { rng: Rng; options?: SsdAugmentOptions }): Promise<DetectionSample> {
  const im = split.dataset.images[i]!;
  const px = split.pixels[i]!;
  const boxes = Float32Array.from(im.boxes.flatMap((b) => b.box));
  const labels = im.boxes.map((b) => b.label + 1);
  if (!augment) return { input: await modelInput(px, resolution, im.file), target: { boxes: normalize(boxes, px.width, px.height), labels } };
  const s = ssdAugment({ image: toChw(px), boxes, labels }, augment.rng, augment.options);
  const { width, height } = s.image;
  return { input: await modelInput(toPixels(s.image), resolution, im.file), target: { boxes: normalize(s.boxes, width, height), labels: s.labels } };
}

/** Samples `indices` of a split as one NCHW batch. */
async function batchOf(split: DetectionSplit, indices: ArrayLike<number>, resolution: number, rngOf?: (k: number) => Rng, options?: SsdAugmentOptions): Promise<{ input: Float32Array; target: DetectionTarget[] }> {
  const per = 3 * resolution * resolution;
  const input = new Float32Array(indices.length * per);
  const target: DetectionTarget[] = [];
  for (let k = 0; k < indices.length; k++) {
    const s = await detectionSample(split, indices[k]!, resolution, rngOf && { rng: rngOf(k), options });
    input.set(s.input, k * per);
    target.push(s.target);
  }
  return { input, target };
}

export interface DetectionBatchOptions {
  batchSize: number;
  resolution: number;
  seed: number;
  /** SSD augmentation (training); false: every image as `mnv2 detect` sees it. */
  augment: SsdAugmentOptions | false;
}

/**
 * The training batches of a split: shuffled per epoch, augmented per sample. A last batch of one image is
 * dropped (batch statistics of a single image at 1×1 feature maps are degenerate).
 */
export function detectionBatches(split: DetectionSplit, o: DetectionBatchOptions): BatchSource<readonly DetectionTarget[]> {
  const count = split.dataset.images.length;
  const batchesPerEpoch = count % o.batchSize === 1 ? Math.floor(count / o.batchSize) : Math.ceil(count / o.batchSize);
  if (batchesPerEpoch === 0) fail(split.dataset.name, `${count} image(s) make no training batch (at least 2 are needed)`);
  return {
    batchesPerEpoch,
    async *epoch(epoch, { startBatch }): AsyncIterable<TaskBatch<readonly DetectionTarget[]>> {
      const order = epochOrder({ count, shuffle: true, seed: o.seed }, epoch);
      for (let b = startBatch; b < batchesPerEpoch; b++) {
        const start = b * o.batchSize;
        const indices = order.subarray(start, Math.min(start + o.batchSize, count));
        const rngOf = o.augment === false ? undefined : (k: number) => new Rng(deriveSeed(o.seed, 0xa06, epoch, start + k));
        const { input, target } = await batchOf(split, indices, o.resolution, rngOf, o.augment || undefined);
        yield { index: b, size: indices.length, input, target };
      }
    },
    close: async () => {},
  };
}

/** Every image of a split in order, in batches of `batchSize`, as `mnv2 detect` sees them (evaluation). */
export async function* evalBatches(split: DetectionSplit, batchSize: number, resolution: number): AsyncIterable<{ start: number; size: number; input: Float32Array; target: DetectionTarget[] }> {
  const count = split.dataset.images.length;
  for (let start = 0; start < count; start += batchSize) {
    const indices = Array.from({ length: Math.min(batchSize, count - start) }, (_, k) => start + k);
    yield { start, size: indices.length, ...(await batchOf(split, indices, resolution)) };
  }
}
