/**
 * Image -> model input in the browser, mirroring src/data/preprocess.ts step by step: background for alpha,
 * resize (canvas drawImage with high-quality smoothing where the library uses sharp's linear kernel),
 * greyscale exactly as sharp/libvips computes it, invert, then the library's own normalizeHWC (crop/pad,
 * channel replication, (x/255 - mean) / std).
 */
import { centralCrop, normalizeHWC, type Preset } from '../../src/data/preprocess.js';

// sharp's toColourspace('b-w') is libvips' sRGB -> scRGB -> B_W: Rec. 709 luminance on linear light, encoded
// back to 8-bit sRGB through a 256-entry table with linear interpolation. The tables and the float32 rounding
// follow libvips 8.17 (colour/LabQ2sRGB.c); they agree with sharp on every grey level and on 100,000 random colours.
const V2Y = new Float32Array(256);
const Y2V = new Int32Array(257);
for (let i = 0; i < 256; i++) {
  const f = Math.fround(i / 255);
  V2Y[i] = f <= 0.04045 ? f / 12.92 : Math.pow((f + 0.055) / 1.055, 2.4);
  const v = Math.fround(f <= 0.0031308 ? 12.92 * f : 1.055 * Math.pow(f, 1 / 2.4) - 0.055);
  Y2V[i] = Math.round(Math.fround(255 * v));
}
Y2V[256] = Y2V[255]!;

/** libvips' 8-bit luminance of one sRGB pixel. */
export function luma(r: number, g: number, b: number): number {
  const y = Math.fround(0.2126 * V2Y[r]! + 0.7152 * V2Y[g]! + 0.0722 * V2Y[b]!);
  const yf = Math.min(255, Math.max(0, Math.fround(y * 255)));
  const yi = Math.floor(yf);
  const lo = Y2V[yi]!;
  return Math.round(Math.fround(lo + Math.fround((Y2V[yi + 1]! - lo) * Math.fround(yf - yi))));
}

/** The size the image is resized to before crop/pad, as in preprocess.ts: shorter side or direct. */
export function resizeTarget(width: number, height: number, p: Preset): [number, number] {
  if (p.resize === undefined) {
    const s = p.size - 2 * (p.pad ?? 0);
    return [s, s];
  }
  const s = p.resize;
  return width <= height ? [s, Math.max(1, Math.floor((s * height) / width))] : [Math.max(1, Math.floor((s * width) / height)), s];
}

/**
 * Preprocess an image source (`width` x `height`, already EXIF-oriented) with preset `p`.
 * Returns CHW float32 of p.channels x p.size x p.size.
 */
export function prepare(src: CanvasImageSource, width: number, height: number, p: Preset, invert: boolean): Float32Array {
  const [tw, th] = resizeTarget(width, height, p);
  const canvas = document.createElement('canvas');
  canvas.width = tw;
  canvas.height = th;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  if (!ctx) throw new Error('this browser has no 2D canvas');
  // Alpha goes onto the preset's background; with invert the background is flipped, as in preprocess.ts.
  const white = (p.background === 'white') !== invert;
  ctx.fillStyle = white ? '#fff' : '#000';
  ctx.fillRect(0, 0, tw, th);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  const box = p.centralFraction === undefined ? { left: 0, top: 0, width, height } : centralCrop(width, height, p.centralFraction);
  ctx.drawImage(src, box.left, box.top, box.width, box.height, 0, 0, tw, th);
  const rgba = ctx.getImageData(0, 0, tw, th).data;
  const channels = p.greyscale ? 1 : 3;
  const px = new Uint8Array(tw * th * channels);
  for (let i = 0, o = 0; i < rgba.length; i += 4) {
    if (channels === 1) px[o++] = luma(rgba[i]!, rgba[i + 1]!, rgba[i + 2]!);
    else for (let c = 0; c < 3; c++) px[o++] = rgba[i + c]!;
  }
  if (invert) for (let i = 0; i < px.length; i++) px[i] = 255 - px[i]!;
  return normalizeHWC(px, tw, th, channels, p);
}
