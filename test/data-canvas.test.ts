import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { canvasBatch, canvasConvention } from '../src/data/canvas.js';
import { resizeBilinearHwc } from '../src/data/augment.js';
import { FASHION_MNIST_INPUT, normalizationTables, type Dataset } from '../src/data/dataset.js';
import { FASHION_MNIST_DIR } from '../src/data/idx.js';
import { BatchLoader } from '../src/data/loader.js';
import { openDataset } from '../src/data/open.js';
import { preset } from '../src/data/preprocess.js';
import { resolvePreset } from '../src/train/presets.js';
import { Rng } from '../src/util/rng.js';

/** 28×28 greyscale "garments": pixel values never 0, so the drawn square is recognisable on the black frame. */
function garments(count: number): Dataset {
  const rng = new Rng(3);
  const images = new Uint8Array(count * 784);
  for (let i = 0; i < images.length; i++) images[i] = 1 + rng.int(255);
  return { name: 'garments', count, channels: 1, height: 28, width: 28, images, labels: new Uint8Array(count), classes: [...'0123456789'] };
}

const FRAME = 128;
const ds = garments(6);
const conv = canvasConvention(FASHION_MNIST_INPUT, ds, FRAME);
const black = normalizationTables(conv)[0]![0]!;

/** The drawn square of image n in a batch: its side and corner, found from the non-black pixels of channel 0. */
function drawnBox(out: Float32Array, n: number): { top: number; left: number; size: number } {
  let top = FRAME, left = FRAME, bottom = -1, right = -1;
  const base = n * 3 * FRAME * FRAME;
  for (let y = 0; y < FRAME; y++) for (let x = 0; x < FRAME; x++) {
    if (out[base + y * FRAME + x] === black) continue;
    top = Math.min(top, y); bottom = Math.max(bottom, y); left = Math.min(left, x); right = Math.max(right, x);
  }
  assert.equal(bottom - top, right - left, 'the garment is drawn as a square');
  return { top, left, size: bottom - top + 1 };
}

test("canvas convention: the frame is the model's resolution; garment sides are fashion-detect's 0.75-2x of 28 px, scaled from its 96-px canvas", () => {
  assert.equal(conv.pad, 50);
  assert.deepEqual(conv.canvas, { minSize: 28, maxSize: 75 });
  assert.throws(() => canvasConvention(FASHION_MNIST_INPUT, ds, 129), /garments's 28×28 images need a square frame larger by an even number of pixels; --resolution 129/);
  assert.throws(() => canvasConvention(FASHION_MNIST_INPUT, ds, 28), /--resolution 28 is not/);
});

test('canvas batch: each garment is the bilinear resize of its image, wholly inside the frame, on black; replicated to 3 channels', () => {
  const out = new Float32Array(ds.count * 3 * FRAME * FRAME);
  canvasBatch(ds, [0, 1, 2, 3, 4, 5], out, conv, new Rng(7));
  const lut = normalizationTables(conv)[0]!;
  const sizes = new Set<number>();
  for (let n = 0; n < ds.count; n++) {
    const { top, left, size } = drawnBox(out, n);
    sizes.add(size);
    assert.ok(size >= 28 && size <= 75 && top + size <= FRAME && left + size <= FRAME, `image ${n}: ${size} px at (${top}, ${left})`);
    const src = ds.images.subarray(n * 784, (n + 1) * 784);
    const plain = resizeBilinearHwc(src, 28, 28, 1, { top: 0, left: 0, height: 28, width: 28 }, size, size);
    const flipped = resizeBilinearHwc(src, 28, 28, 1, { top: 0, left: 0, height: 28, width: 28 }, size, size, true);
    const at = (y: number, x: number) => out[n * 3 * FRAME * FRAME + (top + y) * FRAME + left + x]!;
    const matches = (g: Uint8Array) => g.every((v, i) => at(Math.floor(i / size), i % size) === lut[v]);
    assert.ok(matches(plain) || matches(flipped), `image ${n}: the drawn pixels are its resized garment`);
    const plane = FRAME * FRAME;
    for (const c of [1, 2]) assert.deepEqual(out.subarray(n * 3 * plane + c * plane, n * 3 * plane + (c + 1) * plane), out.subarray(n * 3 * plane, n * 3 * plane + plane));
  }
  assert.ok(sizes.size > 1, 'sizes vary');
});

test('canvas batch: training draws new placements per batch; evaluation keeps one per image, whatever the batch', () => {
  const per = 3 * FRAME * FRAME;
  const a = new Float32Array(2 * per);
  const b = new Float32Array(2 * per);
  canvasBatch(ds, [0, 1], a, conv, new Rng(1));
  canvasBatch(ds, [0, 1], b, conv, new Rng(2));
  assert.notDeepEqual(a, b);
  const e1 = new Float32Array(2 * per);
  const e2 = new Float32Array(per);
  canvasBatch(ds, [4, 1], e1, conv);
  canvasBatch(ds, [1], e2, conv);
  assert.deepEqual(e1.subarray(per), e2, 'image 1 is drawn the same wherever it sits in a batch');
});

test('canvas through the loader: --augment canvas trains on random placements, the same convention evaluates at fixed ones', async () => {
  const train = new BatchLoader({ dataset: ds, batchSize: 3, augment: 'canvas', input: conv, seed: 1, worker: false });
  const evalLoader = new BatchLoader({ dataset: ds, batchSize: 3, shuffle: false, augment: 'none', input: conv, worker: false });
  const firstBatch = async (l: BatchLoader, epoch: number) => {
    for await (const b of l.epoch(epoch)) return b;
    throw new Error('no batch');
  };
  const [t0, t1] = [await firstBatch(train, 0), await firstBatch(train, 1)];
  assert.equal(t0.input.length, 3 * 3 * FRAME * FRAME);
  assert.notDeepEqual(t0.input, t1.input);
  const direct = new Float32Array(3 * 3 * FRAME * FRAME);
  canvasBatch(ds, [0, 1, 2], direct, conv);
  assert.deepEqual((await firstBatch(evalLoader, 0)).input, direct);
  await Promise.all([train.close(), evalLoader.close()]);
  assert.throws(() => new BatchLoader({ dataset: ds, batchSize: 3, augment: 'canvas', worker: false }), /augment 'canvas' needs an input convention with a canvas/);
  assert.throws(() => resolvePreset('seed-cifar10', { augment: 'canvas' }), /--augment canvas draws Fashion-MNIST garments on a frame; the dataset is cifar10/);
});

test("fashion-mnist-canvas models: the dataset opens on their frame, and a photo's garment is centred at the middle size", async (t) => {
  const p = preset('fashion-mnist-canvas', 128);
  assert.deepEqual([p.size, p.pad, p.greyscale, p.background], [128, 38, true, 'black'], 'sides 28..75 on a 128 frame: 52 px, centred');
  assert.equal(129 - 2 * preset('fashion-mnist-canvas', 129).pad!, 51, 'an odd frame takes the garment a pixel smaller');
  if (!existsSync(FASHION_MNIST_DIR)) return t.skip(`needs Debian's dataset-fashion-mnist (${FASHION_MNIST_DIR})`);
  const src = await openDataset('fashion-mnist', 'test', { preprocess: 'fashion-mnist-canvas', resolution: 128 });
  assert.equal(src.preprocess, 'fashion-mnist-canvas');
  assert.deepEqual([src.input.pad, src.input.canvas], [50, { minSize: 28, maxSize: 75 }]);
  assert.equal((await openDataset('fashion-mnist', 'test')).input.canvas, undefined);
});
