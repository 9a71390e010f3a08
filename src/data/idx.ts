/**
 * IDX file reader (the MNIST / Fashion-MNIST format), gzipped or raw.
 *
 * Header: 2 zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then one big-endian uint32
 * per dimension; the data follows, exactly product(dims) bytes. Images: magic 0x00000803 (2051), 3 dims
 * (count, rows, cols). Labels: magic 0x00000801 (2049), 1 dim (count).
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { constants as zlibConstants, gunzipSync, type ZlibOptions } from 'node:zlib';
import { FASHION_MNIST_CLASSES, sharedBytes, type Dataset } from './dataset.js';
import { readFileBounded } from '../util/read-file.js';
import { InputError } from '../util/errors.js';

export const IDX_LABELS_MAGIC = 0x00000801; // 2049
export const IDX_IMAGES_MAGIC = 0x00000803; // 2051

export interface IdxImages {
  count: number;
  rows: number;
  cols: number;
  /** count × rows × cols bytes, row-major (in a SharedArrayBuffer). */
  pixels: Uint8Array;
}


/** What a reader expects of an IDX file: refused from the header, before the data is read or inflated. */
export interface IdxExpect {
  /** Most items (images or labels). */
  maxCount?: number;
  /** Image size. */
  rows?: number;
  cols?: number;
  /** Names the limit in the message ("Fashion-MNIST's train split"). */
  source?: string;
}

const KIND: Record<number, string> = { [IDX_LABELS_MAGIC]: 'labels', [IDX_IMAGES_MAGIC]: 'images' };
const NDIM: Record<number, number> = { [IDX_LABELS_MAGIC]: 1, [IDX_IMAGES_MAGIC]: 3 };
/** Largest data a reader accepts (sharedBytes' ArrayBuffer limit). */
const MAX_DATA_BYTES = 2 ** 31 - 1;
/** A gzip prefix this long inflates to far more than any IDX header (at most 4 + 4 * 255 bytes). */
const GZIP_HEADER_PREFIX = 4096;

const isGzip = (b: Uint8Array): boolean => b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;

/** A data file whole: regular files only (a FIFO or a device in its place would block or never end), at most 2 GB. */
export function readDataFile(path: string): Buffer {
  if (!existsSync(path)) throw new InputError(path, 'file not found');
  try {
    return readFileBounded(path, { maxBytes: MAX_DATA_BYTES, limitWhat: 'a data file may have' });
  } catch (e) {
    throw new InputError(path, (e as Error).message.replace(`${path}: `, ''));
  }
}

function gunzip(path: string, raw: Buffer, opts: ZlibOptions): Buffer {
  try {
    return gunzipSync(raw, opts);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw e;
    throw new InputError(path, `corrupt gzip data: ${(e as Error).message}`);
  }
}

/** Parses and validates an IDX header with the expected magic from its first bytes; returns the dims and the data offset. */
function parseHeader(path: string, head: Buffer, magic: number, expect: IdxExpect): { dims: number[]; offset: number } {
  if (head.length === 0) throw new InputError(path, 'file is empty');
  if (head.length < 4) throw new InputError(path, `too short for an IDX header (${head.length} bytes)`);
  const got = head.readUInt32BE(0);
  if (got !== magic) {
    const gotKind = KIND[got] ? ` (${KIND[got]})` : '';
    throw new InputError(path, `expected magic ${magic} (${KIND[magic]}), got ${got}${gotKind}`);
  }
  const ndim = head[3]!;
  const offset = 4 + 4 * ndim;
  if (head.length < offset) {
    throw new InputError(path, `truncated header: ${ndim} dimensions need ${offset} bytes, file has ${head.length}`);
  }
  const dims: number[] = [];
  for (let i = 0; i < ndim; i++) dims.push(head.readUInt32BE(4 + 4 * i));
  const kind = KIND[magic]!;
  if (ndim !== NDIM[magic]) {
    throw new InputError(path, `expected ${NDIM[magic]} dimension${ndim === 1 ? '' : 's'} (${kind === 'images' ? 'count, rows, cols' : 'count'}), got ${ndim}`);
  }
  const [count, rows, cols] = dims as [number, number?, number?];
  if (expect.maxCount !== undefined && count > expect.maxCount) {
    throw new InputError(path, `${count} ${kind}, more than the ${expect.maxCount} of ${expect.source ?? 'the dataset'}`);
  }
  if (kind === 'images' && (rows === 0 || cols === 0)) throw new InputError(path, `empty images: ${count}×${rows}×${cols}`);
  if ((expect.rows !== undefined && rows !== expect.rows) || (expect.cols !== undefined && cols !== expect.cols)) {
    throw new InputError(path, `expected ${expect.rows}×${expect.cols} images, got ${rows}×${cols}`);
  }
  const bytes = dims.reduce((a, b) => a * b, 1);
  if (bytes > MAX_DATA_BYTES) throw new InputError(path, `header says ${dims.join('×')} = ${bytes} bytes, more than a reader can hold (${MAX_DATA_BYTES})`);
  return { dims, offset };
}

