import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { preset, loadImage, loadImages, normalizeHWC, PRESET_NAMES, type Preset } from '../src/data/preprocess.js';
import { IMAGENET_LABELS, CIFAR10_LABELS, FASHION_MNIST_LABELS, labelsFor } from '../src/data/labels.js';

let dir = '';
const f = (name: string): string => join(dir, name);

async function solid(name: string, w: number, h: number, rgb: [number, number, number], fmt: 'png' | 'jpeg'): Promise<string> {
  const img = sharp({ create: { width: w, height: h, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } });
  await (fmt === 'png' ? img.png() : img.jpeg({ quality: 100, chromaSubsampling: '4:4:4' })).toFile(f(name));
  return f(name);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mnv2-preprocess-'));
  await solid('red.png', 300, 200, [255, 0, 0], 'png');
  await solid('red.jpg', 300, 200, [255, 0, 0], 'jpeg');
  await solid('grey.png', 50, 80, [128, 128, 128], 'png');
  await solid('white.jpg', 40, 40, [255, 255, 255], 'jpeg');
  // Left half black, right half white (wide image; crop must keep the center).
  const w = 400;
  const h = 200;
  const halves = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = w / 2; x < w; x++) halves.fill(255, (y * w + x) * 3, (y * w + x) * 3 + 3);
  await sharp(halves, { raw: { width: w, height: h, channels: 3 } }).png().toFile(f('halves.png'));
  // Horizontal gradient 0..255 (256 wide), to check geometry of direct resizes.
  const g = Buffer.alloc(256 * 16 * 3);
  for (let y = 0; y < 16; y++) for (let x = 0; x < 256; x++) g.fill(x, (y * 256 + x) * 3, (y * 256 + x) * 3 + 3);
  await sharp(g, { raw: { width: 256, height: 16, channels: 3 } }).png().toFile(f('gradient.png'));
  // Transparent RGBA image.
  await sharp({ create: { width: 20, height: 20, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
    .png()
    .toFile(f('transparent.png'));
  // Error cases.
  await writeFile(f('empty.png'), Buffer.alloc(0));
  await writeFile(f('notes.png'), 'this is not an image\n');
  const noise = Buffer.alloc(128 * 128 * 3);
  for (let i = 0; i < noise.length; i++) noise[i] = (i * 7919) % 251;
  const png = await sharp(noise, { raw: { width: 128, height: 128, channels: 3 } }).png({ compressionLevel: 0 }).toBuffer();
  await writeFile(f('truncated.png'), png.subarray(0, png.length >> 1));
  const jpg = await sharp(noise, { raw: { width: 128, height: 128, channels: 3 } }).jpeg().toBuffer();
  await writeFile(f('truncated.jpg'), jpg.subarray(0, jpg.length >> 1));
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function approx(actual: number, expected: number, tol = 1e-5, what = ''): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what} expected ${expected}, got ${actual}`);
}

/** Every element of channel c equals value. */
function assertPlane(t: Float32Array, p: Preset, c: number, value: number, tol = 1e-5): void {
  const plane = p.size * p.size;
  for (let i = 0; i < plane; i++) approx(t[c * plane + i]!, value, tol, `channel ${c} index ${i}:`);
}

test('preset(): defaults, resolution rule and unknown names', () => {
  const tv = preset('torchvision');
  assert.equal(tv.size, 224);
  assert.equal(tv.resize, 256);
  assert.deepEqual(tv.mean, [0.485, 0.456, 0.406]);
  assert.deepEqual(tv.std, [0.229, 0.224, 0.225]);
  assert.equal(preset('torchvision', 160).resize, Math.round((160 * 256) / 224));
  assert.equal(preset('keras', 192).size, 192);
  assert.equal(preset('keras', 192).resize, 219);
  assert.equal(preset('seed-cifar').size, 32);
  assert.equal(preset('fashion-mnist').size, 32);
  assert.equal(preset('fashion-mnist').pad, 2);
  assert.throws(() => preset('imagenet'), (e: Error) => {
    for (const n of PRESET_NAMES) assert.match(e.message, new RegExp(n));
    return /imagenet/.test(e.message);
  });
  assert.throws(() => preset('torchvision', 0), /resolution/);
  assert.throws(() => preset('torchvision', 22.5), /resolution/);
  assert.throws(() => preset('fashion-mnist', 64), /32/);
});

test('torchvision: solid red PNG and JPEG give exact normalized values', async () => {
  const p = preset('torchvision');
  for (const name of ['red.png', 'red.jpg']) {
    const t = await loadImage(f(name), p);
    assert.equal(t.length, 3 * 224 * 224);
    // JPEG at q100 4:4:4 may be off by a level or two from pure red.
    const tol = name.endsWith('.png') ? 1e-5 : 3 / 255 / 0.224;
    assertPlane(t, p, 0, (1 - 0.485) / 0.229, tol);
    assertPlane(t, p, 1, (0 - 0.456) / 0.224, tol);
    assertPlane(t, p, 2, (0 - 0.406) / 0.225, tol);
  }
});

test('keras: x/127.5 - 1', async () => {
  const p = preset('keras');
  const t = await loadImage(f('red.png'), p);
  assert.equal(t.length, 3 * 224 * 224);
  assertPlane(t, p, 0, 1);
  assertPlane(t, p, 1, -1);
  assertPlane(t, p, 2, -1);
  const g = await loadImage(f('grey.png'), p);
  for (let c = 0; c < 3; c++) assertPlane(g, p, c, 128 / 127.5 - 1);
});

test('keras at another resolution: length follows the resolution', async () => {
  const p = preset('keras', 96);
  const t = await loadImage(f('grey.png'), p);
  assert.equal(t.length, 3 * 96 * 96);
});

test('seed-cifar: direct resize to 32x32 with CIFAR-10 statistics', async () => {
  const p = preset('seed-cifar');
  const t = await loadImage(f('red.png'), p);
  assert.equal(t.length, 3 * 32 * 32);
  assertPlane(t, p, 0, (1 - 0.4914) / 0.2023);
  assertPlane(t, p, 1, (0 - 0.4822) / 0.1994);
  assertPlane(t, p, 2, (0 - 0.4465) / 0.201);
  // The gradient is squeezed horizontally, not cropped: left edge dark, right edge bright, monotone.
  const g = await loadImage(f('gradient.png'), p);
  const row = Array.from(g.subarray(16 * 32, 16 * 32 + 32)).map((v) => Math.round((v * 0.2023 + 0.4914) * 255));
  assert.ok(row[0]! < 10, `left ${row[0]}`);
  assert.ok(row[31]! > 245, `right ${row[31]}`);
  for (let x = 1; x < 32; x++) assert.ok(row[x]! >= row[x - 1]!, 'monotone');
});

test('fashion-mnist: 2 px black border, 28x28 content, 3 equal channels', async () => {
  const p = preset('fashion-mnist');
  const border = (0 - 0.286) / 0.353;
  for (const [name, level] of [
    ['grey.png', 128],
    ['white.jpg', 255],
    ['red.png', undefined],
  ] as const) {
    const t = await loadImage(f(name), p);
    assert.equal(t.length, 3 * 32 * 32);
    const plane = 32 * 32;
    for (let i = 0; i < plane; i++) {
      assert.equal(t[i], t[plane + i], `channels 0/1 differ at ${i}`);
      assert.equal(t[i], t[2 * plane + i], `channels 0/2 differ at ${i}`);
      const y = Math.floor(i / 32);
      const x = i % 32;
      const inBorder = x < 2 || x >= 30 || y < 2 || y >= 30;
      if (inBorder) approx(t[i]!, border, 1e-5, `${name} border (${x},${y})`);
      else if (level !== undefined) approx(t[i]!, (level / 255 - 0.286) / 0.353, 1e-5, `${name} content (${x},${y})`);
      else assert.ok(t[i]! > border, `${name} red is not black`);
    }
  }
});

test('fashion-mnist: invert option turns a white background black', async () => {
  const p = preset('fashion-mnist');
  const t = await loadImage(f('white.jpg'), p, { invert: true });
  assertPlane(t, p, 0, (0 - 0.286) / 0.353, 1e-5);
  const g = await loadImage(f('grey.png'), p, { invert: true });
  approx(g[16 * 32 + 16]!, (127 / 255 - 0.286) / 0.353, 1e-5, 'inverted grey');
});

test('alpha: flattened on white for RGB presets, on black for fashion-mnist', async () => {
  const rgb = preset('seed-cifar');
  const t = await loadImage(f('transparent.png'), rgb);
  assertPlane(t, rgb, 0, (1 - 0.4914) / 0.2023);
  const fm = preset('fashion-mnist');
  const g = await loadImage(f('transparent.png'), fm);
  assertPlane(g, fm, 0, (0 - 0.286) / 0.353);
});

test('torchvision center crop keeps the center of the image', async () => {
  // 400x200 (left black | right white) -> 512x256 -> crop 224 centered on the boundary.
  const p = preset('torchvision');
  const t = await loadImage(f('halves.png'), p);
  const black = (0 - 0.485) / 0.229;
  const white = (1 - 0.485) / 0.229;
  const row = t.subarray(112 * 224, 113 * 224);
  approx(row[0]!, black, 1e-5, 'left edge');
  approx(row[100]!, black, 1e-5, 'left of center');
  approx(row[123]!, white, 1e-5, 'right of center');
  approx(row[223]!, white, 1e-5, 'right edge');
  // The transition sits in the middle of the crop.
  let firstBright = -1;
  for (let x = 0; x < 224; x++) {
    if (row[x]! > 0) {
      firstBright = x;
      break;
    }
  }
  assert.ok(firstBright >= 110 && firstBright <= 114, `boundary at ${firstBright}`);
});

test('loadImages stacks NCHW in order', async () => {
  const p = preset('seed-cifar');
  const paths = [f('red.png'), f('grey.png'), f('red.png')];
  const batch = await loadImages(paths, p);
  const per = 3 * 32 * 32;
  assert.equal(batch.length, 3 * per);
  for (let i = 0; i < paths.length; i++) {
    assert.deepEqual(batch.subarray(i * per, (i + 1) * per), await loadImage(paths[i]!, p));
  }
  assert.equal((await loadImages([], p)).length, 0);
  await assert.rejects(loadImages([f('red.png'), f('missing.png')], p), /missing\.png/);
});

test('normalizeHWC: pads small, crops large, replicates grey', () => {
  const p = preset('fashion-mnist');
  const px = new Uint8Array(28 * 28).fill(255);
  const t = normalizeHWC(px, 28, 28, 1, p);
  assert.equal(t.length, 3 * 32 * 32);
  approx(t[0]!, -0.286 / 0.353);
  approx(t[2 * 32 + 2]!, (1 - 0.286) / 0.353);
  approx(t[2 * 1024 + 29 * 32 + 29]!, (1 - 0.286) / 0.353);
  approx(t[2 * 1024 + 30 * 32 + 29]!, -0.286 / 0.353);
  // crop: 4x2 RGB image, 2x2 seed-cifar crop takes columns 1..2
  const q = { ...preset('seed-cifar', 2) };
  const img = new Uint8Array(4 * 2 * 3);
  for (let y = 0; y < 2; y++) for (let x = 0; x < 4; x++) img.fill(x * 60, (y * 4 + x) * 3, (y * 4 + x) * 3 + 3);
  const c = normalizeHWC(img, 4, 2, 3, q);
  approx(c[0]!, (60 / 255 - 0.4914) / 0.2023);
  approx(c[1]!, (120 / 255 - 0.4914) / 0.2023);
  assert.throws(() => normalizeHWC(new Uint8Array(5), 2, 2, 1, q), /expected/);
  assert.throws(() => normalizeHWC(new Uint8Array(16), 2, 2, 4, q), /channels/);
});

test('errors name the path and say the image could not be read', async () => {
  const p = preset('torchvision');
  for (const name of ['missing.png', 'empty.png', 'notes.png', 'truncated.png', 'truncated.jpg']) {
    const path = f(name);
    await assert.rejects(loadImage(path, p), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.ok(e.message.includes(path), `message should name the path: ${e.message}`);
      assert.match(e.message, /could not read image/);
      return true;
    });
  }
  // The truncated files really are prefixes of valid images (sanity check of the fixture).
  assert.ok((await readFile(f('truncated.png'))).length > 100);
});

test('label lists', () => {
  assert.equal(IMAGENET_LABELS.length, 1000);
  assert.equal(CIFAR10_LABELS.length, 10);
  assert.equal(FASHION_MNIST_LABELS.length, 10);
  assert.ok(IMAGENET_LABELS[0]!.startsWith('tench'));
  assert.ok(IMAGENET_LABELS[1]!.startsWith('goldfish'));
  assert.ok(IMAGENET_LABELS[999]!.startsWith('toilet tissue'));
  assert.ok(IMAGENET_LABELS[207]!.startsWith('golden retriever'));
  assert.ok(IMAGENET_LABELS.every((s) => typeof s === 'string' && s.length > 0));
  assert.equal(CIFAR10_LABELS[0], 'airplane');
  assert.equal(CIFAR10_LABELS[9], 'truck');
  assert.equal(FASHION_MNIST_LABELS[0], 'T-shirt/top');
  assert.equal(FASHION_MNIST_LABELS[9], 'Ankle boot');
  assert.equal(labelsFor('imagenet'), IMAGENET_LABELS);
  assert.equal(labelsFor('cifar10'), CIFAR10_LABELS);
  assert.equal(labelsFor('fashion-mnist'), FASHION_MNIST_LABELS);
  assert.throws(() => labelsFor('mnist' as never), /imagenet, cifar10, fashion-mnist/);
});

test('images that are devices, FIFOs or larger than maxBytes are refused at once (no unbounded read, no hang)', async () => {
  const fifo = f('fifo.png');
  execFileSync('mkfifo', [fifo]);
  const png = await solid('size.png', 64, 64, [10, 20, 30], 'png');
  const size = (await readFile(png)).length;
  // In a child process: before the fix /dev/zero grew memory without end and the FIFO blocked forever.
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  for (const [file, re] of [['/dev/zero', /could not read image '\/dev\/zero': \/dev\/zero: not a regular file \(a character device\)/], [fifo, /fifo\.png: not a regular file \(a FIFO\)/]] as const) {
    await assert.rejects(promisify(execFile)(process.execPath, [cli, 'predict', file], { timeout: 15_000 }), (e: { stderr: string; code: number | null; killed: boolean }) => {
      assert.equal(e.killed, false, `mnv2 predict ${file} still running after 15 s`);
      assert.equal(e.code, 1);
      assert.match(e.stderr, re);
      return true;
    });
  }
  await assert.rejects(loadImage(png, preset('seed-cifar'), { maxBytes: size - 1 }), new RegExp(`size\\.png: ${size} bytes, more than the ${size - 1} allowed`));
  assert.equal((await loadImage(png, preset('seed-cifar'), { maxBytes: size })).length, 3 * 32 * 32);
});
