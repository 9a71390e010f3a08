/**
 * Box-aware augmentation for SSD training, as torchvision's detection references (references/detection/
 * transforms.py, the `ssd` policy: RandomPhotometricDistort, RandomZoomOut, RandomIoUCrop, RandomHorizontalFlip)
 * and the SSD paper (§2.2 "Data augmentation") do it, on float CHW images in [0, 1] and [x1, y1, x2, y2] pixel
 * boxes (pixel-edge coordinates, as src/detect/dataset.ts). Random draws come from the project's seeded Rng, so a
 * seed gives the same augmentation everywhere; the draws are torchvision's, in its order (not its values: torch's
 * generator differs). Every function returns a new sample and leaves its input as it was.
 */
import { gatherBoxes, iou } from './boxes.js';
import type { Rng } from '../util/rng.js';

/** A float image, channel-major: data[(c·height + y)·width + x]. */
export interface ChwImage {
  data: Float32Array;
  channels: number;
  height: number;
  width: number;
}

export interface DetectionSample {
  image: ChwImage;
  /** [N, 4] pixel boxes [x1, y1, x2, y2]. */
  boxes: Float32Array;
  labels: number[];
}

function checkSample(s: DetectionSample): void {
  const { data, channels, height, width } = s.image;
  if (![channels, height, width].every((v) => Number.isInteger(v) && v >= 1)) throw new Error(`augment: image size ${channels}×${height}×${width} is not positive integers`);
  if (data.length !== channels * height * width) throw new Error(`augment: image has ${data.length} values, not ${channels}×${height}×${width}`);
  if (s.boxes.length !== 4 * s.labels.length) throw new Error(`augment: ${s.boxes.length / 4} boxes but ${s.labels.length} labels`);
}

/** Uniform in [lo, hi) (torch.empty(1).uniform_(lo, hi)). */
const uniform = (rng: Rng, lo: number, hi: number): number => lo + rng.uniform() * (hi - lo);

// ---- geometry ----

/** Mirrors the image left-right; a box [x1, y1, x2, y2] becomes [W − x2, y1, W − x1, y2]. */
export function hflip(s: DetectionSample): DetectionSample {
  checkSample(s);
  const { data, channels, height, width } = s.image;
  const out = new Float32Array(data.length);
  for (let r = 0; r < channels * height; r++) for (let x = 0; x < width; x++) out[r * width + x] = data[r * width + width - 1 - x]!;
  const boxes = Float32Array.from(s.boxes);
  for (let i = 0; i < boxes.length; i += 4) [boxes[i], boxes[i + 2]] = [width - s.boxes[i + 2]!, width - s.boxes[i]!];
  return { image: { ...s.image, data: out }, boxes, labels: [...s.labels] };
}

/** RandomHorizontalFlip(p): flips with probability p (one draw). */
export function randomHflip(s: DetectionSample, rng: Rng, p = 0.5): DetectionSample {
  return rng.uniform() < p ? hflip(s) : s;
}

/** The image on a larger canvas of `fill` at (left, top); boxes shifted by the same offset. */
export function zoomOutTo(s: DetectionSample, canvas: { width: number; height: number; left: number; top: number }, fill: readonly number[]): DetectionSample {
  checkSample(s);
  const { data, channels, height, width } = s.image;
  const { left, top } = canvas;
  if (!(left >= 0 && top >= 0 && left + width <= canvas.width && top + height <= canvas.height)) {
    throw new Error(`zoom-out: a ${width}×${height} image at (${left}, ${top}) does not fit a ${canvas.width}×${canvas.height} canvas`);
  }
  if (fill.length !== channels) throw new Error(`zoom-out: ${fill.length} fill values for ${channels} channels`);
  const cw = canvas.width;
  const out = new Float32Array(channels * canvas.height * cw);
  for (let c = 0; c < channels; c++) {
    out.fill(fill[c]!, c * canvas.height * cw, (c + 1) * canvas.height * cw);
    for (let y = 0; y < height; y++) {
      out.set(data.subarray((c * height + y) * width, (c * height + y + 1) * width), (c * canvas.height + top + y) * cw + left);
    }
  }
  const boxes = Float32Array.from(s.boxes, (v, k) => v + (k % 2 === 0 ? left : top));
  return { image: { data: out, channels, height: canvas.height, width: cw }, boxes, labels: [...s.labels] };
}

/** torchvision's detection mean (123, 117, 104) / 255: what the `ssd` policy fills the zoom-out canvas with. */
export const SSD_MEAN_FILL: readonly number[] = [123 / 255, 117 / 255, 104 / 255];

