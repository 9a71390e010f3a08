/**
 * Box-aware augmentation (src/detect/augment.ts): geometry on hand-built cases with exact box math, the
 * photometric operations against torchvision 0.14's functional ones (test/fixtures/augment.safetensors, from
 * tools/make-augment-fixtures.py), and the random transforms' invariants over many seeds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { get, loadFixture, maxAbsDiff } from './helpers/fixtures.js';
import {
  adjustBrightness, adjustContrast, adjustHue, adjustSaturation, cropTo, hflip, photometricDistort, randomIouCrop, randomZoomOut,
  ssdAugment, zoomOutTo, type ChwImage, type DetectionSample,
} from '../src/detect/augment.js';
import { iou } from '../src/detect/boxes.js';
import { Rng } from '../src/util/rng.js';

/** A C×H×W image whose pixel value encodes its position: c·10000 + y·100 + x. */
function ramp(channels: number, height: number, width: number): ChwImage {
  const data = new Float32Array(channels * height * width);
  for (let c = 0; c < channels; c++) for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[(c * height + y) * width + x] = c * 10000 + y * 100 + x;
  return { data, channels, height, width };
}

const px = (img: ChwImage, c: number, y: number, x: number): number => img.data[(c * img.height + y) * img.width + x]!;

test('hflip: pixel x goes to W−1−x, box [10, 20, 30, 40] on a 100 px wide image becomes [70, 20, 90, 40]; twice is the identity', () => {
  const s: DetectionSample = { image: ramp(2, 3, 100), boxes: Float32Array.of(10, 20, 30, 40, 0, 0, 100, 3), labels: [1, 2] };
  const f = hflip(s);
  assert.deepEqual(Array.from(f.boxes), [70, 20, 90, 40, 0, 0, 100, 3]);
  assert.equal(px(f.image, 1, 2, 0), px(s.image, 1, 2, 99));
  assert.equal(px(f.image, 0, 1, 37), 1 * 100 + 62);
  const ff = hflip(f);
  assert.deepEqual(ff.image.data, s.image.data);
  assert.deepEqual(ff.boxes, s.boxes);
  assert.deepEqual(ff.labels, [1, 2]);
  assert.equal(s.boxes[0], 10, 'the input is not changed');
});

test('cropTo: only boxes whose centre is strictly inside are kept, shifted and clipped to the crop; pixels are the window', () => {
  const s: DetectionSample = {
    image: ramp(3, 40, 50),
    // centres: (15, 15) inside; (5, 5) outside; (30, 22) inside, overhangs right and bottom; (10, 30) on the left edge.
    boxes: Float32Array.of(10, 10, 20, 20, 0, 0, 10, 10, 22, 12, 38, 32, 6, 26, 14, 34),
    labels: [1, 2, 3, 4],
  };
  const c = cropTo(s, { left: 10, top: 8, width: 24, height: 20 });
  assert.deepEqual(c.labels, [1, 3]);
  assert.deepEqual(Array.from(c.boxes), [0, 2, 10, 12, 12, 4, 24, 20]);
  assert.deepEqual([c.image.channels, c.image.height, c.image.width], [3, 20, 24]);
  assert.equal(px(c.image, 2, 0, 0), 20000 + 8 * 100 + 10);
  assert.equal(px(c.image, 1, 19, 23), 10000 + 27 * 100 + 33);
  assert.throws(() => cropTo(s, { left: 30, top: 0, width: 24, height: 10 }), /24×10 at \(30, 0\) is not an integer rectangle inside the 50×40 image/);
});

