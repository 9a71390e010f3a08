// Image preprocessing for inference/evaluation: decode an image file with sharp
// (libvips), resize/crop/pad it to the model's input resolution and normalize it
// to a CHW float32 tensor.
//
// Presets (see `preset()`):
//
//   torchvision    resize shorter side to round(r*256/224) (256 for r=224), center crop r,
//                  x/255, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
//   keras          same geometry as torchvision, then x/127.5 - 1 (mean 0.5, std 0.5 on x/255).
//                  Note: keras.utils.load_img(target_size=...) itself resizes directly (nearest
//                  by default) without cropping; this preset uses the crop geometry instead.
//   tf-slim        TF-slim's eval preprocessing (inception_preprocessing): the central 87.5 % of the
//                  height and of the width (tf.image.central_crop), resized to r x r (aspect not kept),
//                  then [-1, 1] like keras. For TF-slim / TFLite classifiers (mnv2 import tflite).
//   seed-cifar     resize directly to r x r (default 32, aspect ratio not kept), x/255,
//                  CIFAR-10 mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010).
//   fashion-mnist  the project's convention for the seed 3-channel 32x32 model: 8-bit greyscale,
//                  resize directly to 28x28, zero-pad 2 px (pixel value 0 = black) on every side
//                  to 32x32, replicate to 3 channels, x/255, mean 0.2860, std 0.3530 on all channels.
//   fashion-mnist-canvas  for classifiers trained with `--augment canvas` (garments drawn at fashion-detect's sizes
//                  on an r x r frame): fashion-mnist's, the garment resized to the middle of those sizes and
//                  centred on the black r x r frame.
//
// Details common to all presets:
//   * EXIF orientation is applied (`.rotate()` with no angle) before anything else.
//   * Alpha is removed by compositing onto a background: white for the RGB presets (the usual
//     look of a transparent product photo), black for fashion-mnist (Fashion-MNIST backgrounds
//     are black; with `invert: true` it is composited onto white, which becomes black after the
//     inversion).
//   * Colour is converted to 8-bit sRGB with 3 channels (CMYK, greyscale, 16-bit and palette
//     images included), or to 8-bit greyscale for fashion-mnist. sharp's greyscale conversion
//     (libvips sRGB -> B_W) weights the channels by luminance, which is not identical to PIL's
//     `convert('L')` (ITU-R 601-2 luma on gamma-encoded values); for neutral greys they agree.
//   * Resizing uses sharp's `kernel: 'linear'` (triangle filter) with `fastShrinkOnLoad: false`.
//     Like PIL's BILINEAR (used by torchvision's Resize on PIL images) libvips widens the filter
//     when downsampling, so it is antialiased, but it is not bit-identical to PIL: for large
//     reductions libvips first box-shrinks by an integer factor and then applies the triangle
//     filter to the remainder, and pixel rounding differs. Expect differences of a few 8-bit
//     levels on natural photos (not a concern for accuracy, but outputs are not bit-exact
//     against a PyTorch reference pipeline). The shorter-side resize computes the longer side
//     as floor(target * long / short) and the crop offsets with Python's round(), as torchvision does.
//   * Fashion-MNIST images are white-on-black: a light garment on a black background. Photos of
//     garments on a white/light background should be loaded with `{ invert: true }`.
import type sharp from 'sharp';
import { readFileBoundedAsync } from '../util/read-file.js';
import { canvasSizes } from './canvas.js';

export type PresetName = 'torchvision' | 'keras' | 'tf-slim' | 'seed-cifar' | 'fashion-mnist' | 'fashion-mnist-canvas';

export const PRESET_NAMES: readonly PresetName[] = Object.freeze([
  'torchvision',
  'keras',
  'tf-slim',
  'seed-cifar',
  'fashion-mnist',
  'fashion-mnist-canvas',
] as const);

