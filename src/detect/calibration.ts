/**
 * Calibration images of a detector's int8 quantization (`mnv2 quantize` of an SSDLite model): the photos of a
 * COCO-format split, or of a plain image folder, each preprocessed exactly as `mnv2 detect` preprocesses it
 * (direct resize to the model resolution, [-1, 1]: detectorPreset). Decoded batch by batch, so a large set
 * costs no more memory than one batch.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { loadImages } from '../data/preprocess.js';
import type { CalibrationImages } from '../quant/calibrate.js';
import { fail } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { loadCocoDetection } from './dataset.js';
import { detectorPreset } from './ssdlite-detector.js';

/** File extensions taken from an image folder (what sharp decodes). */
const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif']);

/**
 * The image files of `source`: a COCO JSON (its images, relative to its folder), a folder holding `<split>.json`
 * (that split), or a folder of images (its image files, sorted by name; subfolders are not read).
 */
export async function calibrationFiles(source: string, split = 'train'): Promise<string[]> {
  if (!existsSync(source)) fail(source, 'no such file or folder (calibration images: a COCO JSON, a folder with train.json, or a folder of images)');
  let json: string | null = source;
  if (statSync(source).isDirectory()) json = existsSync(join(source, `${split}.json`)) ? join(source, `${split}.json`) : null;
  if (json) return (await loadCocoDetection(json, dirname(json))).images.map((im) => im.file);
  const files = readdirSync(source).filter((f) => IMAGE_EXTENSIONS.has(extname(f).toLowerCase())).sort().map((f) => join(source, f));
  if (files.length === 0) fail(source, `no images (${[...IMAGE_EXTENSIONS].join(', ')}) and no ${split}.json`);
  return files;
}

/** Image files as calibration images of a detector of input size `resolution`, named `name`. */
export function detectorImages(files: readonly string[], resolution: number, name: string): CalibrationImages {
  const preset = detectorPreset(resolution);
  return {
    name,
    count: files.length,
    shape: [3, resolution, resolution],
    subset(n, seed) {
      if (n >= files.length) return this;
      const idx = new Rng(seed).shuffle(files.map((_, i) => i)).slice(0, n).sort((a, b) => a - b);
      return detectorImages(idx.map((i) => files[i]!), resolution, `${name}[${n}]`);
    },
    async *batches(batch) {
      for (let start = 0; start < files.length; start += batch) {
        const chunk = files.slice(start, start + batch);
        yield { input: await loadImages(chunk, preset), size: chunk.length };
      }
    },
  };
}
