/**
 * IDX file reader (the MNIST / Fashion-MNIST format), gzipped or raw.
 *
 * Header: 2 zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then one big-endian uint32
 * per dimension; the data follows, exactly product(dims) bytes. Images: magic 0x00000803 (2051), 3 dims
 * (count, rows, cols). Labels: magic 0x00000801 (2049), 1 dim (count).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { FASHION_MNIST_CLASSES, sharedBytes, type Dataset } from './dataset.js';

export const IDX_LABELS_MAGIC = 0x00000801; // 2049
export const IDX_IMAGES_MAGIC = 0x00000803; // 2051

export interface IdxImages {
  count: number;
  rows: number;
  cols: number;
  /** count × rows × cols bytes, row-major (in a SharedArrayBuffer). */
  pixels: Uint8Array;
}

/** An error in a data file; the message starts with the file's path. */
export class DataFileError extends Error {
  constructor(readonly file: string, problem: string) {
    super(`${file}: ${problem}`);
    this.name = 'DataFileError';
  }
}

/** Reads a file and gunzips it if it starts with the gzip magic 1f 8b. */
export function readMaybeGzip(path: string): Buffer {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new DataFileError(path, err.code === 'ENOENT' ? 'file not found' : `cannot read: ${err.message}`);
  }
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      return gunzipSync(raw);
    } catch (e) {
      throw new DataFileError(path, `corrupt gzip data: ${(e as Error).message}`);
    }
  }
  return raw;
}

const KIND: Record<number, string> = { [IDX_LABELS_MAGIC]: 'labels', [IDX_IMAGES_MAGIC]: 'images' };

/** Parses and validates an IDX header with the expected magic; returns the dims and the data offset. */
function parseIdx(path: string, buf: Buffer, magic: number): { dims: number[]; offset: number } {
  if (buf.length === 0) throw new DataFileError(path, 'file is empty');
  if (buf.length < 4) throw new DataFileError(path, `too short for an IDX header (${buf.length} bytes)`);
  const got = buf.readUInt32BE(0);
  if (got !== magic) {
    const gotKind = KIND[got] ? ` (${KIND[got]})` : '';
    throw new DataFileError(path, `expected magic ${magic} (${KIND[magic]}), got ${got}${gotKind}`);
  }
  const ndim = buf[3]!;
  const offset = 4 + 4 * ndim;
  if (buf.length < offset) {
    throw new DataFileError(path, `truncated header: ${ndim} dimensions need ${offset} bytes, file has ${buf.length}`);
  }
  const dims: number[] = [];
  for (let i = 0; i < ndim; i++) dims.push(buf.readUInt32BE(4 + 4 * i));
  const expected = dims.reduce((a, b) => a * b, 1);
  const have = buf.length - offset;
  if (have !== expected) {
    const desc = `header says ${dims.join('×')} = ${expected} bytes, file has ${have}`;
    throw new DataFileError(path, have < expected ? `truncated: ${desc}` : `trailing data: ${desc}`);
  }
  return { dims, offset };
}

/** Reads an IDX3 images file (gzipped or raw). */
export function readIdxImages(path: string): IdxImages {
  const buf = readMaybeGzip(path);
  const { dims, offset } = parseIdx(path, buf, IDX_IMAGES_MAGIC);
  if (dims.length !== 3) throw new DataFileError(path, `expected 3 dimensions (count, rows, cols), got ${dims.length}`);
  const [count, rows, cols] = dims as [number, number, number];
  if (rows === 0 || cols === 0) throw new DataFileError(path, `empty images: ${count}×${rows}×${cols}`);
  const pixels = sharedBytes(count * rows * cols);
  pixels.set(buf.subarray(offset));
  return { count, rows, cols, pixels };
}

/** Reads an IDX1 labels file (gzipped or raw); with numClasses, checks every label is < numClasses. */
export function readIdxLabels(path: string, numClasses?: number): Uint8Array {
  const buf = readMaybeGzip(path);
  const { dims, offset } = parseIdx(path, buf, IDX_LABELS_MAGIC);
  if (dims.length !== 1) throw new DataFileError(path, `expected 1 dimension (count), got ${dims.length}`);
  const labels = new Uint8Array(buf.subarray(offset));
  if (numClasses !== undefined) {
    for (let i = 0; i < labels.length; i++) {
      if (labels[i]! >= numClasses) throw new DataFileError(path, `label ${labels[i]} at index ${i} is not < ${numClasses}`);
    }
  }
  return labels;
}

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

const INSTALL_HINT =
  'install it with `apt-get install dataset-fashion-mnist` (into /usr/share/datasets/fashion-mnist) ' +
  'or download it with `mnv2 data fetch fashion-mnist`';

/** Finds `<dir>/<base>.gz` or `<dir>/<base>`. */
function findIdx(dir: string, base: string): string {
  for (const name of [`${base}.gz`, base]) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  throw new Error(`Fashion-MNIST file ${base}(.gz) not found in ${dir}: ${INSTALL_HINT}`);
}

/** Loads a Fashion-MNIST split from `dir` (files `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`). */
export function loadFashionMnist(dir: string = FASHION_MNIST_DIR, split: 'train' | 'test' = 'train'): Dataset {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new Error(`Fashion-MNIST folder ${dir} does not exist: ${INSTALL_HINT}`);
  }
  const prefix = split === 'train' ? 'train' : 't10k';
  const imgPath = findIdx(dir, `${prefix}-images-idx3-ubyte`);
  const lblPath = findIdx(dir, `${prefix}-labels-idx1-ubyte`);
  const img = readIdxImages(imgPath);
  if (img.rows !== 28 || img.cols !== 28) throw new DataFileError(imgPath, `expected 28×28 images, got ${img.rows}×${img.cols}`);
  const labels = readIdxLabels(lblPath, 10);
  if (labels.length !== img.count) {
    throw new DataFileError(lblPath, `${labels.length} labels but ${imgPath} has ${img.count} images`);
  }
  return {
    name: `fashion-mnist-${split}`,
    count: img.count,
    channels: 1,
    height: 28,
    width: 28,
    images: img.pixels,
    labels,
    classes: FASHION_MNIST_CLASSES,
  };
}
