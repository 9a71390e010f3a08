import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CIFAR_TRAIN_FILES, loadCifar10, readCifarBatch } from '../src/data/cifar.js';
import { CIFAR10_CLASSES } from '../src/data/dataset.js';

const dir = mkdtempSync(join(tmpdir(), 'mnv2-cifar-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Pixel value of record r, channel c, row y, col x in the synthetic files. */
const pix = (r: number, c: number, y: number, x: number) => (r * 31 + c * 101 + y * 7 + x * 3) & 255;

/** CIFAR binary records: label byte, then R, G, B planes (32×32 row-major). */
function records(first: number, labels: number[]): Buffer {
  const b = Buffer.alloc(labels.length * 3073);
  labels.forEach((l, i) => {
    const o = i * 3073;
    b[o] = l;
    for (let c = 0; c < 3; c++) for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) b[o + 1 + c * 1024 + y * 32 + x] = pix(first + i, c, y, x);
  });
  return b;
}

test('reads a 3-record batch in CHW layout', () => {
  const p = join(dir, 'three.bin');
  writeFileSync(p, records(0, [0, 9, 4]));
  const b = readCifarBatch(p);
  assert.equal(b.count, 3);
  assert.deepEqual([...b.labels], [0, 9, 4]);
  assert.equal(b.images.length, 3 * 3072);
  for (let r = 0; r < 3; r++) {
    for (const [c, y, x] of [[0, 0, 0], [0, 0, 31], [1, 5, 17], [2, 31, 31], [2, 31, 0], [1, 16, 0]] as const) {
      assert.equal(b.images[r * 3072 + c * 1024 + y * 32 + x], pix(r, c, y, x), `r${r} c${c} y${y} x${x}`);
    }
  }
});

test('rejects bad sizes and labels, naming the file', () => {
  const odd = join(dir, 'odd.bin');
  writeFileSync(odd, records(0, [1, 2]).subarray(0, 2 * 3073 - 1));
  assert.throws(() => readCifarBatch(odd), (e: Error) => e.message.startsWith(odd) && /size 6145 is not a multiple of the 3073-byte record/.test(e.message));
  const bad = join(dir, 'badlabel.bin');
  const buf = records(0, [1, 2, 3]);
  buf[2 * 3073] = 10;
  writeFileSync(bad, buf);
  assert.throws(() => readCifarBatch(bad), /badlabel\.bin: record 2 \(byte offset 6146\) has label 10, expected 0-9/);
  const empty = join(dir, 'empty.bin');
  writeFileSync(empty, Buffer.alloc(0));
  assert.throws(() => readCifarBatch(empty), /empty\.bin: file is empty/);
  assert.throws(() => readCifarBatch(join(dir, 'missing.bin')), /missing\.bin: file not found/);
});

test('loadCifar10 train/test from the parent folder or the batches folder', () => {
  const root = join(dir, 'data');
  const bin = join(root, 'cifar-10-batches-bin');
  mkdirSync(bin, { recursive: true });
  let next = 0;
  const allLabels: number[] = [];
  CIFAR_TRAIN_FILES.forEach((f, k) => {
    const labels = Array.from({ length: k + 1 }, (_, i) => (next + i) % 10);
    writeFileSync(join(bin, f), records(next, labels));
    allLabels.push(...labels);
    next += labels.length;
  });
  writeFileSync(join(bin, 'test_batch.bin'), records(100, [7, 8]));
  for (const d of [root, bin]) {
    const tr = loadCifar10(d, 'train');
    assert.equal(tr.name, 'cifar10-train');
    assert.equal(tr.count, 15);
    assert.deepEqual([tr.channels, tr.height, tr.width], [3, 32, 32]);
    assert.deepEqual([...tr.labels], allLabels);
    assert.deepEqual(tr.classes, CIFAR10_CLASSES);
    for (let r = 0; r < 15; r++) assert.equal(tr.images[r * 3072 + 2 * 1024 + 3 * 32 + 4], pix(r, 2, 3, 4));
    const te = loadCifar10(d, 'test');
    assert.equal(te.count, 2);
    assert.deepEqual([...te.labels], [7, 8]);
    assert.equal(te.images[1 * 3072 + 1024 + 33], pix(101, 1, 1, 1));
  }
  rmSync(join(bin, 'data_batch_3.bin'));
  assert.throws(() => loadCifar10(root, 'train'), /data_batch_3\.bin: file not found/);
  assert.throws(() => loadCifar10(join(dir, 'nowhere'), 'test'), /CIFAR-10 not found.*mnv2 data fetch cifar10/);
});
