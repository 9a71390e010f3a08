import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { FASHION_MNIST_CLASSES } from '../src/data/dataset.js';
import { FASHION_MNIST_DIR, loadFashionMnist, readIdxImages, readIdxLabels } from '../src/data/idx.js';

const dir = mkdtempSync(join(tmpdir(), 'mnv2-idx-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function idx(magic: number, dims: number[], data: Uint8Array): Buffer {
  const h = Buffer.alloc(4 + 4 * dims.length);
  h.writeUInt32BE(magic, 0);
  dims.forEach((d, i) => h.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([h, data]);
}
const images = (n: number, r: number, c: number, px: Uint8Array) => idx(0x803, [n, r, c], px);
const labels = (l: Uint8Array) => idx(0x801, [l.length], l);
function pattern(n: number): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = (i * 37 + 11) & 255;
  return a;
}
function file(name: string, data: Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, data);
  return p;
}

test('reads raw and gzipped IDX images and labels', () => {
  const px = pattern(3 * 4 * 5);
  const lb = Uint8Array.from([3, 0, 9]);
  for (const gz of [false, true]) {
    const enc = (b: Buffer) => (gz ? gzipSync(b) : b);
    const ip = file(`img${gz ? '.gz' : ''}`, enc(images(3, 4, 5, px)));
    const lp = file(`lbl${gz ? '.gz' : ''}`, enc(labels(lb)));
    const img = readIdxImages(ip);
    assert.equal(img.count, 3);
    assert.equal(img.rows, 4);
    assert.equal(img.cols, 5);
    assert.deepEqual([...img.pixels], [...px]);
    assert.ok(img.pixels.buffer instanceof SharedArrayBuffer);
    assert.deepEqual([...readIdxLabels(lp, 10)], [3, 0, 9]);
  }
});

test('corrupt IDX files give errors naming the file and the problem', () => {
  const px = pattern(60);
  const lblFile = file('t10k-labels-idx1-ubyte', labels(Uint8Array.from([1, 2, 3])));
  assert.throws(() => readIdxImages(lblFile), (e: Error) => e.message.includes(lblFile) && e.message.includes('expected magic 2051 (images), got 2049'));
  const imgFile = file('imgs', images(3, 4, 5, px));
  assert.throws(() => readIdxLabels(imgFile), /imgs: expected magic 2049 \(labels\), got 2051/);

  const trunc = file('trunc.gz', gzipSync(images(3, 4, 5, px.subarray(0, 59))));
  assert.throws(() => readIdxImages(trunc), (e: Error) => e.message.includes('trunc.gz') && e.message.includes('truncated: header says 3×4×5 = 60 bytes, file has 59'));
  const trailing = file('trailing', Buffer.concat([images(3, 4, 5, px), Buffer.from([0])]));
  assert.throws(() => readIdxImages(trailing), /trailing: trailing data: header says 3×4×5 = 60 bytes, file has 61/);
  const hdr = file('hdr', images(3, 4, 5, new Uint8Array(0)).subarray(0, 10));
  assert.throws(() => readIdxImages(hdr), /hdr: truncated header/);

  const empty = file('empty', new Uint8Array(0));
  assert.throws(() => readIdxImages(empty), /empty: file is empty/);
  assert.throws(() => readIdxLabels(empty), /empty: file is empty/);
  const zeroDims = file('zerodims', images(3, 0, 5, new Uint8Array(0)));
  assert.throws(() => readIdxImages(zeroDims), /zerodims: empty images: 3×0×5/);
  const wrongType = Buffer.from(images(3, 4, 5, px));
  wrongType[2] = 0x0d; // float32 type
  const wt = file('wrongtype', wrongType);
  assert.throws(() => readIdxImages(wt), /wrongtype: expected magic 2051 \(images\), got 3331/);
  const badGz = file('bad.gz', Buffer.concat([gzipSync(images(3, 4, 5, px)).subarray(0, 20)]));
  assert.throws(() => readIdxImages(badGz), /bad\.gz: corrupt gzip data/);
  const bigLabel = file('biglabel', labels(Uint8Array.from([1, 10])));
  assert.throws(() => readIdxLabels(bigLabel, 10), /biglabel: label 10 at index 1 is not < 10/);
  assert.deepEqual([...readIdxLabels(bigLabel)], [1, 10]); // no check without numClasses
  assert.throws(() => readIdxImages(join(dir, 'nope')), /nope: file not found/);
});