/** A preprocessing recipe. The output tensor is `channels x size x size` (CHW). */
export interface Preset {
  name: PresetName;
  /** Output height and width in pixels (the model's input resolution). */
  size: number;
  /**
   * If set: resize so that the shorter side equals `resize` (aspect ratio kept), then center crop
   * `size x size`. If unset: resize directly (aspect ratio not kept) to `size - 2*pad` square.
   */
  resize?: number;
  /** If set (and `resize` is not): first keep the central fraction of the height and of the width (TF's central_crop). */
  centralFraction?: number;
  /** Zero padding (pixel value 0, before normalization) added on every side after resizing. Default 0. */
  pad?: number;
  /** Number of output channels; greyscale sources are replicated to 3 channels. */
  channels: 1 | 3;
  /** Decode to 8-bit greyscale (then replicate to `channels`) instead of sRGB. */
  greyscale: boolean;
  /** Background colour used to remove an alpha channel (before any inversion). */
  background: 'white' | 'black';
  /** Per-channel mean, applied as (x/255 - mean[c]) / std[c]; length === channels. */
  mean: number[];
  /** Per-channel standard deviation; length === channels. */
  std: number[];
}

export interface LoadImageOptions {
  /**
   * Invert the 8-bit pixel values (v -> 255 - v) after decoding and resizing, before padding and
   * normalization. Use with fashion-mnist for photos of garments on a white background.
   */
  invert?: boolean;
  /** Reject images with more pixels than this before decoding them (default: sharp's limit, 0x3FFF²). */
  maxPixels?: number;
  /** loadImage: refuse files larger than this many bytes (default 256 MB). */
  maxBytes?: number;
}

/** Far beyond any photo; a bound so that a wrong path (a device, a huge file) fails at once. */
export const MAX_IMAGE_BYTES = 256 << 20;

function checkResolution(name: string, resolution: number): void {
  if (!Number.isInteger(resolution) || resolution < 1) {
    throw new Error(`preset '${name}': resolution must be a positive integer, got ${resolution}`);
  }
}

/**
 * The preprocessing preset `name` at `resolution` (output size; defaults: 224 for torchvision and
 * keras, 32 for seed-cifar and fashion-mnist). Throws for an unknown name, listing the valid ones.
 */
export function preset(name: string, resolution?: number): Preset {
  if (resolution !== undefined) checkResolution(name, resolution);
  switch (name) {
    case 'torchvision':
    case 'keras': {
      const size = resolution ?? 224;
      const resize = Math.round((size * 256) / 224);
      const tv = name === 'torchvision';
      return {
        name,
        size,
        resize,
        channels: 3,
        greyscale: false,
        background: 'white',
        mean: tv ? [0.485, 0.456, 0.406] : [0.5, 0.5, 0.5],
        std: tv ? [0.229, 0.224, 0.225] : [0.5, 0.5, 0.5],
      };
    }
    case 'tf-slim': {
      // keras's normalization, TF's crop instead of resize + center crop
      const { resize: _resize, ...keras } = preset('keras', resolution);
      return { ...keras, name, centralFraction: 0.875 };
    }
    case 'seed-cifar':
      return {
        name,
        size: resolution ?? 32,
        channels: 3,
        greyscale: false,
        background: 'white',
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2023, 0.1994, 0.201],
      };
    case 'fashion-mnist':
      if (resolution !== undefined && resolution !== 32) {
        throw new Error(`preset 'fashion-mnist' is fixed at 32x32 (28x28 padded by 2), got resolution ${resolution}`);
      }
      return {
        name,
        size: 32,
        pad: 2,
        channels: 3,
        greyscale: true,
        background: 'black',
        mean: [0.286, 0.286, 0.286],
        std: [0.353, 0.353, 0.353],
      };
    case 'fashion-mnist-canvas': {
      const size = resolution ?? 128;
      const { minSize, maxSize } = canvasSizes(28, size);
      const side = Math.round((minSize + maxSize) / 2);
      const pad = Math.ceil((size - side) / 2); // the garment a pixel smaller where the frame's parity asks
      return { ...preset('fashion-mnist'), name, size, pad };
    }
    default:
      throw new Error(`unknown preprocessing preset '${name}'; valid presets: ${PRESET_NAMES.join(', ')}`);
  }
}

/** tf.image.central_crop's box: start = int((size - size * fraction) / 2) on each axis, the same margin at the end. */
export function centralCrop(width: number, height: number, fraction: number): { left: number; top: number; width: number; height: number } {
  const top = Math.floor((height - height * fraction) / 2);
  const left = Math.floor((width - width * fraction) / 2);
  return { left, top, width: width - 2 * left, height: height - 2 * top };
}

