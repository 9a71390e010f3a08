/**
 * `mnv2 diagnose` (src/diagnose) on the bundled Fashion-MNIST model: dead kernels against a recount from the
 * file's tensors, dead channels on 100 test images (the system Fashion-MNIST; skipped without it), the same
 * model with one filter zeroed and one channel's BN bias pushed far below zero (exactly those found dead), the
 * ONNX extra outputs the activations come from (the last one, pooled and fed to the classifier, gives the
 * logits), the CLI's JSON and heat map, and a detector diagnosed on a folder of photos.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { FASHION_MNIST_DIR } from '../src/data/idx.js';
import { diagnose, type Diagnosis } from '../src/diagnose/dead.js';
import { testSample } from '../src/diagnose/sample.js';
import { exportOnnx, ONNX_INPUT, ONNX_OUTPUT } from '../src/engine/onnx/export.js';
import { loadModelFile } from '../src/io/weights.js';
import type { ConvNode } from '../src/model/graph.js';
import { archConfig, buildModel } from '../src/model/registry.js';
import { initWeights } from '../src/model/weights.js';
import { saveWeights } from '../src/io/weights.js';
import { encodeModelInfo } from '../src/io/metadata.js';
import { fixturePath, maxAbs, maxAbsDiff } from './helpers/fixtures.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const MODEL = fileURLToPath(new URL('../../models/fashion-mnist/model.safetensors', import.meta.url));
const noData = existsSync(FASHION_MNIST_DIR) ? false : `Fashion-MNIST is not installed at ${FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)`;
const IMAGES = 100;
const tmp = mkdtempSync(path.join(tmpdir(), 'mnv2-diagnose-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const model = loadModelFile(MODEL);
const sample = () => testSample('fashion-mnist', { resolution: 32, preprocess: model.info.preprocess, limit: IMAGES, seed: 0, batch: 50 });

/** Dead filters of a conv, counted directly from the weight tensor: norm < fraction x median norm. */
function recount(conv: ConvNode, w: Float32Array, fraction: number): number {
  const per = w.length / conv.outC;
  const norms = Array.from({ length: conv.outC }, (_, o) => Math.hypot(...w.subarray(o * per, (o + 1) * per)));
  const s = [...norms].sort((a, b) => a - b);
  const median = s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return norms.filter((n) => n < fraction * median).length;
}

describe('diagnose: dead kernels', () => {
  it('the bundled model: 56 depthwise/pointwise convs, 17,512 filters, none below 1e-3 of its layer median; 4 below 0.5, as recounted', async () => {
    const d = await diagnose(model.graph, model.weights);
    assert.deepEqual([d.totals.layers, d.totals.channels, d.totals.deadKernels, d.images], [56, 17_512, 0, 0]);
    assert.equal(d.layers.filter((l) => l.kind === 'depthwise').length, 17);
    const half = await diagnose(model.graph, model.weights, { kernelFraction: 0.5 });
    const convs = new Map(model.graph.nodes.filter((n): n is ConvNode => n.op === 'conv').map((n) => [n.name, n]));
    for (const l of half.layers) assert.equal(l.deadKernels, recount(convs.get(l.layer)!, model.weights.get(`${l.layer}.weight`)!, 0.5), l.layer);
    assert.deepEqual(half.layers.filter((l) => l.deadKernels).map((l) => [l.layer, l.deadKernels]), [['layers.1.conv2', 2], ['layers.2.conv2', 1], ['layers.3.conv2', 1]]);
  });

  it('MobileNetV1 (the α 0.25 fixture): its 13 depthwise and 13 pointwise convs, each followed by a ReLU6', async () => {
    const v1 = loadModelFile(fixturePath('v1-0.25.weights.safetensors'));
    const d = await diagnose(v1.graph, v1.weights);
    assert.deepEqual([d.layers.filter((l) => l.kind === 'depthwise').length, d.layers.filter((l) => l.kind === 'pointwise').length], [13, 13]);
    assert.ok(d.layers.every((l) => l.activation === `${l.layer.replace(/0$/, '1')}.act`));
    // Depthwise: the pairs' inputs 8, 16, 32, 32, 64, 64, 6 x 128, 256; pointwise: their outputs 16, 32, 32, 64, 64, 6 x 128, 2 x 256.
    assert.equal(d.totals.channels, 1240 + 1488);
  });
});

describe('diagnose: dead channels', { skip: noData }, () => {
  let d: Diagnosis;

  it(`the bundled model on ${IMAGES} test images: no channel zero on >= 99 % of its values; the most-zero one 86.2 %`, async () => {
    d = await diagnose(model.graph, model.weights, { batches: (await sample()).batches });
    assert.deepEqual([d.images, d.totals.measuredChannels, d.totals.deadChannels], [IMAGES, 15_552, 0]);
    const shares = d.layers.flatMap((l) => l.zeroShares ?? []);
    assert.equal(Math.max(...shares).toFixed(4), '0.8616');
    // The linear projections (conv3, shortcut convs) have no activation to count zeros after.
    assert.equal(d.layers.filter((l) => l.zeroShares === null).length, 21);
  });

  it('a zeroed filter and a channel whose BN bias is -1000 are exactly the dead ones found', async () => {
    const w = new Map([...model.weights].map(([k, v]) => [k, Float32Array.from(v)]));
    // Filter 7 of a 144 -> 32 projection: no activation follows it, so no channel becomes constant.
    w.get('layers.3.conv3.weight')!.fill(0, 7 * 144, 8 * 144);
    w.get('layers.5.bn2.bias')![11] = -1000; // channel 11 after the depthwise conv of block 5
    const hit = await diagnose(model.graph, w, { batches: (await sample()).batches });
    const dead = (key: 'deadKernels' | 'deadChannels') => hit.layers.filter((l) => l[key]).map((l) => [l.layer, l[key]]);
    assert.deepEqual(dead('deadKernels'), [['layers.3.conv3', 1]]);
    assert.equal(hit.layers.find((l) => l.layer === 'layers.3.conv3')!.relativeNorms[7], 0);
    assert.deepEqual(dead('deadChannels'), [['layers.5.conv2', 1]]);
    assert.equal(hit.layers.find((l) => l.layer === 'layers.5.conv2')!.zeroShares![11], 1);
  });
});