test('loadFashionMnist reads a synthetic folder (gz and raw names) and checks consistency', () => {
  const fm = join(dir, 'fm');
  const n = 7;
  const px = pattern(n * 28 * 28);
  const lb = Uint8Array.from([0, 1, 2, 3, 4, 5, 9]);
  rmSync(fm, { recursive: true, force: true });
  assert.throws(() => loadFashionMnist(fm, 'test'), (e: Error) => e.message.includes('apt-get install dataset-fashion-mnist') && e.message.includes('mnv2 data fetch fashion-mnist'));
  mkdirp(fm);
  writeFileSync(join(fm, 't10k-images-idx3-ubyte.gz'), gzipSync(images(n, 28, 28, px)));
  assert.throws(() => loadFashionMnist(fm, 'test'), /t10k-labels-idx1-ubyte\(\.gz\) not found .*apt-get install dataset-fashion-mnist/);
  writeFileSync(join(fm, 't10k-labels-idx1-ubyte'), labels(lb)); // un-gzipped name
  const ds = loadFashionMnist(fm, 'test');
  assert.equal(ds.name, 'fashion-mnist-test');
  assert.equal(ds.count, n);
  assert.deepEqual([ds.channels, ds.height, ds.width], [1, 28, 28]);
  assert.deepEqual([...ds.images], [...px]);
  assert.deepEqual([...ds.labels], [...lb]);
  assert.deepEqual(ds.classes, FASHION_MNIST_CLASSES);

  writeFileSync(join(fm, 't10k-labels-idx1-ubyte'), labels(lb.subarray(0, 6)));
  assert.throws(() => loadFashionMnist(fm, 'test'), /6 labels but .* has 7 images/);
  writeFileSync(join(fm, 't10k-images-idx3-ubyte.gz'), gzipSync(images(n, 27, 28, pattern(n * 27 * 28))));
  assert.throws(() => loadFashionMnist(fm, 'test'), /t10k-images-idx3-ubyte\.gz: expected 28×28 images, got 27×28/);
});

function mkdirp(p: string): void {
  mkdirSync(p, { recursive: true });
}

test('real Fashion-MNIST test split (dataset-fashion-mnist package)', (t) => {
  if (!existsSync(join(FASHION_MNIST_DIR, 't10k-images-idx3-ubyte.gz'))) {
    t.skip(`${FASHION_MNIST_DIR} not present (apt-get install dataset-fashion-mnist)`);
    return;
  }
  const ds = loadFashionMnist(FASHION_MNIST_DIR, 'test');
  assert.equal(ds.count, 10000);
  assert.deepEqual([ds.channels, ds.height, ds.width], [1, 28, 28]);
  assert.equal(ds.images.length, 10000 * 784);
  const counts = new Array<number>(10).fill(0);
  for (const l of ds.labels) counts[l]!++;
  assert.deepEqual(counts, new Array(10).fill(1000));
  let max = 0;
  for (const v of ds.images) if (v > max) max = v;
  assert.equal(max, 255);
});

test('gzip bombs: inflation stops at the size the header declares; dimensions beyond the dataset are refused before inflating', () => {
  // 3x4x5 images declared, 256 MB of zeros after the header: a 250 KB file.
  const zeros = Buffer.alloc(1 << 20);
  const parts = [images(3, 4, 5, new Uint8Array(0)), ...Array.from({ length: 256 }, () => zeros)];
  const bomb = file('bomb.gz', gzipSync(Buffer.concat(parts), { level: 1 }));
  parts.length = 0;
  const rss0 = process.resourceUsage().maxRSS;
  assert.throws(() => readIdxImages(bomb), /bomb\.gz: trailing data: header says 3×4×5 = 60 bytes, the gzip stream inflates to more/);
  const grewMb = (process.resourceUsage().maxRSS - rss0) / 1024;
  assert.ok(grewMb < 64, `peak RSS grew by ${grewMb.toFixed(0)} MB while reading a 60-byte file`);

  // A header declaring 8.3 million Fashion-MNIST images (6.5 GB) with almost nothing behind it.
  const fm = join(dir, 'fm-bomb');
  mkdirp(fm);
  writeFileSync(join(fm, 'train-images-idx3-ubyte.gz'), gzipSync(images(8_300_000, 28, 28, pattern(100))));
  writeFileSync(join(fm, 'train-labels-idx1-ubyte.gz'), gzipSync(labels(new Uint8Array(10))));
  assert.throws(() => loadFashionMnist(fm, 'train'), /train-images-idx3-ubyte\.gz: 8300000 images, more than the 60000 of Fashion-MNIST's train split/);
  writeFileSync(join(fm, 'train-images-idx3-ubyte.gz'), gzipSync(images(10, 28, 28, pattern(10 * 784))));
  writeFileSync(join(fm, 'train-labels-idx1-ubyte.gz'), gzipSync(idx(0x801, [4_000_000_000], pattern(10))));
  assert.throws(() => loadFashionMnist(fm, 'train'), /train-labels-idx1-ubyte\.gz: 4000000000 labels, more than the 60000 of Fashion-MNIST's train split/);
});