export interface ZoomOutOptions {
  /** Canvas fill per channel (default SSD_MEAN_FILL for 3 channels, 0.5 for 1). */
  fill?: readonly number[];
  /** Canvas side / image side, uniform in this range (default [1, 4]). */
  sideRange?: readonly [number, number];
  /** Probability of zooming out (default 0.5). */
  p?: number;
}

/** RandomZoomOut: with probability p, the image on a canvas r × its size (r uniform in sideRange) at a random place. */
export function randomZoomOut(s: DetectionSample, rng: Rng, o: ZoomOutOptions = {}): DetectionSample {
  const [lo, hi] = o.sideRange ?? [1, 4];
  if (!(lo >= 1 && hi >= lo)) throw new Error(`zoom-out: side range must satisfy 1 ≤ min ≤ max, got [${lo}, ${hi}]`);
  if (rng.uniform() >= (o.p ?? 0.5)) return s;
  const { width, height, channels } = s.image;
  const r = uniform(rng, lo, hi);
  const cw = Math.trunc(width * r);
  const ch = Math.trunc(height * r);
  const left = Math.trunc((cw - width) * rng.uniform());
  const top = Math.trunc((ch - height) * rng.uniform());
  const fill = o.fill ?? (channels === 3 ? SSD_MEAN_FILL : new Array<number>(channels).fill(0.5));
  return zoomOutTo(s, { width: cw, height: ch, left, top }, fill);
}

export interface CropRect {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** Boxes whose centre lies strictly inside the rectangle (torchvision's `is_within_crop_area`). */
export function centresInside(boxes: ArrayLike<number>, r: CropRect): number[] {
  const keep: number[] = [];
  for (let i = 0; 4 * i < boxes.length; i++) {
    const cx = 0.5 * (boxes[4 * i]! + boxes[4 * i + 2]!);
    const cy = 0.5 * (boxes[4 * i + 1]! + boxes[4 * i + 3]!);
    if (r.left < cx && cx < r.left + r.width && r.top < cy && cy < r.top + r.height) keep.push(i);
  }
  return keep;
}

/** The image cut to an integer rectangle; boxes with their centre inside kept, shifted and clipped to it. */
export function cropTo(s: DetectionSample, r: CropRect): DetectionSample {
  checkSample(s);
  const { data, channels, height, width } = s.image;
  const ok = [r.left, r.top, r.width, r.height].every(Number.isInteger) && r.left >= 0 && r.top >= 0 && r.width >= 1 && r.height >= 1;
  if (!ok || r.left + r.width > width || r.top + r.height > height) {
    throw new Error(`crop: ${r.width}×${r.height} at (${r.left}, ${r.top}) is not an integer rectangle inside the ${width}×${height} image`);
  }
  const out = new Float32Array(channels * r.height * r.width);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < r.height; y++) {
      const src = (c * height + r.top + y) * width + r.left;
      out.set(data.subarray(src, src + r.width), (c * r.height + y) * r.width);
    }
  }
  const keep = centresInside(s.boxes, r);
  const boxes = gatherBoxes(s.boxes, keep);
  for (let k = 0; k < boxes.length; k++) {
    const [off, max] = k % 2 === 0 ? [r.left, r.width] : [r.top, r.height];
    boxes[k] = Math.min(Math.max(boxes[k]! - off, 0), max);
  }
  return { image: { data: out, channels, height: r.height, width: r.width }, boxes, labels: keep.map((i) => s.labels[i]!) };
}

export interface IouCropOptions {
  /** Crop side / image side, per side uniform in [minScale, maxScale] (default 0.3, 1). */
  minScale?: number;
  maxScale?: number;
  /** Crop width / height must lie in this range (default 0.5, 2). */
  minAspectRatio?: number;
  maxAspectRatio?: number;
  /** Minimum IoU choices; ≥ 1 means "no crop" (default 0, 0.1, 0.3, 0.5, 0.7, 0.9, 1, as torchvision). */
  minIouChoices?: readonly number[];
  /** Crops tried per chosen minimum IoU before choosing again (default 40). */
  trials?: number;
}

const MIN_IOU_CHOICES: readonly number[] = [0, 0.1, 0.3, 0.5, 0.7, 0.9, 1];