test('zoomOutTo: the image at (left, top) on a canvas of the fill, boxes shifted by (left, top)', () => {
  const s: DetectionSample = { image: ramp(3, 4, 5), boxes: Float32Array.of(1, 1, 4, 3), labels: [7] };
  const fill = [0.1, 0.2, 0.3];
  const z = zoomOutTo(s, { width: 12, height: 9, left: 3, top: 5 }, fill);
  assert.deepEqual(Array.from(z.boxes), [4, 6, 7, 8]);
  assert.deepEqual([z.image.height, z.image.width], [9, 12]);
  assert.equal(px(z.image, 2, 5 + 3, 3 + 4), px(s.image, 2, 3, 4));
  assert.equal(px(z.image, 0, 5, 3), 0);
  let fills = 0;
  for (let c = 0; c < 3; c++) for (let y = 0; y < 9; y++) for (let x = 0; x < 12; x++) {
    const inside = y >= 5 && x >= 3 && x < 8;
    if (!inside) {
      assert.equal(px(z.image, c, y, x), Math.fround(fill[c]!));
      fills++;
    }
  }
  assert.equal(fills, 3 * (9 * 12 - 4 * 5));
  assert.throws(() => zoomOutTo(s, { width: 6, height: 9, left: 3, top: 0 }, fill), /does not fit a 6×9 canvas/);
});

test('photometric operations = torchvision.transforms.functional (brightness, contrast, saturation, hue; greyscale contrast)', () => {
  const fx = loadFixture('augment.safetensors');
  const T = (k: string): Float32Array => get(fx.tensors, k);
  const img: ChwImage = { data: T('image'), channels: 3, height: 5, width: 7 };
  const cases: [string, ChwImage][] = [
    ['brightness_1.1', adjustBrightness(img, 1.1)],
    ['contrast_0.6', adjustContrast(img, 0.6)],
    ['contrast_1.4', adjustContrast(img, 1.4)],
    ['saturation_0.5', adjustSaturation(img, 0.5)],
    ['saturation_1.5', adjustSaturation(img, 1.5)],
    ['hue_0.05', adjustHue(img, 0.05)],
    ['hue_-0.3', adjustHue(img, -0.3)],
    ['grey_contrast_1.3', adjustContrast({ data: T('grey'), channels: 1, height: 4, width: 6 }, 1.3)],
  ];
  for (const [k, got] of cases) {
    const d = maxAbsDiff(got.data, T(k));
    assert.ok(d < 2e-6, `${k}: max |diff| ${d}`);
    assert.ok(maxAbsDiff(T(k), k.startsWith('grey') ? T('grey') : T('image')) > 0.01, `${k} changes the image`);
  }
  const grey: ChwImage = { data: T('grey'), channels: 1, height: 4, width: 6 };
  assert.equal(adjustHue(grey, 0.2), grey);
  assert.equal(adjustSaturation(grey, 0.2), grey);
});

test('randomIouCrop over 200 seeds: kept boxes had their centre in the crop, lie within it, and reach the chosen minimum IoU', () => {
  const image = ramp(1, 60, 80);
  const boxes = Float32Array.of(5, 5, 25, 30, 40, 10, 75, 50, 30, 35, 45, 58);
  const seen = new Set<number>();
  let uncropped = 0;
  for (let seed = 0; seed < 200; seed++) {
    const s = { image, boxes, labels: [1, 2, 3] };
    const { sample, crop } = randomIouCrop(s, new Rng(seed));
    assert.deepEqual(randomIouCrop(s, new Rng(seed)).crop, crop, 'same seed, same crop');
    if (!crop) {
      assert.equal(sample, s);
      uncropped++;
      continue;
    }
    seen.add(crop.minIou);
    assert.ok(crop.width >= Math.trunc(0.3 * 80) && crop.height >= Math.trunc(0.3 * 60));
    assert.ok(crop.width / crop.height >= 0.5 && crop.width / crop.height <= 2, `aspect ${crop.width}/${crop.height}`);
    assert.ok(sample.labels.length >= 1);
    const rect = Float32Array.of(crop.left, crop.top, crop.left + crop.width, crop.top + crop.height);
    const ious = sample.labels.map((l) => iou(boxes, l - 1, rect, 0));
    assert.ok(Math.max(...ious) >= crop.minIou, `seed ${seed}: IoU ${Math.max(...ious)} < ${crop.minIou}`);
    sample.labels.forEach((l, k) => {
      const o = boxes.subarray(4 * (l - 1), 4 * l);
      const [cx, cy] = [(o[0]! + o[2]!) / 2, (o[1]! + o[3]!) / 2];
      assert.ok(cx > crop.left && cx < crop.left + crop.width && cy > crop.top && cy < crop.top + crop.height);
      const b = sample.boxes.subarray(4 * k, 4 * k + 4);
      assert.deepEqual(Array.from(b), [
        Math.max(o[0]! - crop.left, 0), Math.max(o[1]! - crop.top, 0), Math.min(o[2]! - crop.left, crop.width), Math.min(o[3]! - crop.top, crop.height),
      ]);
    });
    assert.equal(sample.image.data[0], image.data[crop.top * 80 + crop.left]);
  }
  assert.ok(uncropped > 10 && uncropped < 60, `${uncropped} of 200 uncropped (choice 1 of 7)`);
  assert.ok(seen.size >= 5, `minimum IoUs seen: ${[...seen].join(', ')}`);
  const empty = { image, boxes: new Float32Array(0), labels: [] };
  assert.equal(randomIouCrop(empty, new Rng(0)).sample, empty, 'no boxes: no crop (and no endless search)');
});