/** Python 3 round(): round half to even. torchvision's CenterCrop uses it for crop offsets. */
function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Shared helper: uint8 HWC pixels (`channels` = 1 or 3) -> normalized CHW float32 of
 * `p.channels x p.size x p.size`.
 *
 * Geometry: an input larger than `p.size` on an axis is center-cropped (offset round((in-size)/2),
 * as torchvision's CenterCrop); a smaller one is centered and padded with pixel value 0 (so a
 * 28x28 Fashion-MNIST image becomes 32x32 with a 2 px black border). Channels: 1 -> 3 replicates;
 * 3 -> 1 uses ITU-R 601-2 luma (PIL's convert('L')). Values: (x/255 - mean[c]) / std[c].
 */
export function normalizeHWC(
  pixels: Uint8Array,
  width: number,
  height: number,
  channels: number,
  p: Preset,
): Float32Array {
  if (channels !== 1 && channels !== 3) {
    throw new Error(`normalizeHWC: expected 1 or 3 channels, got ${channels} (remove alpha first)`);
  }
  if (pixels.length !== width * height * channels) {
    throw new Error(
      `normalizeHWC: pixel buffer has ${pixels.length} bytes, expected ${width}x${height}x${channels} = ${width * height * channels}`,
    );
  }
  if (p.mean.length !== p.channels || p.std.length !== p.channels) {
    throw new Error(`preset '${p.name}': mean/std must have ${p.channels} entries`);
  }
  const size = p.size;
  const oc = p.channels;
  const plane = size * size;
  const out = new Float32Array(oc * plane);
  // Per-channel lookup table of the normalized value of each 8-bit level.
  const lut: Float32Array[] = [];
  for (let c = 0; c < oc; c++) {
    const t = new Float32Array(256);
    const m = p.mean[c]!;
    const s = p.std[c]!;
    for (let v = 0; v < 256; v++) t[v] = (v / 255 - m) / s;
    lut.push(t);
  }
  const offX = pyRound((width - size) / 2);
  const offY = pyRound((height - size) / 2);
  for (let y = 0; y < size; y++) {
    const sy = y + offY;
    const rowIn = sy >= 0 && sy < height;
    for (let x = 0; x < size; x++) {
      const sx = x + offX;
      const o = y * size + x;
      if (!rowIn || sx < 0 || sx >= width) {
        for (let c = 0; c < oc; c++) out[c * plane + o] = lut[c]![0]!;
        continue;
      }
      const i = (sy * width + sx) * channels;
      if (channels === oc) {
        for (let c = 0; c < oc; c++) out[c * plane + o] = lut[c]![pixels[i + c]!]!;
      } else if (channels === 1) {
        const v = pixels[i]!;
        for (let c = 0; c < oc; c++) out[c * plane + o] = lut[c]![v]!;
      } else {
        // 3 -> 1
        const v = Math.round((pixels[i]! * 299 + pixels[i + 1]! * 587 + pixels[i + 2]! * 114) / 1000);
        out[o] = lut[0]![v]!;
      }
    }
  }
  return out;
}

function readError(path: string, err: unknown): Error {
  const msg = err instanceof Error ? err.message : String(err);
  return new Error(`could not read image '${path}': ${msg.trim()}`, { cause: err });
}

/** Decode, orient, de-alpha, colour-convert and resize an image; returns 8-bit HWC pixels. `input` makes a fresh pipeline. */
async function decode(
  input: () => sharp.Sharp,
  source: string,
  p: Preset,
  opts: LoadImageOptions,
): Promise<{ data: Uint8Array; width: number; height: number; channels: number }> {
  try {
    const meta = await input().metadata();
    // Dimensions after EXIF orientation.
    const w0 = meta.autoOrient?.width ?? meta.width;
    const h0 = meta.autoOrient?.height ?? meta.height;
    if (!w0 || !h0) throw new Error('image has no dimensions');

    const pad = p.pad ?? 0;
    let tw: number;
    let th: number;
    if (p.resize !== undefined) {
      // torchvision Resize(int): shorter side -> resize, longer side -> int(resize * long / short).
      const s = p.resize;
      if (w0 <= h0) {
        tw = s;
        th = Math.max(1, Math.floor((s * h0) / w0));
      } else {
        th = s;
        tw = Math.max(1, Math.floor((s * w0) / h0));
      }
    } else {
      tw = th = p.size - 2 * pad;
    }
    if (tw < 1 || th < 1) throw new Error(`preset '${p.name}' gives an empty image`);

    // Composite alpha onto the background; with invert the background is flipped so it ends up
    // as the intended colour after inversion.
    const white = (p.background === 'white') !== (opts.invert === true);
    const bg = white ? { r: 255, g: 255, b: 255 } : { r: 0, g: 0, b: 0 };

    let img = input().rotate();
    if (p.centralFraction !== undefined) img = img.extract(centralCrop(w0, h0, p.centralFraction));
    img = img
      .flatten({ background: bg })
      .resize({ width: tw, height: th, fit: 'fill', kernel: 'linear', fastShrinkOnLoad: false });
    img = p.greyscale ? img.toColourspace('b-w') : img.toColourspace('srgb');
    const { data, info } = await img.removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.width !== tw || info.height !== th) {
      throw new Error(`unexpected decoded size ${info.width}x${info.height}, wanted ${tw}x${th}`);
    }
    if (info.channels !== 1 && info.channels !== 3) {
      throw new Error(`unexpected channel count ${info.channels}`);
    }
    const px = new Uint8Array(data.buffer, data.byteOffset, data.length);
    if (opts.invert) for (let i = 0; i < px.length; i++) px[i] = 255 - px[i]!;
    return { data: px, width: info.width, height: info.height, channels: info.channels };
  } catch (err) {
    throw readError(source, err);
  }
}

