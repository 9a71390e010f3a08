/**
 * What `classify` and `embed` accept as an image: a file path, encoded bytes (PNG, JPEG, WebP, ...), raw 8-bit
 * pixels with their size, or a sharp instance. Each becomes the model's input tensor through its preset.
 */
import sharp from 'sharp';
import { loadImage, loadImageBuffer, loadImageSharp, type LoadImageOptions, type Preset } from '../data/preprocess.js';

/** Raw interleaved 8-bit pixels, row-major: greyscale (1), grey + alpha (2), RGB (3) or RGBA (4) channels. */
export interface RawImage {
  data: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
  /** Default: data.length / (width · height). */
  channels?: 1 | 2 | 3 | 4;
}

export type ImageInput = string | Uint8Array | RawImage | sharp.Sharp;

function isSharp(x: unknown): x is sharp.Sharp {
  return x instanceof sharp;
}

function rawPipeline(img: RawImage): () => sharp.Sharp {
  const { data, width, height } = img;
  if (!Number.isInteger(width) || width < 1 || !Number.isInteger(height) || height < 1) {
    throw new Error(`raw image: width and height must be positive integers, got ${width}x${height}`);
  }
  const channels = img.channels ?? data.length / (width * height);
  if (![1, 2, 3, 4].includes(channels) || data.length !== width * height * channels) {
    throw new Error(`raw image: ${data.length} bytes do not make ${width}x${height} pixels of 1, 2, 3 or 4 channels` +
      (img.channels ? ` (channels ${img.channels} needs ${width * height * img.channels})` : ''));
  }
  const raw = { width, height, channels: channels as 1 | 2 | 3 | 4 };
  return () => sharp(data, { raw });
}

/** One image as the CHW float32 input of preset `p`. Errors name the file, or say which kind of input failed. */
export async function imageTensor(img: ImageInput, p: Preset, opts: LoadImageOptions = {}): Promise<Float32Array> {
  if (typeof img === 'string') return loadImage(img, p, opts);
  if (img instanceof Uint8Array) return loadImageBuffer(img, p, opts);
  // A sharp pipeline's output is used as it is: call .rotate() on it for EXIF orientation.
  if (isSharp(img)) {
    const { data, info } = await img.clone().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    return loadImageSharp(rawPipeline({ data, width: info.width, height: info.height, channels: info.channels }), p, opts, 'sharp instance');
  }
  if (isRaw(img)) return loadImageSharp(rawPipeline(img), p, opts, `raw ${img.width}x${img.height} image`);
  throw new Error('image: expected a file path, encoded image bytes, {data, width, height} raw pixels or a sharp instance');
}

function isRaw(x: unknown): x is RawImage {
  if (typeof x !== 'object' || x === null || x instanceof Uint8Array) return false;
  const r = x as Partial<RawImage>;
  return (r.data instanceof Uint8Array || r.data instanceof Uint8ClampedArray) && typeof r.width === 'number' && typeof r.height === 'number';
}
