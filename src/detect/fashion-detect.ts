/**
 * `fashion-detect`: a deterministic detection set made from Fashion-MNIST. Each canvas (black, greyscale) gets
 * minObjects..maxObjects garments, each resized by a random factor (bilinear, half-pixel centers) and placed at a
 * random position wholly inside the canvas; a placement whose tight box overlaps an earlier one by IoU >
 * maxOverlap is redrawn (up to 50 tries, then the canvas keeps fewer garments). Overlapping garments combine
 * by max (they are bright on black). Boxes are tight: the extent of the resized garment's non-zero pixels.
 * Splits: train from Fashion-MNIST train images 0..49,999, val from 50,000..59,999 (other garments), test from
 * the test set; each split has its own generator seeded from (seed, split), so its content does not depend
 * on the other splits' sizes. Written as COCO JSON + PNG (`<out>/<split>.json`, `<out>/<split>/NNNNNN.png`),
 * which loadCocoDetection reads. Same options and Fashion-MNIST files → byte-identical output.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { FASHION_DETECT_PLACEMENT } from '../data/canvas.js';
import type { Dataset } from '../data/dataset.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../data/idx.js';
import { Rng } from '../util/rng.js';
import { iou } from './boxes.js';

export interface FashionDetectOptions {
  /** Images per split. Defaults 8000 / 1000 / 1000. */
  train: number;
  val: number;
  test: number;
  /** Canvas side in pixels. Default 96. */
  canvas: number;
  minObjects: number;
  maxObjects: number;
  /** Resize factor of the 28×28 garment, uniform in [minScale, maxScale]. Defaults 0.75 and 2 (21..56 px). */
  minScale: number;
  maxScale: number;
  /** Largest IoU allowed between two garments' boxes on a canvas. Default 0.3. */
  maxOverlap: number;
  seed: number;
}

export const FASHION_DETECT_DEFAULTS: Readonly<FashionDetectOptions> = Object.freeze({
  train: 8000, val: 1000, test: 1000, ...FASHION_DETECT_PLACEMENT, minObjects: 1, maxObjects: 4, maxOverlap: 0.3, seed: 0,
});

function validate(o: FashionDetectOptions): void {
  const int = (k: keyof FashionDetectOptions, min: number): void => {
    if (!Number.isInteger(o[k]) || o[k] < min) throw new Error(`fashion-detect: ${k} must be an integer ≥ ${min}, got ${o[k]}`);
  };
  int('train', 0);
  int('val', 0);
  int('test', 0);
  int('minObjects', 1);
  int('maxObjects', o.minObjects);
  int('seed', 0);
  if (!(o.minScale > 0 && o.maxScale >= o.minScale)) throw new Error(`fashion-detect: need 0 < minScale ≤ maxScale, got ${o.minScale}, ${o.maxScale}`);
  int('canvas', Math.ceil(28 * o.maxScale));
  if (!(o.maxOverlap >= 0 && o.maxOverlap <= 1)) throw new Error(`fashion-detect: maxOverlap must be in [0, 1], got ${o.maxOverlap}`);
}

/** Bilinear resize of a 28×28 garment to s×s (half-pixel centers, edge clamped: torch's align_corners=False). */
function resizeGarment(src: Uint8Array, s: number): Uint8Array {
  const out = new Uint8Array(s * s);
  const scale = 28 / s;
  const at = (y: number, x: number): number => src[Math.min(27, Math.max(0, y)) * 28 + Math.min(27, Math.max(0, x))]!;
  for (let oy = 0; oy < s; oy++) {
    const fy = Math.max(0, (oy + 0.5) * scale - 0.5);
    const y0 = Math.floor(fy);
    const wy = fy - y0;
    for (let ox = 0; ox < s; ox++) {
      const fx = Math.max(0, (ox + 0.5) * scale - 0.5);
      const x0 = Math.floor(fx);
      const wx = fx - x0;
      const v = (1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x0 + 1)) + wy * ((1 - wx) * at(y0 + 1, x0) + wx * at(y0 + 1, x0 + 1));
      out[oy * s + ox] = Math.round(v);
    }
  }
  return out;
}

/** Extent of the non-zero pixels of an s×s image: [x1, y1, x2, y2] (pixel edges), or null if all zero. */
function tightBox(img: Uint8Array, s: number): [number, number, number, number] | null {
  let [x1, y1, x2, y2] = [s, s, 0, 0];
  for (let y = 0; y < s; y++) {
    for (let x = 0; x < s; x++) {
      if (img[y * s + x] === 0) continue;
      x1 = Math.min(x1, x);
      y1 = Math.min(y1, y);
      x2 = Math.max(x2, x + 1);
      y2 = Math.max(y2, y + 1);
    }
  }
  return x2 > x1 ? [x1, y1, x2, y2] : null;
}

interface Placed {
  box: [number, number, number, number];
  label: number;
}

