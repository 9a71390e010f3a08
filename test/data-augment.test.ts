import assert from 'node:assert/strict';
import { test } from 'node:test';
import { randomResizedCrop, randomResizedCropBatch, randomResizedCropParams, resizeBilinearHwc, sampleCropFlip, seedAugmentBatch } from '../src/data/augment.js';
import {
  CIFAR10_INPUT, FASHION_MNIST_INPUT, inputShape, normalizeHwc, toModelInput, writeImage, normalizationTables,
  type Dataset, type InputConvention,
} from '../src/data/dataset.js';
import { Rng } from '../src/util/rng.js';

function randomDataset(name: string, count: number, c: number, h: number, w: number, seed = 1): Dataset {
  const rng = new Rng(seed);
  const images = new Uint8Array(count * c * h * w);
  for (let i = 0; i < images.length; i++) images[i] = 1 + rng.int(255); // never 0, so padding is recognisable
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) labels[i] = rng.int(10);
  return { name, count, channels: c, height: h, width: w, images, labels, classes: [...'0123456789'] };
}

const f32 = (x: number) => Math.fround(x);
/** torchvision's float32 ToTensor + Normalize of one raw value. */
const norm = (v: number, mean: number, std: number) => f32(f32(f32(v / 255) - f32(mean)) / f32(std));

/** Straightforward reference: pad canvas by P with raw 0, crop at (i, j), flip, normalize. */
function reference(ds: Dataset, idx: number, conv: InputConvention, P: number, i: number, j: number, flip: boolean): Float32Array {
  const { channels: oc, height: oh, width: ow } = inputShape(ds, conv);
  const out = new Float32Array(oc * oh * ow);
  const H = oh + 2 * P;
  const W = ow + 2 * P;
  for (let c = 0; c < oc; c++) {
    const sc = ds.channels === 1 ? 0 : c;
    const big = new Uint8Array(H * W); // raw canvas padded by conv.pad + P
    for (let y = 0; y < ds.height; y++)
      for (let x = 0; x < ds.width; x++)
        big[(y + conv.pad + P) * W + x + conv.pad + P] = ds.images[idx * ds.channels * ds.height * ds.width + sc * ds.height * ds.width + y * ds.width + x]!;
    const mean = conv.mean.length === 1 ? conv.mean[0]! : conv.mean[c]!;
    const std = conv.std.length === 1 ? conv.std[0]! : conv.std[c]!;
    for (let y = 0; y < oh; y++)
      for (let x = 0; x < ow; x++) {
        const cx = flip ? ow - 1 - x : x;
        out[c * oh * ow + y * ow + x] = norm(big[(y + i) * W + cx + j]!, mean, std);
      }
  }
  return out;
}

test('toModelInput: Fashion-MNIST convention pads 28→32 with raw 0, replicates to 3 channels, normalizes', () => {
  const ds = randomDataset('fashion-mnist-synth', 3, 1, 28, 28);
  const shape = inputShape(ds, FASHION_MNIST_INPUT);
  assert.deepEqual(shape, { channels: 3, height: 32, width: 32 });
  const out = new Float32Array(2 * 3 * 32 * 32);
  toModelInput(ds, [2, 0], out, FASHION_MNIST_INPUT);
  const padv = norm(0, 0.286, 0.353);
  assert.ok(Math.abs(padv - -0.8101983) < 1e-6);
  for (const [n, idx] of [[0, 2], [1, 0]] as const) {
    assert.deepEqual(out.subarray(n * 3072, (n + 1) * 3072), reference(ds, idx, FASHION_MNIST_INPUT, 0, 0, 0, false));
    for (let c = 0; c < 3; c++) {
      const o = n * 3072 + c * 1024;
      assert.equal(out[o], padv); // corner
      assert.equal(out[o + 1 * 32 + 31], padv);
      assert.equal(out[o + 2 * 32 + 2], norm(ds.images[idx * 784]!, 0.286, 0.353)); // first pixel at (2, 2)
      assert.equal(out[o + 29 * 32 + 29], norm(ds.images[idx * 784 + 27 * 28 + 27]!, 0.286, 0.353));
      assert.equal(out[o + 30 * 32 + 29], padv);
    }
  }
  assert.throws(() => toModelInput(ds, [3], out, FASHION_MNIST_INPUT), /index 3 out of range/);
  assert.throws(() => toModelInput(ds, [0, 1, 2], out, FASHION_MNIST_INPUT), /batch needs 9216/);
});

test('toModelInput: CIFAR per-channel normalization', () => {
  const ds = randomDataset('cifar10-synth', 2, 3, 32, 32);
  const out = new Float32Array(3072);
  toModelInput(ds, [1], out, CIFAR10_INPUT);
  assert.deepEqual(out, reference(ds, 1, CIFAR10_INPUT, 0, 0, 0, false));
  assert.equal(out[1024 + 5], norm(ds.images[3072 + 1024 + 5]!, 0.4822, 0.1994));
  const hwc = new Uint8Array(32 * 32 * 3);
  for (let p = 0; p < 1024; p++) for (let c = 0; c < 3; c++) hwc[p * 3 + c] = ds.images[3072 + c * 1024 + p]!;
  const out2 = new Float32Array(3072);
  normalizeHwc(hwc, 32, 32, 3, out2, 0, CIFAR10_INPUT);
  assert.deepEqual(out2, out);
});