/**
 * Load one image file and preprocess it with preset `p`.
 * Returns CHW float32 of length `p.channels * p.size * p.size`.
 * Throws an Error naming the path if the file is missing, empty, truncated or not an image.
 */
export async function loadImage(path: string, p: Preset, opts: LoadImageOptions = {}): Promise<Float32Array> {
  let buf: Buffer;
  try {
    // Regular files only: a FIFO would block forever, /dev/zero would fill memory.
    buf = await readFileBoundedAsync(path, { maxBytes: opts.maxBytes ?? MAX_IMAGE_BYTES });
  } catch (err) {
    throw readError(path, err);
  }
  return loadImageBuffer(buf, p, opts, path);
}

/**
 * Preprocess an encoded image (PNG, JPEG, WebP, ...) already in memory, e.g. an HTTP request body.
 * Errors name `source` as loadImage's name the file.
 */
export async function loadImageBuffer(buf: Uint8Array, p: Preset, opts: LoadImageOptions = {}, source = 'buffer'): Promise<Float32Array> {
  if (buf.length === 0) throw readError(source, new Error('it is empty (0 bytes)'));
  const { default: sharp } = await import('sharp'); // loaded on first use: commands that read no image start faster
  const input = (): sharp.Sharp => sharp(buf, { failOn: 'error', ...(opts.maxPixels !== undefined && { limitInputPixels: opts.maxPixels }) });
  return loadImageSharp(input, p, opts, source);
}

/**
 * Preprocess the image of a sharp pipeline (raw pixels, a caller's `sharp()` instance, ...); `input` returns a
 * fresh pipeline each call (e.g. `() => instance.clone()`), since the metadata and the pixels are read separately.
 */
export async function loadImageSharp(input: () => sharp.Sharp, p: Preset, opts: LoadImageOptions = {}, source = 'image'): Promise<Float32Array> {
  const { data, width, height, channels } = await decode(input, source, p, opts);
  return normalizeHWC(data, width, height, channels, p);
}

/**
 * Load several image files into one NCHW float32 batch (N = paths.length), in order.
 * Decodes a few images concurrently; rejects with the first error.
 */
export async function loadImages(
  paths: string[],
  p: Preset,
  opts: LoadImageOptions = {},
): Promise<Float32Array> {
  const per = p.channels * p.size * p.size;
  const out = new Float32Array(paths.length * per);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < paths.length) {
      const i = next++;
      out.set(await loadImage(paths[i]!, p, opts), i * per);
    }
  };
  const n = Math.min(4, paths.length);
  await Promise.all(Array.from({ length: n }, worker));
  return out;
}