describe('diagnose: activations are ONNX Runtime outputs of the export', () => {
  it('the last activation (bn2.act), averaged over space and fed to the linear layer, gives the logits (1e-5 relative)', async () => {
    const session = await ort.InferenceSession.create(exportOnnx(model.graph, model.weights, { extraOutputs: ['bn2.act'] }), { intraOpNumThreads: 1 });
    try {
      const x = Float32Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => Math.sin(i * 0.37));
      const out = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', x, [2, 3, 32, 32]) });
      const act = out['bn2.act']!;
      assert.deepEqual(act.dims, [2, 1280, 4, 4]);
      const a = act.data as Float32Array;
      const W = model.weights.get('linear.weight')!;
      const b = model.weights.get('linear.bias')!;
      const logits = new Float32Array(20);
      for (let n = 0; n < 2; n++) {
        for (let k = 0; k < 10; k++) {
          let s = b[k]!;
          for (let c = 0; c < 1280; c++) {
            let m = 0;
            for (let i = 0; i < 16; i++) m += a[(n * 1280 + c) * 16 + i]!;
            s += (W[k * 1280 + c]! * m) / 16;
          }
          logits[n * 10 + k] = s;
        }
      }
      const ref = out[ONNX_OUTPUT]!.data as Float32Array;
      assert.ok(maxAbsDiff(logits, ref) <= 1e-5 * maxAbs(ref), `max |diff| ${maxAbsDiff(logits, ref)}`);
    } finally {
      await session.release();
    }
    assert.throws(() => exportOnnx(model.graph, model.weights, { extraOutputs: ['layers.0.conv1'] }), /extra output layers\.0\.conv1 is not the output of a folded layer/);
  });
});

describe('mnv2 diagnose', { skip: noData }, () => {
  it('--json and --png: the numbers of the library call; one 4-pixel band per layer, one column per channel', async () => {
    const png = path.join(tmp, 'dead.png');
    const out = execFileSync(process.execPath, [CLI, 'diagnose', '--weights', MODEL, '--dataset', 'fashion-mnist', '--limit', String(IMAGES), '--json', '--png', png], { encoding: 'utf8' });
    const j = JSON.parse(out) as Diagnosis & { dataset: string };
    assert.equal(j.dataset, `fashion-mnist-test[${IMAGES}]`);
    assert.deepEqual(j.totals, { layers: 56, channels: 17_512, deadKernels: 0, measuredChannels: 15_552, deadChannels: 0 });
    const meta = await sharp(png).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 1280, 56 * 4]);
    const text = execFileSync(process.execPath, [CLI, 'diagnose', '--weights', MODEL], { encoding: 'utf8' });
    assert.match(text, /no --dataset: dead kernels only/);
    assert.match(text, /\ntotal\s+56 layers\s+17512\s+0 \(0\.0 %\)\s+-/);
  });
});

describe('diagnose: a detector on a folder of photos', () => {
  it('the channel whose BN bias is -1000 is dead; the sample is the folder\'s photos, preprocessed as detect does', async () => {
    const g = buildModel(archConfig('ssdlite', { resolution: 129, numClasses: 10, alpha: 0.35 }));
    const w = initWeights(g, 3);
    w.get('features.2.conv.1.1.bias')![5] = -1000; // channel 5 after the depthwise conv of block 2
    const file = path.join(tmp, 'detector.safetensors');
    saveWeights(file, g, w, new Map(), encodeModelInfo({ config: g.config }));
    const photos = path.join(tmp, 'photos');
    mkdirSync(photos);
    for (let i = 0; i < 3; i++) {
      const px = Uint8Array.from({ length: 96 * 80 * 3 }, (_, k) => (k * (7 + i) + i * 31) & 255);
      await sharp(px, { raw: { width: 96, height: 80, channels: 3 } }).png().toFile(path.join(photos, `p${i}.png`));
    }
    const d = JSON.parse(execFileSync(process.execPath, [CLI, 'diagnose', '--weights', file, '--dataset', photos, '--json'], { encoding: 'utf8' })) as Diagnosis & { dataset: string };
    assert.equal(d.dataset, photos);
    const layer = d.layers.find((l) => l.layer === 'features.2.conv.1.0')!;
    assert.equal(layer.zeroShares![5], 1);
    assert.ok((layer.deadChannels ?? 0) >= 1);
    assert.ok(d.layers.some((l) => l.layer.startsWith('head.classification_head')), 'the box predictors are diagnosed too');
    assert.throws(() => execFileSync(process.execPath, [CLI, 'diagnose', '--weights', file, '--dataset', photos, '--data', photos], { encoding: 'utf8', stdio: 'pipe' }),
      /a detector reads its photos from --dataset/);
  });
});