/**
 * RandomIoUCrop (the SSD paper's patch sampling): choose a minimum IoU (or no crop); try up to `trials` random
 * crops of 0.3–1 of each side and aspect 0.5–2 for one that holds at least one box centre and whose IoU with a
 * held box reaches the minimum; none found → choose again. Returns the sample and the crop (null: uncropped).
 * An image without boxes is returned as it is (torchvision would loop forever).
 */
export function randomIouCrop(s: DetectionSample, rng: Rng, o: IouCropOptions = {}): { sample: DetectionSample; crop: (CropRect & { minIou: number }) | null } {
  checkSample(s);
  const [minScale, maxScale] = [o.minScale ?? 0.3, o.maxScale ?? 1];
  const [minAr, maxAr] = [o.minAspectRatio ?? 0.5, o.maxAspectRatio ?? 2];
  const choices = o.minIouChoices ?? MIN_IOU_CHOICES;
  if (!(minScale > 0 && maxScale <= 1 && minScale <= maxScale)) throw new Error(`IoU crop: need 0 < minScale ≤ maxScale ≤ 1, got ${minScale}, ${maxScale}`);
  if (choices.length === 0 || !choices.some((c) => c >= 1)) throw new Error('IoU crop: the minimum IoU choices must include 1 (no crop), or the search may never end');
  if (s.labels.length === 0) return { sample: s, crop: null };
  const { width, height } = s.image;
  for (;;) {
    const minIou = choices[rng.int(choices.length)]!;
    if (minIou >= 1) return { sample: s, crop: null };
    for (let t = 0; t < (o.trials ?? 40); t++) {
      const w = Math.trunc(width * uniform(rng, minScale, maxScale));
      const h = Math.trunc(height * uniform(rng, minScale, maxScale));
      if (!(w / h >= minAr && w / h <= maxAr)) continue;
      const left = Math.trunc((width - w) * rng.uniform());
      const top = Math.trunc((height - h) * rng.uniform());
      if (w === 0 || h === 0) continue;
      const rect = { left, top, width: w, height: h };
      const inside = centresInside(s.boxes, rect);
      if (inside.length === 0) continue;
      const r = Float32Array.of(left, top, left + w, top + h);
      if (Math.max(...inside.map((i) => iou(s.boxes, i, r, 0))) < minIou) continue;
      return { sample: cropTo(s, rect), crop: { ...rect, minIou } };
    }
  }
}

// ---- photometric (torchvision.transforms.functional on float tensors) ----

/** (ratio·a + (1 − ratio)·b) clamped to [0, 1]: functional_tensor._blend. */
function blend(a: Float32Array, b: (i: number) => number, ratio: number): Float32Array {
  return Float32Array.from(a, (v, i) => Math.min(Math.max(ratio * v + (1 - ratio) * b(i), 0), 1));
}

/** rgb_to_grayscale: 0.2989 R + 0.587 G + 0.114 B per pixel. */
function grayscale(img: ChwImage): Float32Array {
  const n = img.height * img.width;
  const d = img.data;
  return Float32Array.from({ length: n }, (_, p) => 0.2989 * d[p]! + 0.587 * d[n + p]! + 0.114 * d[2 * n + p]!);
}

const withData = (img: ChwImage, data: Float32Array): ChwImage => ({ ...img, data });

export function adjustBrightness(img: ChwImage, factor: number): ChwImage {
  return withData(img, blend(img.data, () => 0, factor));
}

/** Blends with the mean grey level of the whole image (of its one channel when greyscale). */
export function adjustContrast(img: ChwImage, factor: number): ChwImage {
  const g = img.channels === 3 ? grayscale(img) : img.data;
  const mean = g.reduce((s, v) => s + v, 0) / g.length;
  return withData(img, blend(img.data, () => mean, factor));
}

/** Blends with the pixel's grey level; a greyscale image is left as it is. */
export function adjustSaturation(img: ChwImage, factor: number): ChwImage {
  if (img.channels !== 3) return img;
  const g = grayscale(img);
  const n = g.length;
  return withData(img, blend(img.data, (i) => g[i % n]!, factor));
}

/** HSV of one pixel as functional_tensor._rgb2hsv (hue in [0, 1)). */
function rgbToHsv(r: number, g: number, b: number): [number, number, number] {
  const maxc = Math.max(r, g, b);
  const minc = Math.min(r, g, b);
  const eq = maxc === minc;
  const cr = maxc - minc;
  const s = cr / (eq ? 1 : maxc);
  const div = eq ? 1 : cr;
  const [rc, gc, bc] = [(maxc - r) / div, (maxc - g) / div, (maxc - b) / div];
  const h = maxc === r ? bc - gc : maxc === g ? 2 + rc - bc : 4 + gc - rc;
  return [(((h / 6 + 1) % 1) + 1) % 1, s, maxc];
}

