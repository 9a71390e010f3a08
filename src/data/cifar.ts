/**
 * CIFAR-10 binary version reader (https://www.cs.toronto.edu/~kriz/cifar.html, "CIFAR-10 binary version").
 *
 * Each record is 3073 bytes: 1 label byte (0-9), then 3072 pixel bytes: the 1024 red, 1024 green, then 1024 blue
 * values of a 32×32 image, each plane row-major. That is already CHW, so records are copied as they are.
 * Real batch files hold 10000 records (30,730,000 bytes); any whole number of records is accepted.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CIFAR10_CLASSES, sharedBytes, type Dataset } from './dataset.js';
import { readDataFile } from './idx.js';
import { InputError } from '../util/errors.js';

export const CIFAR_RECORD_BYTES = 3073;
export const CIFAR_IMAGE_BYTES = 3072;
/** Records in each official batch file. */
export const CIFAR_BATCH_RECORDS = 10_000;
export const CIFAR_BATCH_DIR = 'cifar-10-batches-bin';
export const CIFAR_TRAIN_FILES: readonly string[] = ['data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin'];
export const CIFAR_TEST_FILES: readonly string[] = ['test_batch.bin'];

/** Checks a CIFAR batch buffer's size and labels; returns the record count. */
export function checkCifarBatch(path: string, buf: Uint8Array): number {
  if (buf.length === 0) throw new InputError(path, 'file is empty');
  if (buf.length % CIFAR_RECORD_BYTES !== 0) {
    throw new InputError(
      path,
      `size ${buf.length} is not a multiple of the ${CIFAR_RECORD_BYTES}-byte record (${Math.floor(buf.length / CIFAR_RECORD_BYTES)} records + ${buf.length % CIFAR_RECORD_BYTES} bytes; a real batch is 30730000 bytes)`,
    );
  }
  const n = buf.length / CIFAR_RECORD_BYTES;
  for (let r = 0; r < n; r++) {
    const label = buf[r * CIFAR_RECORD_BYTES]!;
    if (label > 9) throw new InputError(path, `record ${r} (byte offset ${r * CIFAR_RECORD_BYTES}) has label ${label}, expected 0-9`);
  }
  return n;
}

/** Reads one CIFAR-10 batch file into CHW images and labels. */
export function readCifarBatch(path: string): { count: number; images: Uint8Array; labels: Uint8Array } {
  const buf = readDataFile(path);
  const count = checkCifarBatch(path, buf);
  const images = sharedBytes(count * CIFAR_IMAGE_BYTES);
  const labels = new Uint8Array(count);
  copyRecords(buf, count, images, labels, 0);
  return { count, images, labels };
}

function copyRecords(buf: Uint8Array, n: number, images: Uint8Array, labels: Uint8Array, at: number): void {
  for (let r = 0; r < n; r++) {
    const o = r * CIFAR_RECORD_BYTES;
    labels[at + r] = buf[o]!;
    images.set(buf.subarray(o + 1, o + CIFAR_RECORD_BYTES), (at + r) * CIFAR_IMAGE_BYTES);
  }
}

/** `dir` may be the folder holding cifar-10-batches-bin, or that folder itself. */
export function resolveCifarDir(dir: string): string {
  const inner = join(dir, CIFAR_BATCH_DIR);
  if (existsSync(inner) && statSync(inner).isDirectory()) return inner;
  if (existsSync(dir) && [...CIFAR_TRAIN_FILES, ...CIFAR_TEST_FILES].some((f) => existsSync(join(dir, f)))) return dir;
  throw new Error(
    `CIFAR-10 not found: neither ${inner} nor ${dir} holds the binary batches (data_batch_1.bin…, test_batch.bin); ` +
      'download them with `mnv2 data fetch cifar10`',
  );
}

/** Loads the CIFAR-10 train (data_batch_1..5.bin, 50000 images) or test (test_batch.bin) split. */
export function loadCifar10(dir: string, split: 'train' | 'test' = 'train'): Dataset {
  const root = resolveCifarDir(dir);
  const files = (split === 'train' ? CIFAR_TRAIN_FILES : CIFAR_TEST_FILES).map((f) => join(root, f));
  const bufs = files.map((f) => {
    const b = readDataFile(f);
    return { b, n: checkCifarBatch(f, b) };
  });
  const count = bufs.reduce((a, x) => a + x.n, 0);
  const images = sharedBytes(count * CIFAR_IMAGE_BYTES);
  const labels = new Uint8Array(count);
  let at = 0;
  for (const { b, n } of bufs) {
    copyRecords(b, n, images, labels, at);
    at += n;
  }
  return { name: `cifar10-${split}`, count, channels: 3, height: 32, width: 32, images, labels, classes: CIFAR10_CLASSES };
}
