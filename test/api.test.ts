/**
 * The library API (src/api): load() → classify / embed on both engines, every kind of image input, and the
 * native engine's worker-thread forward keeping the event loop free.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { load, type Model } from '../src/api/load.js';
import { imageTensor } from '../src/api/image-input.js';
import { preset } from '../src/data/preprocess.js';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { initWeights } from '../src/model/weights.js';
import { NativeModel } from '../src/engine/native/model.js';
import { FASHION_MNIST_LABELS } from '../src/data/labels.js';
import { maxAbs, maxAbsDiff } from './helpers/fixtures.js';

const SHARED = path.resolve('..', 'shared', 'data', 'imagenet');
const PHOTOS = path.join(SHARED, 'photos');
const TV_WEIGHTS = path.join(SHARED, 'weights', 'mobilenet_v2_imagenet_torchvision_qat_dequantized.safetensors');
const noShared = existsSync(path.join(PHOTOS, 'labels.json')) && existsSync(TV_WEIGHTS) ? false : `${SHARED} is absent (real ImageNet weights and photos)`;

interface PhotoLabel { file: string; label: number; accept: number[] }
const photos = (): PhotoLabel[] => (JSON.parse(readFileSync(path.join(PHOTOS, 'labels.json'), 'utf8')) as { images: PhotoLabel[] }).images;

describe('load() with real ImageNet weights (a torchvision state dict without metadata)', { skip: noShared }, () => {
  for (const engine of ['native', 'ort'] as const) {
    it(`${engine}: classify puts all 14 photos in their accepted classes; preset and labels come with the weights`, async () => {
      const model = await load({ weights: TV_WEIGHTS, engine });
      try {
        assert.equal(model.engine, engine);
        assert.equal(model.preprocess.name, 'torchvision');
        assert.equal(model.preprocess.size, 224);
        assert.equal(model.labels?.length, 1000);
        const wrong: string[] = [];
        for (const p of photos()) {
          const top = await model.classify(path.join(PHOTOS, p.file), { topk: 3 });
          assert.equal(top.length, 3);
          assert.ok(top[0]!.probability >= top[1]!.probability && top[1]!.probability >= top[2]!.probability);
          assert.equal(top[0]!.className, model.labels![top[0]!.index]);
          if (!p.accept.includes(top[0]!.index)) wrong.push(`${p.file}: ${top[0]!.className} (${top[0]!.index})`);
        }
        assert.deepEqual(wrong, []);
      } finally {
        await model.dispose();
      }
    });
  }

  it('embed: 1280 pooled features, equal on both engines, and the classifier on them gives the logits', async () => {
    const native = await load({ weights: TV_WEIGHTS, engine: 'native' });
    const ort = await load({ weights: TV_WEIGHTS, engine: 'ort' });
    try {
      const file = path.join(PHOTOS, 'samoyed_pytorch_hub_dog.jpg');
      const a = await native.embed(file);
      const b = await ort.embed(file); // the ONNX graph's GlobalAveragePool output
      assert.equal(native.embeddingSize, 1280);
      assert.equal(a.length, 1280);
      assert.ok(maxAbsDiff(a, b) <= 1e-4 * maxAbs(b), `native vs ONNX pool output: ${maxAbsDiff(a, b)} (max ${maxAbs(b)})`);
      assert.ok(a.every((v) => v >= 0), 'features after ReLU6 are non-negative');
      // logits = W · features + b with the file's classifier.
      const { loadWeights } = await import('../src/io/weights.js');
      const w = loadWeights(TV_WEIGHTS).weights;
      const W = w.get('classifier.1.weight')!;
      const bias = w.get('classifier.1.bias')!;
      const x = await imageTensor(file, native.preprocess);
      const { logits } = await native.forward(x, 1);
      const mine = Float32Array.from({ length: 1000 }, (_, o) => a.reduce((s, v, i) => s + v * W[o * 1280 + i]!, bias[o]!));
      assert.ok(maxAbsDiff(mine, logits) <= 1e-4 * maxAbs(logits), `classifier(features) vs logits: ${maxAbsDiff(mine, logits)}`);
    } finally {
      await native.dispose();
      await ort.dispose();
    }
  });
});

describe('load() defaults: the bundled Fashion-MNIST model', () => {
  let model: Model;
  const shirt = async (): Promise<Buffer> =>
    // A light shirt-like blob on black, 28x28 greyscale PNG.
    sharp(Buffer.from(Array.from({ length: 28 * 28 }, (_, i) => ((i % 28) > 6 && (i % 28) < 22 && i > 28 * 4 ? 200 : 0))), { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer();

  it('loads with its preset and the ten Fashion-MNIST class names', async () => {
    model = await load();
    assert.equal(model.preprocess.name, 'fashion-mnist');
    assert.deepEqual(model.labels, FASHION_MNIST_LABELS);
    assert.equal(model.embeddingSize, 1280);
  });

  it('a path, encoded bytes, raw grey/RGB/RGBA pixels and a sharp instance give the same input tensor and classes', async () => {
    const png = await shirt();
    const p = preset('fashion-mnist');
    const { data: rgb } = await sharp(png).toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    const rgba = await sharp(png).toColourspace('srgb').ensureAlpha().raw().toBuffer();
    const grey = await sharp(png).greyscale().raw().toBuffer();
    const ref = await imageTensor(png, p);
    const inputs = {
      'raw grey': { data: grey, width: 28, height: 28 },
      'raw RGB': { data: rgb, width: 28, height: 28, channels: 3 as const },
      'raw RGBA': { data: new Uint8ClampedArray(rgba), width: 28, height: 28 },
      'sharp instance': sharp(png),
      'Uint8Array bytes': new Uint8Array(png),
    };
    for (const [what, input] of Object.entries(inputs)) {
      const t = await imageTensor(input, p);
      assert.ok(maxAbsDiff(t, ref) === 0, `${what}: differs by ${maxAbsDiff(t, ref)}`);
    }
    const top = await model.classify(png, { topk: 10 });
    assert.equal(top.length, 10);
    const sum = top.reduce((s, c) => s + c.probability, 0);
    assert.ok(Math.abs(sum - 1) < 1e-5, `probabilities sum to ${sum}`);
    assert.deepEqual(await model.classify(inputs['sharp instance'], { topk: 10 }), top);
  });

  it("'imagenet' names the published weights of the catalogue for the width and resolution", async () => {
    const { imagenetWeightsName } = await import('../src/api/load.js');
    assert.equal(imagenetWeightsName(), 'torchvision/IMAGENET1K_V1');
    assert.equal(imagenetWeightsName(0.35, 96), 'keras/mobilenet_v2_0.35_96');
    assert.equal(imagenetWeightsName(1, 192), 'keras/mobilenet_v2_1.0_192');
    assert.throws(() => imagenetWeightsName(0.6, 224), /no pretrained ImageNet MobileNetV2 at alpha 0.6, 224px/);
  });

  it('bad input names the problem', async () => {
    await assert.rejects(model.classify({ data: new Uint8Array(10), width: 3, height: 3 }), /raw image: 10 bytes do not make 3x3 pixels/);
    await assert.rejects(model.classify('/nonexistent/cat.jpg'), /could not read image '\/nonexistent\/cat.jpg'/);
    await assert.rejects(model.classify(new Uint8Array([1, 2, 3])), /could not read image 'buffer'/);
    await assert.rejects(model.classify(Buffer.alloc(0)), /empty/);
    await assert.rejects(model.classify('x.png', { topk: 0 }), /topk must be a positive integer/);
    await assert.rejects(load({ weights: '/nonexistent.safetensors' }), /no such weights file/);
    await assert.rejects(load({ weights: 'no-such-name' }), /no-such-name: no such weights file, and not a name/);
    await model.dispose();
  });
});

describe('native forward() on a worker thread', () => {
  const graph = mobilenetV2('imagenet', { alpha: 1, resolution: 224, numClasses: 1000 });
  const m = new NativeModel(graph, initWeights(graph, 3));
  const batch = 8;
  const x = Float32Array.from({ length: batch * 3 * 224 * 224 }, (_, i) => Math.sin(i * 0.001));

  it('a timer keeps firing while a batch runs, and the logits equal the synchronous predict', async () => {
    const sync = m.predict(x, batch);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      const before = ticks;
      const t = Date.now();
      m.predict(x, batch); // blocks the event loop: no tick can run
      const blockedMs = Date.now() - t;
      assert.equal(ticks, before, `sync predict (${blockedMs} ms) let the timer fire`);
      const { logits, features } = await m.forward(x, batch);
      assert.ok(ticks - before >= 2, `only ${ticks - before} timer ticks during a ${blockedMs} ms batch on the worker thread`);
      assert.deepEqual(logits, sync);
      assert.equal(features.length, batch * 1280);
    } finally {
      clearInterval(timer);
    }
  });

  it('while a forward() is in flight the synchronous methods refuse instead of racing on its buffers', async () => {
    const run = m.forward(x, batch);
    assert.throws(() => m.predict(x, batch), /forward\(\) is queued or running/);
    assert.throws(() => m.loadStateDict(m.weights), /forward\(\) is queued or running/);
    const [a, b] = await Promise.all([run, m.forward(x, batch)]);
    assert.deepEqual(a.logits, b.logits);
    assert.deepEqual(m.predict(x, batch), a.logits);
    await assert.rejects(m.forward(new Float32Array(5), 1), /input has 5 values/);
  });
});