/**
 * An IDX file's dims and data, raw or gzipped. A gzipped file is inflated twice, both bounded: a prefix for the
 * header (checked against `expect`), then the whole stream, stopped one byte after the size the header declares.
 */
function readIdx(path: string, magic: number, expect: IdxExpect): { dims: number[]; data: Buffer } {
  const raw = readDataFile(path);
  const gz = isGzip(raw);
  // A prefix of a longer stream ends mid-stream: flush what it gives; a short file is inflated whole (its errors are real).
  const prefix = raw.length > GZIP_HEADER_PREFIX ? { finishFlush: zlibConstants.Z_SYNC_FLUSH } : {};
  const head = gz ? gunzip(path, raw.subarray(0, GZIP_HEADER_PREFIX), prefix) : raw;
  const { dims, offset } = parseHeader(path, head, magic, expect);
  const expected = dims.reduce((a, b) => a * b, 1);
  const desc = `header says ${dims.join('×')} = ${expected} bytes`;
  let buf: Buffer;
  try {
    buf = gz ? gunzip(path, raw, { maxOutputLength: offset + expected + 1 }) : raw;
  } catch {
    throw new InputError(path, `trailing data: ${desc}, the gzip stream inflates to more`);
  }
  const have = buf.length - offset;
  if (have !== expected) throw new InputError(path, have < expected ? `truncated: ${desc}, file has ${have}` : `trailing data: ${desc}, file has ${have}`);
  return { dims, data: buf.subarray(offset) };
}

/** Reads an IDX3 images file (gzipped or raw). */
export function readIdxImages(path: string, expect: IdxExpect = {}): IdxImages {
  const { dims, data } = readIdx(path, IDX_IMAGES_MAGIC, expect);
  const [count, rows, cols] = dims as [number, number, number];
  const pixels = sharedBytes(count * rows * cols);
  pixels.set(data);
  return { count, rows, cols, pixels };
}

/** Reads an IDX1 labels file (gzipped or raw); with numClasses, checks every label is < numClasses. */
export function readIdxLabels(path: string, numClasses?: number, expect: IdxExpect = {}): Uint8Array {
  const labels = new Uint8Array(readIdx(path, IDX_LABELS_MAGIC, expect).data);
  if (numClasses !== undefined) {
    for (let i = 0; i < labels.length; i++) {
      if (labels[i]! >= numClasses) throw new InputError(path, `label ${labels[i]} at index ${i} is not < ${numClasses}`);
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

const FASHION_MNIST_COUNT = { train: 60_000, test: 10_000 } as const;

/** Loads a Fashion-MNIST split from `dir` (files `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`). */
export function loadFashionMnist(dir: string = FASHION_MNIST_DIR, split: 'train' | 'test' = 'train'): Dataset {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new Error(`Fashion-MNIST folder ${dir} does not exist: ${INSTALL_HINT}`);
  }
  const prefix = split === 'train' ? 'train' : 't10k';
  const imgPath = findIdx(dir, `${prefix}-images-idx3-ubyte`);
  const lblPath = findIdx(dir, `${prefix}-labels-idx1-ubyte`);
  const expect = { maxCount: FASHION_MNIST_COUNT[split], source: `Fashion-MNIST's ${split} split` };
  const img = readIdxImages(imgPath, { ...expect, rows: 28, cols: 28 });
  const labels = readIdxLabels(lblPath, 10, expect);
  if (labels.length !== img.count) {
    throw new InputError(lblPath, `${labels.length} labels but ${imgPath} has ${img.count} images`);
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
