/**
 * Data augmentation, deterministic given an Rng.
 *
 * - The seed recipe (32×32 datasets): torchvision RandomCrop(32, padding=4) then RandomHorizontalFlip(0.5), applied
 *   to the uint8 image before ToTensor/Normalize, fused with normalization into the NCHW float32 batch. The crop's
 *   padding is raw pixel 0, i.e. (0 - mean) / std after normalization.
 * - RandomResizedCrop (ImageNet-style image folders): torchvision's parameter sampling (10 attempts, centre-crop
 *   fallback) and a bilinear resize (half-pixel centres, no antialiasing) on uint8 HWC images.
 */
import type { Rng } from '../util/rng.js';
import { toModelInput, writeBatch, type Dataset, type InputConvention, type Placement } from './dataset.js';

/**
 * 'seed': RandomCrop(pad 4) + flip; 'rrc': RandomResizedCrop(scale 0.08-1) + flip, for image folders; 'canvas':
 * garments at a random size and position on a frame (canvas.ts; the input convention has the frame); 'none'.
 */
export type AugmentKind = 'seed' | 'rrc' | 'canvas' | 'none';
export const AUGMENT_KINDS: readonly AugmentKind[] = ['seed', 'rrc', 'canvas', 'none'];

export interface SeedAugmentOptions {
  /** RandomCrop padding on each side (default 4). */
  padding?: number;
  /** RandomHorizontalFlip with p = 0.5 (default true). */
  flip?: boolean;
}

/** A crop offset in [-padding, padding] per axis and a flip (the seed's RandomCrop + RandomHorizontalFlip). */
export type CropFlip = Placement;

/**
 * Draws one image's crop/flip, in torchvision's order: i = randint(0, 2P+1) (top), j = randint(0, 2P+1) (left),
 * then flip if uniform() < 0.5.
 */
export function sampleCropFlip(rng: Rng, padding = 4, flip = true): CropFlip {
  const span = 2 * padding + 1;
  const i = rng.int(span);
  const j = rng.int(span);
  const f = flip ? rng.uniform() < 0.5 : false;
  return { dy: i - padding, dx: j - padding, flip: f };
}

/**
 * Writes the seed-augmented, normalized NCHW float32 batch of images `indices` into `out`.
 * Returns the filled view of `out`. Consumes 3 random numbers per image (2 without flip), in image order.
 */
export function seedAugmentBatch(
  ds: Dataset, indices: ArrayLike<number>, out: Float32Array, conv: InputConvention, rng: Rng, opts: SeedAugmentOptions = {},
): Float32Array {
  const padding = opts.padding ?? 4;
  const flip = opts.flip ?? true;
  if (!Number.isInteger(padding) || padding < 0) throw new Error(`seedAugmentBatch: padding must be an integer ≥ 0, got ${padding}`);
  return writeBatch(ds, indices, out, conv, 'seedAugmentBatch', () => sampleCropFlip(rng, padding, flip));
}

/** Horizontal flip of a uint8 HWC image (new array). */
export function hflipHwc(src: Uint8Array, h: number, w: number, c: number): Uint8Array {
  const out = new Uint8Array(src.length);
  for (let y = 0; y < h; y++) {
    const row = y * w * c;
    for (let x = 0; x < w; x++) {
      const s = row + x * c;
      const d = row + (w - 1 - x) * c;
      for (let k = 0; k < c; k++) out[d + k] = src[s + k]!;
    }
  }
  return out;
}

export interface CropBox {
  top: number;
  left: number;
  height: number;
  width: number;
}

/** Python's round(): half to even. */
function pyRound(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * torchvision RandomResizedCrop.get_params: up to 10 attempts of area ∈ scale·H·W, log-uniform aspect ratio;
 * falls back to a centre crop of the whole image clamped to the ratio range.
 */
export function randomResizedCropParams(
  rng: Rng, height: number, width: number,
  scale: readonly [number, number] = [0.08, 1], ratio: readonly [number, number] = [3 / 4, 4 / 3],
): CropBox {
  const area = height * width;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * (scale[0] + (scale[1] - scale[0]) * rng.uniform());
    const aspect = Math.exp(logLo + (logHi - logLo) * rng.uniform());
    const w = pyRound(Math.sqrt(targetArea * aspect));
    const h = pyRound(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      return { top, left, height: h, width: w };
    }
  }
  const inRatio = width / height;
  let w: number;
  let h: number;
  if (inRatio < Math.min(ratio[0], ratio[1])) {
    w = width;
    h = pyRound(w / Math.min(ratio[0], ratio[1]));
  } else if (inRatio > Math.max(ratio[0], ratio[1])) {
    h = height;
    w = pyRound(h * Math.max(ratio[0], ratio[1]));
  } else {
    w = width;
    h = height;
  }
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), height: h, width: w };
}