/** One canvas: its pixels and placed garments. */
function makeCanvas(rng: Rng, src: Dataset, from: number, count: number, o: FashionDetectOptions): { pixels: Uint8Array; objects: Placed[] } {
  const S = o.canvas;
  const pixels = new Uint8Array(S * S);
  const objects: Placed[] = [];
  const n = o.minObjects + rng.int(o.maxObjects - o.minObjects + 1);
  for (let k = 0; k < n; k++) {
    for (let attempt = 0; attempt < 50; attempt++) {
      const idx = from + rng.int(count);
      const s = Math.round(28 * (o.minScale + rng.uniform() * (o.maxScale - o.minScale)));
      const g = resizeGarment(src.images.subarray(idx * 784, (idx + 1) * 784), s);
      const t = tightBox(g, s);
      const x0 = rng.int(S - s + 1);
      const y0 = rng.int(S - s + 1);
      if (!t) continue;
      const box: [number, number, number, number] = [t[0] + x0, t[1] + y0, t[2] + x0, t[3] + y0];
      if (objects.some((p) => iou(p.box, 0, box, 0) > o.maxOverlap)) continue;
      for (let y = 0; y < s; y++) {
        for (let x = 0; x < s; x++) {
          const p = (y + y0) * S + x + x0;
          pixels[p] = Math.max(pixels[p]!, g[y * s + x]!);
        }
      }
      objects.push({ box, label: src.labels[idx]! });
      break;
    }
  }
  return { pixels, objects };
}

const SPLITS = [
  { name: 'train', source: 'train', from: 0, count: 50000 },
  { name: 'val', source: 'train', from: 50000, count: 10000 },
  { name: 'test', source: 'test', from: 0, count: 10000 },
] as const;

export interface FashionDetectResult {
  dir: string;
  splits: { name: string; images: number; boxes: number; json: string }[];
}

/**
 * Writes the set into `out` (which must not exist, or be empty, unless force). Everything is written into a
 * sibling temporary folder first and renamed into place, so an interrupted run leaves no partial set.
 */
export async function makeFashionDetect(
  out: string,
  opts: Partial<FashionDetectOptions> = {},
  io: { fashionMnistDir?: string; force?: boolean; onProgress?: (split: string, done: number, total: number) => void } = {},
): Promise<FashionDetectResult> {
  const o: FashionDetectOptions = { ...FASHION_DETECT_DEFAULTS, ...opts };
  validate(o);
  const { default: sharp } = await import('sharp'); // here, not at import: the CLI reads the defaults at every start-up
  const dir = resolve(out);
  if (existsSync(dir) && readdirSync(dir).length > 0 && !io.force) throw new Error(`${dir} exists and is not empty (--force replaces it)`);
  const sources = {
    train: o.train + o.val > 0 ? loadFashionMnist(io.fashionMnistDir ?? FASHION_MNIST_DIR, 'train') : null,
    test: o.test > 0 ? loadFashionMnist(io.fashionMnistDir ?? FASHION_MNIST_DIR, 'test') : null,
  };
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(dirname(dir), { recursive: true });
  const categories = sources.train?.classes ?? sources.test?.classes ?? [];
  const result: FashionDetectResult = { dir, splits: [] };
  try {
    for (const [si, sp] of SPLITS.entries()) {
      const total = o[sp.name];
      const src = sources[sp.source];
      mkdirSync(join(tmp, sp.name), { recursive: true });
      const rng = new Rng((o.seed * 3 + si) >>> 0);
      const images: object[] = [];
      const annotations: object[] = [];
      for (let i = 0; i < total; i++) {
        const { pixels, objects } = makeCanvas(rng, src!, sp.from, sp.count, o);
        const fileName = `${sp.name}/${String(i + 1).padStart(6, '0')}.png`;
        const png = await sharp(pixels, { raw: { width: o.canvas, height: o.canvas, channels: 1 } }).toColourspace('b-w').png({ compressionLevel: 9 }).toBuffer();
        writeFileSync(join(tmp, fileName), png);
        images.push({ id: i + 1, file_name: fileName, width: o.canvas, height: o.canvas });
        for (const ob of objects) {
          const [x1, y1, x2, y2] = ob.box;
          annotations.push({ id: annotations.length + 1, image_id: i + 1, category_id: ob.label + 1, bbox: [x1, y1, x2 - x1, y2 - y1], area: (x2 - x1) * (y2 - y1), iscrowd: 0 });
        }
        io.onProgress?.(sp.name, i + 1, total);
      }
      const json = `${sp.name}.json`;
      const coco = {
        info: { description: 'fashion-detect: Fashion-MNIST garments on canvases (mnv2 data make fashion-detect)', options: o, split: sp.name },
        images,
        annotations,
        categories: categories.map((name, c) => ({ id: c + 1, name })),
      };
      writeFileSync(join(tmp, json), `${JSON.stringify(coco)}\n`);
      result.splits.push({ name: sp.name, images: total, boxes: annotations.length, json: join(dir, json) });
    }
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return result;
}