test('randomZoomOut: canvas 1–4× the image, boxes shifted with it, the mean fill; photometricDistort keeps the size and [0, 1]', () => {
  let zoomed = 0;
  for (let seed = 0; seed < 50; seed++) {
    const s = { image: { data: new Float32Array(3 * 10 * 20).fill(0.9), channels: 3, height: 10, width: 20 }, boxes: Float32Array.of(2, 3, 12, 9), labels: [1] };
    const z = randomZoomOut(s, new Rng(seed));
    if (z === s) continue;
    zoomed++;
    const { width, height } = z.image;
    assert.ok(width >= 20 && width <= 80 && height >= 10 && height <= 40);
    assert.ok(Math.abs(width / 20 - height / 10) < 0.11, `one scale for both sides: ${width}×${height}`);
    const [dx, dy] = [z.boxes[0]! - 2, z.boxes[1]! - 3];
    assert.deepEqual(Array.from(z.boxes), [2 + dx, 3 + dy, 12 + dx, 9 + dy]);
    assert.equal(z.image.data[(0 * height + dy) * width + dx], Math.fround(0.9), 'the image starts at the box offset');
    if (dx > 0) assert.equal(z.image.data[2 * height * width], Math.fround(104 / 255));
  }
  assert.ok(zoomed > 15 && zoomed < 35, `${zoomed} of 50 zoomed (p 0.5)`);
  const img: ChwImage = { data: Float32Array.from({ length: 3 * 6 * 6 }, (_, i) => (i * 37 % 101) / 100), channels: 3, height: 6, width: 6 };
  let changed = 0;
  for (let seed = 0; seed < 20; seed++) {
    const d = photometricDistort(img, new Rng(seed));
    assert.equal(d.data.length, img.data.length);
    assert.ok(d.data.every((v) => v >= 0 && v <= 1));
    if (maxAbsDiff(d.data, img.data) > 0) changed++;
  }
  assert.ok(changed >= 18, `${changed} of 20 distorted (7 steps at p 0.5)`);
  assert.deepEqual(photometricDistort(img, new Rng(3), { p: 0 }).data, img.data, 'p 0: unchanged');
});

test('ssdAugment: deterministic per seed; boxes stay inside the image, labels follow their boxes', () => {
  const s = { image: ramp(3, 30, 40), boxes: Float32Array.of(4, 4, 16, 20, 20, 10, 38, 28), labels: [1, 2] };
  s.image.data.forEach((v, i) => (s.image.data[i] = (v % 100) / 100));
  for (let seed = 0; seed < 30; seed++) {
    const a = ssdAugment(s, new Rng(seed));
    const b = ssdAugment(s, new Rng(seed));
    assert.deepEqual(a, b);
    assert.ok(a.labels.length >= 1);
    for (let k = 0; k < a.boxes.length; k += 4) {
      assert.ok(a.boxes[k]! >= 0 && a.boxes[k + 2]! <= a.image.width && a.boxes[k + 1]! >= 0 && a.boxes[k + 3]! <= a.image.height);
      assert.ok(a.boxes[k + 2]! > a.boxes[k]! && a.boxes[k + 3]! > a.boxes[k + 1]!);
    }
  }
});
