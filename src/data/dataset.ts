/**
 * In-memory image classification datasets and the conversion to normalized NCHW float32 model input.
 *
 * Images are stored as uint8, channel-major (CHW) per image, images contiguous. The conversion to model input is
 * described by an InputConvention: zero padding (raw pixel value 0, applied before normalization), the number of
 * model input channels (a 1-channel dataset is replicated) and the per-channel mean/std of torchvision's
 * ToTensor() + Normalize(mean, std), i.e. x = (v / 255 - mean) / std.
 */
import type { CanvasSpec } from './canvas.js';

export interface Dataset {
  name: string;
  count: number;
  channels: number;
  height: number;
  width: number;
  /** uint8 CHW per image, images contiguous: image i starts at i * channels * height * width. */
  images: Uint8Array;
  labels: Uint8Array;
  classes: readonly string[];
}

export interface NormSpec {
  /** One value per channel, or a single value used for every channel. */
  readonly mean: readonly number[];
  readonly std: readonly number[];
}

/** How a dataset's images are fed to the model. */
export interface InputConvention extends NormSpec {
  /** Model input channels: equal to the dataset's, or 3 for a 1-channel dataset (replicated). */
  readonly channels: number;
  /** Zero padding (raw pixel 0, before normalization) on each side: 28×28 + 2·2 → 32×32. */
  readonly pad: number;
  /** Set: each image is drawn at a size and position on the padded frame instead of at its centre (canvas.ts). */
  readonly canvas?: CanvasSpec;
}

/** Class names (the lists live in labels.ts). */
export { FASHION_MNIST_LABELS as FASHION_MNIST_CLASSES, CIFAR10_LABELS as CIFAR10_CLASSES } from './labels.js';

export const FASHION_MNIST_NORM: NormSpec = Object.freeze({ mean: Object.freeze([0.286]), std: Object.freeze([0.353]) });
export const CIFAR10_NORM: NormSpec = Object.freeze({
  mean: Object.freeze([0.4914, 0.4822, 0.4465]),
  std: Object.freeze([0.2023, 0.1994, 0.201]),
});

/** The project's convention for the 3-channel 32×32 seed model: pad 28→32 with 0, replicate to 3 channels. */
export const FASHION_MNIST_INPUT: InputConvention = Object.freeze({ channels: 3, pad: 2, ...FASHION_MNIST_NORM });
export const CIFAR10_INPUT: InputConvention = Object.freeze({ channels: 3, pad: 0, ...CIFAR10_NORM });

/** The default input convention for a dataset, by name (falls back to its own channels and no padding, mean 0.5 std 0.5). */
export function defaultInputConvention(ds: Pick<Dataset, 'name' | 'channels'>): InputConvention {
  const n = ds.name.toLowerCase();
  if (n.startsWith('fashion-mnist')) return FASHION_MNIST_INPUT;
  if (n.startsWith('cifar10') || n.startsWith('cifar-10')) return CIFAR10_INPUT;
  return { channels: ds.channels, pad: 0, mean: [0.5], std: [0.5] };
}

export interface Shape3 {
  channels: number;
  height: number;
  width: number;
}

/** Per-image model input shape (C, H, W) for a dataset under a convention; validates the convention. */
export function inputShape(ds: Pick<Dataset, 'channels' | 'height' | 'width'>, conv: InputConvention): Shape3 {
  if (!Number.isInteger(conv.pad) || conv.pad < 0) throw new Error(`input convention: pad must be an integer ≥ 0, got ${conv.pad}`);
  if (conv.channels !== ds.channels && ds.channels !== 1) {
    throw new Error(`input convention: cannot map ${ds.channels} dataset channels to ${conv.channels} input channels`);
  }
  for (const [what, v] of [['mean', conv.mean], ['std', conv.std]] as const) {
    if (v.length !== 1 && v.length !== conv.channels) {
      throw new Error(`input convention: ${what} has ${v.length} values, expected 1 or ${conv.channels}`);
    }
  }
  if (conv.std.some((s) => !(s > 0))) throw new Error('input convention: std values must be > 0');
  return { channels: conv.channels, height: ds.height + 2 * conv.pad, width: ds.width + 2 * conv.pad };
}