/** Source pixels and weight of output pixel `o` (half-pixel centres, clamped to [0, extent)). */
function bilinearTap(o: number, scale: number, extent: number): [number, number, number] {
  const f = Math.max(0, (o + 0.5) * scale - 0.5);
  const i0 = Math.min(Math.floor(f), extent - 1);
  return [i0, Math.min(i0 + 1, extent - 1), f - i0];
}

/**
 * Bilinear resize of the box `crop` of a uint8 HWC image to outH × outW (half-pixel centres, like
 * PIL/torchvision without antialiasing, align_corners=false). Optionally flips horizontally.
 */
export function resizeBilinearHwc(
  src: Uint8Array, h: number, w: number, c: number, crop: CropBox, outH: number, outW: number, flip = false,
): Uint8Array {
  if (crop.top < 0 || crop.left < 0 || crop.height <= 0 || crop.width <= 0 || crop.top + crop.height > h || crop.left + crop.width > w) {
    throw new RangeError(`resizeBilinearHwc: crop ${JSON.stringify(crop)} outside ${h}×${w}`);
  }
  const out = new Uint8Array(outH * outW * c);
  const sy = crop.height / outH;
  const sx = crop.width / outW;
  // Precompute horizontal taps.
  const x0s = new Int32Array(outW);
  const x1s = new Int32Array(outW);
  const wxs = new Float32Array(outW);
  for (let x = 0; x < outW; x++) {
    const [x0, x1, wx] = bilinearTap(x, sx, crop.width);
    const ox = flip ? outW - 1 - x : x;
    x0s[ox] = (crop.left + x0) * c;
    x1s[ox] = (crop.left + x1) * c;
    wxs[ox] = wx;
  }
  for (let y = 0; y < outH; y++) {
    const [y0, y1, wy] = bilinearTap(y, sy, crop.height);
    const r0 = (crop.top + y0) * w * c;
    const r1 = (crop.top + y1) * w * c;
    const orow = y * outW * c;
    for (let x = 0; x < outW; x++) {
      const a = x0s[x]!;
      const b = x1s[x]!;
      const wx = wxs[x]!;
      for (let k = 0; k < c; k++) {
        const top = src[r0 + a + k]! + (src[r0 + b + k]! - src[r0 + a + k]!) * wx;
        const bot = src[r1 + a + k]! + (src[r1 + b + k]! - src[r1 + a + k]!) * wx;
        const v = top + (bot - top) * wy;
        out[orow + x * c + k] = v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
      }
    }
  }
  return out;
}

export interface RandomResizedCropOptions {
  scale?: readonly [number, number];
  ratio?: readonly [number, number];
  /** RandomHorizontalFlip(0.5) after the crop (default true). */
  flip?: boolean;
}

/**
 * RandomResizedCrop(size) (+ RandomHorizontalFlip) of a uint8 HWC image; returns a size×size×c HWC image.
 * Draws the crop first, then the flip (uniform() < 0.5), as torchvision's Compose does.
 */
export function randomResizedCrop(
  src: Uint8Array, h: number, w: number, c: number, size: number, rng: Rng, opts: RandomResizedCropOptions = {},
): Uint8Array {
  if (src.length !== h * w * c) throw new Error(`randomResizedCrop: image has ${src.length} bytes, expected ${h}×${w}×${c}`);
  const box = randomResizedCropParams(rng, h, w, opts.scale, opts.ratio);
  const flip = (opts.flip ?? true) && rng.uniform() < 0.5;
  return resizeBilinearHwc(src, h, w, c, box, size, size, flip);
}

/**
 * RandomResizedCrop + flip on every image of a batch, then normalization. The crop is taken from the stored
 * image (image folders are decoded at the model resolution) and resized back to it, bilinearly.
 */
export function randomResizedCropBatch(ds: Dataset, indices: ArrayLike<number>, out: Float32Array, conv: InputConvention, rng: Rng): Float32Array {
  const { channels: c, height: h, width: w } = ds;
  const plane = h * w;
  const images = new Uint8Array(indices.length * c * plane);
  const hwc = new Uint8Array(c * plane);
  for (let n = 0; n < indices.length; n++) {
    const idx = indices[n]!;
    if (!(idx >= 0 && idx < ds.count)) throw new RangeError(`randomResizedCropBatch: index ${idx} out of range [0, ${ds.count})`);
    const src = ds.images.subarray(idx * c * plane, (idx + 1) * c * plane);
    for (let ch = 0; ch < c; ch++) for (let i = 0; i < plane; i++) hwc[i * c + ch] = src[ch * plane + i]!;
    const box = randomResizedCropParams(rng, h, w);
    const crop = resizeBilinearHwc(hwc, h, w, c, box, h, w, rng.uniform() < 0.5);
    const dst = images.subarray(n * c * plane, (n + 1) * c * plane);
    for (let ch = 0; ch < c; ch++) for (let i = 0; i < plane; i++) dst[ch * plane + i] = crop[i * c + ch]!;
  }
  const batch: Dataset = { ...ds, count: indices.length, images };
  return toModelInput(batch, Int32Array.from({ length: indices.length }, (_, i) => i), out, conv);
}