/** functional_tensor._hsv2rgb of one pixel. */
function hsvToRgb(h: number, s: number, v: number): [number, number, number] {
  const i0 = Math.floor(h * 6);
  const f = h * 6 - i0;
  const clamp = (x: number): number => Math.min(Math.max(x, 0), 1);
  const p = clamp(v * (1 - s));
  const q = clamp(v * (1 - s * f));
  const t = clamp(v * (1 - s * (1 - f)));
  const table: [number, number, number][] = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]];
  return table[((i0 % 6) + 6) % 6]!;
}

/** Rotates every pixel's hue by `factor` (in turns, −0.5..0.5); a greyscale image is left as it is. */
export function adjustHue(img: ChwImage, factor: number): ChwImage {
  if (!(factor >= -0.5 && factor <= 0.5)) throw new Error(`hue factor ${factor} is not in [-0.5, 0.5]`);
  if (img.channels !== 3) return img;
  const n = img.height * img.width;
  const d = img.data;
  const out = new Float32Array(d.length);
  for (let p = 0; p < n; p++) {
    const [h, s, v] = rgbToHsv(d[p]!, d[n + p]!, d[2 * n + p]!);
    const rgb = hsvToRgb((((h + factor) % 1) + 1) % 1, s, v);
    for (let c = 0; c < 3; c++) out[c * n + p] = rgb[c]!;
  }
  return withData(img, out);
}

/** The image with its channels in the order `perm` (out channel c = in channel perm[c]). */
export function permuteChannels(img: ChwImage, perm: readonly number[]): ChwImage {
  const n = img.height * img.width;
  const out = new Float32Array(img.data.length);
  perm.forEach((src, c) => out.set(img.data.subarray(src * n, (src + 1) * n), c * n));
  return withData(img, out);
}

export interface PhotometricOptions {
  /** Factor ranges (torchvision's defaults). */
  brightness?: readonly [number, number];
  contrast?: readonly [number, number];
  saturation?: readonly [number, number];
  hue?: readonly [number, number];
  /** Probability of each step (default 0.5). */
  p?: number;
}

/**
 * RandomPhotometricDistort: seven draws r; brightness if r0 < p; contrast before (r1 < 0.5, if r2 < p) or
 * after the colour steps (if r5 < p); saturation if r3 < p; hue if r4 < p; a random channel order if r6 < p.
 */
export function photometricDistort(img: ChwImage, rng: Rng, o: PhotometricOptions = {}): ChwImage {
  const p = o.p ?? 0.5;
  const r = Array.from({ length: 7 }, () => rng.uniform());
  const factor = (range: readonly [number, number]): number => uniform(rng, range[0], range[1]);
  const contrast = (x: ChwImage): ChwImage => adjustContrast(x, factor(o.contrast ?? [0.5, 1.5]));
  let x = img;
  if (r[0]! < p) x = adjustBrightness(x, factor(o.brightness ?? [0.875, 1.125]));
  const contrastBefore = r[1]! < 0.5;
  if (contrastBefore && r[2]! < p) x = contrast(x);
  if (r[3]! < p) x = adjustSaturation(x, factor(o.saturation ?? [0.5, 1.5]));
  if (r[4]! < p) x = adjustHue(x, factor(o.hue ?? [-0.05, 0.05]));
  if (!contrastBefore && r[5]! < p) x = contrast(x);
  if (r[6]! < p) x = permuteChannels(x, rng.shuffle(Array.from({ length: x.channels }, (_, c) => c)));
  return x;
}

export interface SsdAugmentOptions {
  photometric?: PhotometricOptions | false;
  zoomOut?: ZoomOutOptions | false;
  crop?: IouCropOptions | false;
  /** Flip probability (0: never). Default 0.5. */
  flip?: number;
}

/** torchvision's `ssd` training policy: photometric distortion, zoom-out, IoU crop, horizontal flip (each can be turned off). */
export function ssdAugment(s: DetectionSample, rng: Rng, o: SsdAugmentOptions = {}): DetectionSample {
  let x = o.photometric === false ? s : { ...s, image: photometricDistort(s.image, rng, o.photometric) };
  if (o.zoomOut !== false) x = randomZoomOut(x, rng, o.zoomOut);
  if (o.crop !== false) x = randomIouCrop(x, rng, o.crop).sample;
  return randomHflip(x, rng, o.flip ?? 0.5);
}