/** For each input channel, a 256-entry table v → (v / 255 - mean) / std (float32, as torchvision computes it). */
export function normalizationTables(conv: NormSpec & { channels: number }): Float32Array[] {
  const tables: Float32Array[] = [];
  for (let c = 0; c < conv.channels; c++) {
    const mean = conv.mean.length === 1 ? conv.mean[0]! : conv.mean[c]!;
    const std = conv.std.length === 1 ? conv.std[0]! : conv.std[c]!;
    const prev = c > 0 ? (conv.mean.length === 1 ? conv.mean[0]! : conv.mean[c - 1]!) : NaN;
    const prevStd = c > 0 ? (conv.std.length === 1 ? conv.std[0]! : conv.std[c - 1]!) : NaN;
    if (mean === prev && std === prevStd) {
      tables.push(tables[c - 1]!); // same table object: lets writeImage copy replicated channels
      continue;
    }
    const f32 = new Float32Array(3);
    f32[1] = mean;
    f32[2] = std;
    const t = new Float32Array(256);
    for (let v = 0; v < 256; v++) {
      f32[0] = v / 255; // ToTensor: float32 division
      f32[0] = f32[0]! - f32[1]!;
      t[v] = f32[0]! / f32[2]!;
    }
    tables.push(t);
  }
  return tables;
}

/** The normalized value of the padding (raw 0) in each input channel: (0 - mean) / std. */
export function padValues(conv: InputConvention): number[] {
  return normalizationTables(conv).map((t) => t[0]!);
}

/**
 * Writes one image into `out` at `outOff` as normalized CHW float32 of shape (oc, sh + 2·pad, sw + 2·pad), reading
 * the padded canvas shifted by (dy, dx) (out-of-canvas pixels are padding) and optionally flipped horizontally
 * after the shift: out(y, x) = canvas(y + dy, (flip ? W - 1 - x : x) + dx). This is torchvision's
 * RandomCrop(padding) followed by RandomHorizontalFlip, with the crop offset (dy + P, dx + P).
 */
export function writeImage(
  src: Uint8Array, srcOff: number, sc: number, sh: number, sw: number,
  out: Float32Array, outOff: number, oc: number, pad: number,
  tables: readonly Float32Array[], dy = 0, dx = 0, flip = false,
): void {
  const oh = sh + 2 * pad;
  const ow = sw + 2 * pad;
  const plane = sh * sw;
  const planeOut = oh * ow;
  for (let c = 0; c < oc; c++) {
    const lut = tables[c]!;
    if (c > 0 && sc === 1 && lut === tables[0]) {
      // replicated single channel with the same normalization: copy channel 0
      out.copyWithin(outOff + c * planeOut, outOff, outOff + planeOut);
      continue;
    }
    const padv = lut[0]!;
    const sbase = srcOff + (sc === 1 ? 0 : c) * plane;
    const obase = outOff + c * planeOut;
    for (let y = 0; y < oh; y++) {
      const orow = obase + y * ow;
      const sy = y + dy - pad;
      if (sy < 0 || sy >= sh) {
        out.fill(padv, orow, orow + ow);
        continue;
      }
      const srow = sbase + sy * sw;
      if (!flip) {
        const off = dx - pad; // sx = x + off
        const x0 = Math.max(0, -off);
        const x1 = Math.min(ow, sw - off);
        if (x0 > 0) out.fill(padv, orow, orow + x0);
        for (let x = x0; x < x1; x++) out[orow + x] = lut[src[srow + x + off]!]!;
        if (x1 < ow) out.fill(padv, orow + Math.max(x1, 0), orow + ow);
      } else {
        const k = ow - 1 + dx - pad; // sx = k - x
        const x0 = Math.max(0, k - sw + 1);
        const x1 = Math.min(ow, k + 1);
        if (x0 > 0) out.fill(padv, orow, orow + Math.min(x0, ow));
        for (let x = x0; x < x1; x++) out[orow + x] = lut[src[srow + k - x]!]!;
        if (x1 < ow) out.fill(padv, orow + Math.max(x1, 0), orow + ow);
      }
    }
  }
}

/**
 * Writes the images `indices` of `ds` into `out` as a normalized NCHW float32 batch (no augmentation).
 * `out` must hold at least indices.length · C · H · W values (see inputShape); returns the filled view.
 */