test('writeImage: flip and crop offsets against hand-computed values', () => {
  // 1×2×3 image: [[1,2,3],[4,5,6]], identity-ish normalization (mean 0, std 1/255 → value = v).
  const src = Uint8Array.from([1, 2, 3, 4, 5, 6]);
  const tables = normalizationTables({ channels: 1, mean: [0], std: [1 / 255] });
  const out = new Float32Array(6);
  const run = (dy: number, dx: number, flip: boolean) => {
    writeImage(src, 0, 1, 2, 3, out, 0, 1, 0, tables, dy, dx, flip);
    return [...out].map((v) => Math.round(v));
  };
  assert.deepEqual(run(0, 0, false), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(run(0, 0, true), [3, 2, 1, 6, 5, 4]);
  assert.deepEqual(run(1, 0, false), [4, 5, 6, 0, 0, 0]);
  assert.deepEqual(run(-1, 1, false), [0, 0, 0, 2, 3, 0]);
  assert.deepEqual(run(0, -2, false), [0, 0, 1, 0, 0, 4]);
  assert.deepEqual(run(0, 1, true), [0, 3, 2, 0, 6, 5]); // crop shifted right, then flipped
  assert.deepEqual(run(0, 5, false), [0, 0, 0, 0, 0, 0]);
  assert.deepEqual(run(0, -5, true), [0, 0, 0, 0, 0, 0]);
});

test('seed augmentation equals pad-4 RandomCrop + HorizontalFlip reference, deterministically', () => {
  for (const [ds, conv] of [
    [randomDataset('fashion-mnist-synth', 40, 1, 28, 28, 3), FASHION_MNIST_INPUT],
    [randomDataset('cifar10-synth', 40, 3, 32, 32, 4), CIFAR10_INPUT],
  ] as const) {
    const idx = Array.from({ length: 40 }, (_, i) => (i * 7) % 40);
    const out = new Float32Array(40 * 3072);
    const rng = new Rng(123);
    const params = new Rng(rng.state()); // same stream, to recompute the draws
    seedAugmentBatch(ds, idx, out, conv, rng);
    const seen = new Set<string>();
    let flips = 0;
    for (let n = 0; n < idx.length; n++) {
      const i = params.int(9);
      const j = params.int(9);
      const flip = params.uniform() < 0.5;
      flips += flip ? 1 : 0;
      seen.add(`${i},${j}`);
      assert.deepEqual(out.subarray(n * 3072, (n + 1) * 3072), reference(ds, idx[n]!, conv, 4, i, j, flip), `image ${n}`);
    }
    assert.ok(flips > 5 && flips < 35, `flips ${flips}`);
    assert.ok(seen.size > 20);
    const again = new Float32Array(out.length);
    seedAugmentBatch(ds, idx, again, conv, new Rng(123));
    assert.deepEqual(again, out);
    const other = new Float32Array(out.length);
    seedAugmentBatch(ds, idx, other, conv, new Rng(124));
    assert.notDeepEqual(other, out);
  }
});

test('crop offsets cover -4..4 and padding values are (0 - mean) / std', () => {
  const rng = new Rng(9);
  const dys = new Set<number>();
  for (let k = 0; k < 2000; k++) {
    const p = sampleCropFlip(rng);
    assert.ok(p.dy >= -4 && p.dy <= 4 && p.dx >= -4 && p.dx <= 4);
    dys.add(p.dy);
  }
  assert.equal(dys.size, 9);
  // A CIFAR image shifted fully to the corner: top 4 rows are each channel's pad value.
  const ds = randomDataset('cifar10-synth', 1, 3, 32, 32);
  const out = new Float32Array(3072);
  writeImage(ds.images, 0, 3, 32, 32, out, 0, 3, 0, normalizationTables(CIFAR10_INPUT), -4, -4, false);
  for (let c = 0; c < 3; c++) {
    const padv = norm(0, CIFAR10_INPUT.mean[c]!, CIFAR10_INPUT.std[c]!);
    for (let y = 0; y < 4; y++) for (let x = 0; x < 32; x++) assert.equal(out[c * 1024 + y * 32 + x], padv);
    for (let y = 4; y < 32; y++) for (let x = 0; x < 4; x++) assert.equal(out[c * 1024 + y * 32 + x], padv);
    assert.equal(out[c * 1024 + 4 * 32 + 4], norm(ds.images[c * 1024]!, CIFAR10_INPUT.mean[c]!, CIFAR10_INPUT.std[c]!));
  }
});

test('RandomResizedCrop parameters follow torchvision (bounds, scale, fallback)', () => {
  const rng = new Rng(77);
  let fallbacks = 0;
  for (let k = 0; k < 2000; k++) {
    const b = randomResizedCropParams(rng, 60, 80);
    assert.ok(b.top >= 0 && b.left >= 0 && b.top + b.height <= 60 && b.left + b.width <= 80, JSON.stringify(b));
    const frac = (b.height * b.width) / 4800;
    if (b.height === 60 && b.width === 80) fallbacks++;
    else assert.ok(frac > 0.06 && frac < 1.05, `area fraction ${frac}`);
    const r = b.width / b.height;
    assert.ok(r > 0.6 && r < 1.6, `ratio ${r}`);
  }
  assert.ok(fallbacks < 50);
  // Impossible scale: every attempt fails → centre crop clamped to the ratio range.
  assert.deepEqual(randomResizedCropParams(new Rng(1), 10, 100, [2, 3]), { top: 0, left: 43, height: 10, width: 13 });
  assert.deepEqual(randomResizedCropParams(new Rng(1), 100, 10, [2, 3]), { top: 43, left: 0, height: 13, width: 10 });
  assert.deepEqual(randomResizedCropParams(new Rng(1), 40, 50, [2, 3]), { top: 0, left: 0, height: 40, width: 50 });
  // Deterministic
  assert.deepEqual(randomResizedCropParams(new Rng(8), 300, 200), randomResizedCropParams(new Rng(8), 300, 200));
});

test('bilinear resize (half-pixel centres) and randomResizedCrop output', () => {
  const row = Uint8Array.from([0, 255]);
  assert.deepEqual([...resizeBilinearHwc(row, 1, 2, 1, { top: 0, left: 0, height: 1, width: 2 }, 1, 4)], [0, 64, 191, 255]);
  assert.deepEqual([...resizeBilinearHwc(row, 1, 2, 1, { top: 0, left: 0, height: 1, width: 2 }, 1, 4, true)], [255, 191, 64, 0]);
  const rng = new Rng(3);
  const img = new Uint8Array(20 * 30 * 3);
  for (let i = 0; i < img.length; i++) img[i] = rng.int(256);
  // identity
  assert.deepEqual(resizeBilinearHwc(img, 20, 30, 3, { top: 0, left: 0, height: 20, width: 30 }, 20, 30), img);
  // crop without resize = plain copy of the box
  const box = { top: 3, left: 5, height: 10, width: 12 };
  const cropped = resizeBilinearHwc(img, 20, 30, 3, box, 10, 12);
  for (let y = 0; y < 10; y++) for (let x = 0; x < 12; x++) for (let c = 0; c < 3; c++)
    assert.equal(cropped[(y * 12 + x) * 3 + c], img[((y + 3) * 30 + x + 5) * 3 + c]);
  // constant image stays constant
  const flat = new Uint8Array(20 * 30 * 3).fill(77);
  assert.ok(randomResizedCrop(flat, 20, 30, 3, 16, new Rng(2)).every((v) => v === 77));
  const a = randomResizedCrop(img, 20, 30, 3, 16, new Rng(11));
  assert.equal(a.length, 16 * 16 * 3);
  assert.deepEqual(randomResizedCrop(img, 20, 30, 3, 16, new Rng(11)), a);
});

test('randomResizedCropBatch: deterministic per seed, keeps a per-channel constant image constant, CHW layout', () => {
  const c = 3, h = 24, w = 20;
  const flat: Dataset = { name: 'flat', count: 2, channels: c, height: h, width: w, images: new Uint8Array(2 * c * h * w), labels: new Uint8Array(2), classes: ['a', 'b'] };
  for (let n = 0; n < 2; n++) for (let ch = 0; ch < c; ch++) flat.images.fill(40 + 60 * ch + n, (n * c + ch) * h * w, (n * c + ch + 1) * h * w);
  const conv = { channels: 3, pad: 0, mean: [0, 0, 0], std: [1, 1, 1] };
  const out = new Float32Array(2 * c * h * w);
  randomResizedCropBatch(flat, [1, 0], out, conv, new Rng(3));
  for (let n = 0; n < 2; n++) {
    for (let ch = 0; ch < c; ch++) {
      const want = (40 + 60 * ch + (1 - n)) / 255;
      const plane = out.subarray((n * c + ch) * h * w, (n * c + ch + 1) * h * w);
      assert.ok(plane.every((v) => Math.abs(v - want) < 1e-6), `image ${n} channel ${ch}`);
    }
  }
  const ds = randomDataset('rrc', 6, 3, h, w);
  const a = new Float32Array(6 * c * h * w);
  const b = new Float32Array(6 * c * h * w);
  const d = new Float32Array(6 * c * h * w);
  randomResizedCropBatch(ds, [0, 1, 2, 3, 4, 5], a, conv, new Rng(9));
  randomResizedCropBatch(ds, [0, 1, 2, 3, 4, 5], b, conv, new Rng(9));
  randomResizedCropBatch(ds, [0, 1, 2, 3, 4, 5], d, conv, new Rng(10));
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, d);
  assert.throws(() => randomResizedCropBatch(ds, [6], a, conv, new Rng(1)), /index 6 out of range/);
});
