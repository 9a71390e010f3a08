/**
 * Non-finite numbers (issue 12, item 6): NaN/Inf weights and negative BN variances are refused at load with the
 * tensor named; both engines refuse a non-finite input with the same message (oneDNN's ReLUs would turn NaN
 * into 0 and answer confidently where ONNX Runtime answers NaN); a diverged training run stops with an error.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { initWeights } from '../src/model/weights.js';
import { loadWeights, saveWeights } from '../src/io/weights.js';
import { NativeModel } from '../src/engine/native/model.js';
import { OrtModel } from '../src/engine/onnx/session.js';
import { exportOnnx } from '../src/engine/onnx/export.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'mnv2-finite-'));
const graph = mobilenetV2('seed-cifar', { numClasses: 10 });

describe('non-finite weights are refused at load, naming the tensor', () => {
  const cases: [string, string, number, string][] = [
    ['NaN in conv1', 'conv1.weight', NaN, 'conv1\\.weight has NaN at index 5; NaN and Infinity are not accepted'],
    ['Infinity in a BN bias', 'bn1.bias', Infinity, 'bn1\\.bias has Infinity at index 5'],
    ['a negative running variance', 'layers.3.bn2.running_var', -0.5, 'layers\\.3\\.bn2\\.running_var has -0\\.5 at index 5; a variance cannot be negative'],
  ];
  cases.forEach(([what, name, v, detail], i) => {
    it(what, () => {
      const w = initWeights(graph, 1);
      w.get(name)![5] = v;
      const file = path.join(tmp, `bad-${i}.safetensors`);
      saveWeights(file, graph, w);
      assert.throws(() => loadWeights(file), new RegExp(`bad-${i}\\.safetensors: ${detail}`));
      assert.throws(() => new NativeModel(graph, w, { threads: 1 }), new RegExp(`weights: ${detail}`));
    });
  });
});

describe('a non-finite input is refused by both engines alike', () => {
  const w = initWeights(graph, 2);
  const input = new Float32Array(2 * 3 * 32 * 32).fill(0.5);
  for (const [what, v] of [['all NaN', NaN], ['one Infinity in image 1', Infinity]] as const) {
    it(what, async () => {
      const x = input.slice();
      if (Number.isNaN(v)) x.fill(v);
      else x[3 * 32 * 32 + 7] = v;
      const want = Number.isNaN(v) ? /input image 0 of the batch has NaN \(value 0\); the engines accept finite inputs only/
        : /input image 1 of the batch has Infinity \(value 7\)/;
      assert.throws(() => new NativeModel(graph, w, { threads: 1 }).predict(x, 2), want);
      const ort = await OrtModel.create(exportOnnx(graph, w), { threads: 1 });
      try {
        await assert.rejects(ort.run(x, 2), want);
      } finally {
        await ort.release();
      }
    });
  }
});

describe('a diverged training run stops with a clear error and a non-zero exit', () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const train = (...args: string[]) => promisify(execFile)(process.execPath, [cli, 'train', '--lr', '1e6', '--schedule', 'constant', '--batch', '16',
    '--train-limit', '64', '--eval-limit', '32', '--eval-batch', '32', '--epochs', '8', '--threads', '1', '--no-progress', '--no-onnx', ...args]);
  for (const [what, args] of [
    ['full training (alpha 0.35 @ 32)', ['--arch', 'imagenet', '--alpha', '0.35', '--resolution', '32']],
    ['head only (frozen backbone)', ['--weights', fileURLToPath(new URL('../../models/fashion-mnist/model.safetensors', import.meta.url)), '--freeze-backbone']],
  ] as const) {
    it(`--lr 1e6 (the largest --lr accepts), ${what}`, { timeout: 120_000 }, async () => {
      const out = path.join(tmp, what.replace(/\W+/g, '-'));
      await assert.rejects(train(...args, '--out', out), (e: Error & { code?: number; stderr?: string }) => {
        assert.equal(e.code, 1);
        assert.match(e.stderr ?? '', /mnv2: (loss is|parameter \S+ became) (NaN|-?Infinity) at epoch \d, step \d: training diverged \(try a lower --lr\)/);
        return true;
      });
    });
  }
});