export function toModelInput(ds: Dataset, indices: ArrayLike<number>, out: Float32Array, conv: InputConvention): Float32Array {
  return writeBatch(ds, indices, out, conv, 'toModelInput');
}

/** Where image n is taken from: crop offsets (within the padded image) and a horizontal flip. */
export interface Placement {
  dy: number;
  dx: number;
  flip: boolean;
}

/**
 * Writes images `indices` as a normalized NCHW batch into `out` (returns the filled view), each placed by
 * `place` (augmentation) or unchanged. `who` names the caller in errors.
 */
export function writeBatch(
  ds: Dataset, indices: ArrayLike<number>, out: Float32Array, conv: InputConvention, who: string, place?: () => Placement,
): Float32Array {
  const shape = inputShape(ds, conv);
  const per = shape.channels * shape.height * shape.width;
  const need = indices.length * per;
  if (out.length < need) throw new Error(`${who}: output has ${out.length} values, batch needs ${need}`);
  const tables = normalizationTables(conv);
  const imgSize = ds.channels * ds.height * ds.width;
  for (let i = 0; i < indices.length; i++) {
    const idx = indices[i]!;
    if (!(idx >= 0 && idx < ds.count)) throw new RangeError(`${who}: index ${idx} out of range [0, ${ds.count})`);
    const p = place?.();
    writeImage(ds.images, idx * imgSize, ds.channels, ds.height, ds.width, out, i * per, shape.channels, conv.pad, tables, p?.dy, p?.dx, p?.flip);
  }
  return out.subarray(0, need);
}

/** Copies labels of `indices` into an Int32Array (the engine's label type). */
export function gatherLabels(ds: Dataset, indices: ArrayLike<number>, out = new Int32Array(indices.length)): Int32Array {
  for (let i = 0; i < indices.length; i++) out[i] = ds.labels[indices[i]!]!;
  return out;
}

/** Normalizes one uint8 HWC image (e.g. decoded by sharp) into CHW float32 at out[outOff...]. */
export function normalizeHwc(src: Uint8Array, h: number, w: number, c: number, out: Float32Array, outOff: number, norm: NormSpec): void {
  const tables = normalizationTables({ ...norm, channels: c });
  const plane = h * w;
  for (let ch = 0; ch < c; ch++) {
    const lut = tables[ch]!;
    const o = outOff + ch * plane;
    for (let p = 0, s = ch; p < plane; p++, s += c) out[o + p] = lut[src[s]!]!;
  }
}

/** A Uint8Array backed by a SharedArrayBuffer, so a worker thread can read it without a copy. */
export function sharedBytes(n: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(n));
}

/** A view of a dataset restricted to some images (copies them). */
export function subset(ds: Dataset, indices: ArrayLike<number>, name = `${ds.name}[subset]`): Dataset {
  const imgSize = ds.channels * ds.height * ds.width;
  const images = sharedBytes(indices.length * imgSize);
  const labels = new Uint8Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const idx = indices[i]!;
    if (!(idx >= 0 && idx < ds.count)) throw new RangeError(`subset: index ${idx} out of range [0, ${ds.count})`);
    images.set(ds.images.subarray(idx * imgSize, (idx + 1) * imgSize), i * imgSize);
    labels[i] = ds.labels[idx]!;
  }
  return { ...ds, name, count: indices.length, images, labels };
}

/** Checks a Dataset's fields against each other (sizes, label range). Throws a descriptive error. */
export function validateDataset(ds: Dataset): void {
  const imgSize = ds.channels * ds.height * ds.width;
  if (ds.images.length !== ds.count * imgSize) {
    throw new Error(`${ds.name}: images has ${ds.images.length} bytes, expected ${ds.count}×${ds.channels}×${ds.height}×${ds.width}`);
  }
  if (ds.labels.length !== ds.count) throw new Error(`${ds.name}: ${ds.labels.length} labels for ${ds.count} images`);
  const k = ds.classes.length;
  for (let i = 0; i < ds.count; i++) {
    if (ds.labels[i]! >= k) throw new Error(`${ds.name}: label ${ds.labels[i]} at index ${i} is not < ${k}`);
  }
}
