/**
 * What a new user tripped on, each fixed: `eval` takes the model options, `export onnx` refuses to export random
 * weights unasked, `mnv2 --version`, a weights file of another kind names its format and the command that reads
 * it, `predict` with the bundled model says which model and which classes answered, and fine-tuning ImageNet-layout
 * weights on a small image folder (the README's example) gives a model whose folder names reach `predict` and
 * `export triton`.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { FASHION_MNIST_DIR } from '../src/data/idx.js';
import { CIFAR10_LABELS } from '../src/data/labels.js';
import { fixturePath } from './helpers/fixtures.js';
import { loadModelFile } from '../src/io/weights.js';
import { readOnnxInfo } from '../src/engine/onnx/export.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const mnv2 = (...args: string[]): Promise<{ stdout: string; stderr: string }> => run(process.execPath, [CLI, ...args], { maxBuffer: 1 << 24 });
const tmp = mkdtempSync(path.join(os.tmpdir(), 'mnv2-usability-'));
const noFmnist = existsSync(FASHION_MNIST_DIR) ? false : `${FASHION_MNIST_DIR} is absent`;

describe('mnv2 usability', () => {
  it('--version prints the package version', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal((await mnv2('--version')).stdout.trim(), pkg.version);
  });

  it('eval takes --engine, --labels and the arch options; both engines count the same correct images', { skip: noFmnist }, async () => {
    const json = async (...extra: string[]): Promise<{ correct: number; total: number }> =>
      JSON.parse((await mnv2('eval', '--dataset', 'fashion-mnist', '--limit', '300', '--json', ...extra)).stdout) as { correct: number; total: number };
    const native = await json('--engine', 'native');
    const ort = await json('--engine', 'ort');
    assert.equal(native.total, 300);
    assert.equal(ort.correct, native.correct);
    assert.ok(native.correct >= 270, `bundled model: ${native.correct}/300`); // 93.6 % on the full test set
    // A PyTorch state dict without metadata, told its arch and class count.
    const seed = await json('--weights', fixturePath('seed-cifar.weights.safetensors'), '--arch', 'seed-cifar', '--classes', '10', '--engine', 'ort');
    assert.equal(seed.total, 300);
    const full = JSON.parse((await mnv2('eval', '--dataset', 'fashion-mnist', '--limit', '50', '--full-json', '--labels', 'cifar10')).stdout) as { perClass: { name: string }[] };
    assert.deepEqual(full.perClass.map((c) => c.name), CIFAR10_LABELS);
  });

  it('export onnx without --weights stops instead of exporting random weights; --random-init asks for them', async () => {
    const out = path.join(tmp, 'random.onnx');
    await assert.rejects(mnv2('export', 'onnx', '--out', out), /no --weights given; pass --weights FILE, or --random-init/);
    assert.ok(!existsSync(out));
    await mnv2('export', 'onnx', '--random-init', '--alpha', '0.35', '--resolution', '96', '--classes', '10', '--out', out);
    assert.ok(readFileSync(out).length > 100_000);
  });

  it('a weights file of another kind names its format and the command that reads it', async () => {
    const onnx = path.join(tmp, 'random.onnx');
    const files: [string, Uint8Array, RegExp][] = [
      ['model.h5', Buffer.from('\x89HDF\r\n\x1a\n........', 'latin1'), /model\.h5: a Keras HDF5 file, not a weights file .*use mnv2 import keras/],
      ['m.tflite', Buffer.from('\x1c\x00\x00\x00TFL3\x00\x00\x00\x00', 'latin1'), /m\.tflite: a TFLite model, not a weights file .*mnv2 import tflite/],
      ['model.json', Buffer.from('{"modelTopology": {}}'), /model\.json: a TF\.js model\.json, not a weights file .*mnv2 import tfjs/],
    ];
    for (const [name, bytes, want] of files) {
      const f = path.join(tmp, name);
      writeFileSync(f, bytes);
      await assert.rejects(mnv2('predict', '--weights', f, 'x.png'), want, name);
    }
    if (existsSync(onnx)) await assert.rejects(mnv2('eval', '--weights', onnx, '--dataset', 'fashion-mnist'), /random\.onnx: an ONNX model \(an export, not a weights file\)/);
    // A truncated safetensors file still gets the safetensors error.
    const bad = path.join(tmp, 'bad.safetensors');
    writeFileSync(bad, Buffer.from([1, 2, 3]));
    await assert.rejects(mnv2('predict', '--weights', bad, 'x.png'), (e: Error) => /bad\.safetensors/.test(e.message) && !/not a weights file/.test(e.message));
  });

  it('predict with the bundled model names the model and its 10 classes before the answers', async () => {
    const img = path.join(tmp, 'photo.png');
    await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 200, g: 120, b: 40 } } }).png().toFile(img);
    const { stdout } = await mnv2('predict', img, '--top', '1');
    const lines = stdout.trim().split('\n');
    assert.match(lines[0]!, /^model: the bundled Fashion-MNIST model \(.*models\/fashion-mnist\/model\.safetensors, 28x28 greyscale garments\) on (native|ort), 10 classes: T-shirt\/top; Trouser; Pullover; Dress; Coat; Sandal; Shirt; Sneaker; Bag; Ankle boot$/);
    assert.match(lines[1]!, /every image gets one of these 10 classes; for ImageNet classes pass --weights/);
    assert.equal(lines[2], img);
    const json = await mnv2('predict', img, '--top', '1', '--json');
    assert.equal((JSON.parse(json.stdout) as unknown[]).length, 1); // stdout stays JSON
    assert.match(json.stderr, /^model: the bundled Fashion-MNIST model/);
  });
});

const TV_WEIGHTS = path.resolve('..', 'shared', 'data', 'imagenet', 'weights', 'mobilenet_v2_imagenet_torchvision_qat_dequantized.safetensors');

describe('fine-tuning ImageNet-layout weights on a small image folder (the README example)', () => {
  const folder = path.join(tmp, 'my-photos');
  const colours = { blue: { r: 20, g: 40, b: 220 }, red: { r: 220, g: 30, b: 20 } };
  // Flat colour with a fixed noise texture (image i), so the images of a class differ.
  const noisy = (c: { r: number; g: number; b: number }, i: number, file: string): Promise<unknown> => {
    const px = Buffer.alloc(120 * 100 * 3);
    for (let j = 0; j < px.length; j += 3) {
      const n = ((j * 7919 + i * 104729) % 61) - 30;
      px[j] = Math.max(0, Math.min(255, c.r + n));
      px[j + 1] = Math.max(0, Math.min(255, c.g + n));
      px[j + 2] = Math.max(0, Math.min(255, c.b + n));
    }
    return sharp(px, { raw: { width: 120, height: 100, channels: 3 } }).png().toFile(file);
  };
  before(async () => {
    // 6 images per class: fewer than 10, so the last of each is held out.
    for (const [name, c] of Object.entries(colours)) {
      mkdirSync(path.join(folder, name), { recursive: true });
      for (let i = 0; i < 6; i++) await noisy(c, i, path.join(folder, name, `${i}.png`));
    }
  });

  // Real ImageNet features (a randomly initialized backbone gives features too alike to learn from 10 images).
  it('train --replace-classifier --freeze-backbone, then predict and export triton answer with the folder names', { skip: existsSync(TV_WEIGHTS) ? false : `${TV_WEIGHTS} is absent` }, async () => {
    const out = path.join(tmp, 'run');
    const log = await mnv2('train', '--dataset', folder, '--weights', TV_WEIGHTS, '--replace-classifier', '2', '--freeze-backbone', '--epochs', '15', '--out', out, '--no-progress');
    assert.match(log.stdout + log.stderr, /10 training images .*2 validation images/);
    const model = path.join(out, 'model.safetensors');
    const probe = path.join(tmp, 'probe-red.png');
    await noisy(colours.red, 17, probe);
    const { stdout } = await mnv2('predict', '--weights', model, '--json', probe);
    const [r] = JSON.parse(stdout) as { top: { label: string; prob: number }[] }[];
    assert.deepEqual(r!.top.map((t) => t.label).sort(), ['blue', 'red']);
    assert.equal(r!.top[0]!.label, 'red');
    await mnv2('export', 'triton', path.join(tmp, 'repo'), '--weights', model);
    assert.equal(readFileSync(path.join(tmp, 'repo', 'mobilenetv2', 'labels.txt'), 'utf8'), 'blue\nred\n');
  });

  it('train --weights --resolution: the fine-tuned model and its export take that size; one the weights cannot take is refused', async () => {
    const out = path.join(tmp, 'run-64');
    await mnv2('train', '--dataset', folder, '--weights', fixturePath('tv-0.35-96.weights.safetensors'), '--resolution', '64',
      '--replace-classifier', '2', '--freeze-backbone', '--epochs', '1', '--out', out, '--no-progress');
    const m = loadModelFile(path.join(out, 'model.safetensors'));
    assert.deepEqual([m.graph.config.resolution, m.graph.inputShape, m.info.classes], [64, [3, 64, 64], ['blue', 'red']]);
    const onnx = readOnnxInfo(readFileSync(path.join(out, 'model.onnx')), 'model.onnx');
    assert.deepEqual([onnx.config.resolution, onnx.classes], [64, ['blue', 'red']]);
    for (const [weights, res, why] of [
      [fixturePath('seed-cifar.weights.safetensors'), '64', /--resolution 64 does not fit .*seed-cifar\.weights\.safetensors: invalid model config: seed-cifar resolution must be 32/],
      [fixturePath('tv-0.35-96.weights.safetensors'), '100', /--resolution 100 does not fit .*tv-0\.35-96\.weights\.safetensors: invalid model config: imagenet resolution must be a multiple of 32, got 100/],
    ] as const) {
      await assert.rejects(mnv2('train', '--dataset', folder, '--weights', weights, '--resolution', res,
        '--replace-classifier', '2', '--out', path.join(tmp, `run-bad-${res}`), '--no-progress'), (e: { code: number; stderr: string }) => {
        assert.equal(e.code, 1);
        assert.match(e.stderr, why);
        return true;
      });
    }
  });

  it('the bundled Fashion-MNIST model on a photo folder says why not and what to use', async () => {
    await assert.rejects(
      mnv2('train', '--dataset', folder, '--weights', path.resolve('models/fashion-mnist/model.safetensors'), '--replace-classifier', '2', '--freeze-backbone', '--out', path.join(tmp, 'run2')),
      /32x32 greyscale garments: fine-tune photos from ImageNet weights/,
    );
  });
});
