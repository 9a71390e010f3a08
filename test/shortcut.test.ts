/**
 * The Figure 6b ablation switch `shortcut` ('bottleneck' | 'expansion' | 'none'): where the adds go,
 * parameter counts, both engines against the float64 reference of the unfolded graph, a training step with a
 * gradient checked by central differences, and old files' `residual` flag.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { FASHION_MNIST_DIR } from '../src/data/idx.js';
import { loadModelFile } from '../src/io/weights.js';
import { readOnnxConfig } from '../src/engine/onnx/export.js';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { parseModelConfig, SHORTCUTS, type Arch, type ShortcutKind } from '../src/model/config.js';
import { summarize } from '../src/model/summary.js';
import { initWeights } from '../src/model/weights.js';
import { randomInput, randomWeights } from './helpers/random-model.js';
import type { AddNode } from '../src/model/graph.js';
import { NativeModel } from '../src/engine/native/model.js';
import { referenceForward } from './helpers/reference-forward.js';
import { assertEnginesMatch } from './helpers/engines.js';

const adds = (arch: Arch, shortcut: ShortcutKind): AddNode[] =>
  mobilenetV2(arch, { shortcut }).nodes.filter((n): n is AddNode => n.op === 'add');

describe('shortcut placement (Fig. 6b)', () => {
  it("imagenet 'expansion': block k's expanded tensor joins block k+1's after every block with stride 1 and in == out", () => {
    const g = mobilenetV2('imagenet', { shortcut: 'expansion' });
    const a = adds('imagenet', 'expansion');
    // 'bottleneck' adds in blocks 3, 5, 6, 8, 9, 10, 12, 13, 15, 16; the expanded tensors of those blocks
    // have the shape of the next block's (the same t, input channels and resolution).
    assert.deepEqual(a.map((n) => n.name), [4, 6, 7, 9, 10, 11, 13, 14, 16, 17].map((i) => `features.${i}.expand_add`));
    const byOutput = new Map(g.nodes.map((n) => [n.output, n]));
    for (const n of a) {
      // Both operands are expand activations (ReLU6 after a 1x1 conv + BN, or an earlier such sum), and the
      // sum feeds the block's depthwise conv.
      for (const v of n.inputs) assert.ok(['act', 'add'].includes(byOutput.get(v)!.op), `${n.name} input ${v}`);
      const dw = g.nodes.find((m) => m.inputs.includes(n.output))!;
      assert.ok(dw.op === 'conv' && dw.k === 3 && dw.groups === dw.inC, `${n.name} feeds ${dw.name}`);
    }
    const [c, h] = [g.nodes.find((m) => m.output === a[0]!.output)!.shape[0], a[0]!.shape[1]];
    assert.deepEqual([c, h], [144, 56], 'features.4: 6 x 24 channels at 56x56');
    assert.equal(adds('imagenet', 'bottleneck').length, 10);
    assert.equal(adds('imagenet', 'none').length, 0);
  });

  it("seed-cifar 'expansion': identity shortcuts between equal expanded tensors, no projections", () => {
    assert.deepEqual(adds('seed-cifar', 'expansion').map((n) => n.name.split('.')[1]), ['3', '5', '6', '8', '9', '10', '12', '13', '15', '16']);
    for (const s of ['expansion', 'none'] as const) {
      assert.ok(!mobilenetV2('seed-cifar', { shortcut: s }).params.some((p) => p.name.includes('shortcut')), s);
    }
    assert.equal(adds('seed-cifar', 'bottleneck').length, 14, 'every stride-1 block (4 of them with projections)');
  });

  it('parameter counts: identity shortcuts add none; the seed loses its 4 projections (59,152 parameters)', () => {
    const params = (arch: Arch, shortcut: ShortcutKind) => summarize(mobilenetV2(arch, { shortcut })).totals.params;
    for (const s of SHORTCUTS) assert.equal(params('imagenet', s), 3_504_872, `imagenet ${s}`);
    assert.equal(params('seed-cifar', 'bottleneck'), 2_296_922);
    // 32->16: 512 + 32, 16->24: 384 + 48, 64->96: 6144 + 192, 160->320: 51200 + 640 (1x1 conv + BN)
    assert.equal(params('seed-cifar', 'expansion'), 2_296_922 - 59_152);
    assert.equal(params('seed-cifar', 'none'), 2_296_922 - 59_152);
  });

  it("files from before `shortcut` keep their meaning: residual true is 'bottleneck', false is 'none'", () => {
    const base = { family: 'mobilenetv2', arch: 'imagenet', alpha: 1, resolution: 224, numClasses: 1000 };
    assert.equal(parseModelConfig({ ...base, residual: true }).shortcut, 'bottleneck');
    const c = parseModelConfig({ ...base, residual: false });
    assert.equal(c.shortcut, 'none');
    assert.ok(!('residual' in c));
    assert.throws(() => parseModelConfig({ ...base, shortcut: 'dense' }), /invalid model config: shortcut must be bottleneck, expansion, none, got dense/);
  });

  for (const [arch, resolution] of [['imagenet', 64], ['seed-cifar', 32]] as const) {
    for (const shortcut of SHORTCUTS) {
      it(`${arch} '${shortcut}': native and ONNX Runtime logits within 1e-4 x max|logit| of the float64 reference`, async (t) => {
        const g = mobilenetV2(arch, { shortcut, alpha: 0.35, resolution, numClasses: 10 });
        const weights = randomWeights(g, 5);
        const x = randomInput(g, 2, 9);
        const ref = Float32Array.from(referenceForward(g, weights, x, 2));
        await assertEnginesMatch(t, { graph: g, weights }, x, 2, ref, 1e-4);
      });
    }
  }

  it('the shortcut changes the function: the three variants give different logits from the same weights', (t) => {
    const x = randomInput(mobilenetV2('imagenet', { alpha: 0.35, resolution: 64 }), 1, 9);
    const logits = SHORTCUTS.map((shortcut) => {
      const g = mobilenetV2('imagenet', { shortcut, alpha: 0.35, resolution: 64, numClasses: 10 });
      return referenceForward(g, randomWeights(g, 5), x, 1);
    });
    for (const [i, j] of [[0, 1], [0, 2], [1, 2]] as const) {
      const d = Math.max(...logits[i]!.map((v, c) => Math.abs(v - logits[j]![c]!)));
      // the engines agree with the reference to ~1e-7 (above); the variants differ by 1000x more
      t.diagnostic(`${SHORTCUTS[i]} vs ${SHORTCUTS[j]}: max |diff| ${d.toExponential(2)}`);
      assert.ok(d > 1e-3, `${SHORTCUTS[i]} vs ${SHORTCUTS[j]}: max |diff| ${d}`);
    }
  });

  for (const arch of ['imagenet', 'seed-cifar'] as const) {
    for (const shortcut of SHORTCUTS) {
      it(`${arch} '${shortcut}': training steps give finite gradients to every parameter and lower the loss on a fixed batch`, (t) => {
        const g = mobilenetV2(arch, { shortcut, alpha: 0.35, resolution: 32, numClasses: 10, dropout: 0 });
        const m = new NativeModel(g, initWeights(g, 3), { threads: 1 });
        const x = randomInput(g, 8, 4);
        const labels = [1, 7, 3, 3, 0, 9, 2, 5];
        const step = (): number => m.trainStep(x, labels, 8).loss;
        const l0 = step();
        for (const p of g.params) {
          const gr = m.grads.get(p.name)!;
          assert.ok(gr.every(Number.isFinite) && gr.some((v) => v !== 0), `${p.name}: finite, not all zero`);
        }
        // The lowest loss of 8 steps: at lr 0.05 and batch 8 the loss jumps step to step (most without shortcuts),
        // so which step is lowest changes with float rounding (a 1e-6 change in one BN moves it).
        let l = l0;
        for (let s = 0; s < 8; s++) {
          for (const p of g.params) {
            const v = m.weights.get(p.name)!;
            const gr = m.grads.get(p.name)!;
            for (let j = 0; j < v.length; j++) v[j]! -= 0.05 * gr[j]!;
          }
          m.weightsChanged();
          l = Math.min(l, step());
        }
        t.diagnostic(`${arch} ${shortcut}: loss ${l0.toFixed(4)} -> lowest ${l.toFixed(4)}`);
        assert.ok(l < l0 - 0.1, `loss ${l0} -> lowest ${l}`);
      });
    }
  }

  it('mnv2 train --shortcut expansion: the model file and the ONNX export carry it; summary and train refuse it for MobileNetV1', { skip: existsSync(FASHION_MNIST_DIR) ? false : `${FASHION_MNIST_DIR} is absent`, timeout: 180_000 }, async () => {
    const tmp = mkdtempSync(path.join(tmpdir(), 'mnv2-shortcut-'));
    after(() => rmSync(tmp, { recursive: true, force: true }));
    const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const mnv2 = (...args: string[]) => promisify(execFile)(process.execPath, [cli, ...args]);
    const out = path.join(tmp, 'run');
    await mnv2('train', '--arch', 'imagenet', '--alpha', '0.35', '--resolution', '32', '--shortcut', 'expansion', '--batch', '16',
      '--train-limit', '32', '--eval-limit', '16', '--eval-batch', '16', '--epochs', '1', '--threads', '1', '--no-progress', '--out', out);
    const m = loadModelFile(path.join(out, 'model.safetensors'));
    assert.equal((m.graph.config as { shortcut?: string }).shortcut, 'expansion');
    assert.equal(m.graph.nodes.filter((n) => n.op === 'add').length, 10);
    assert.equal((readOnnxConfig(readFileSync(path.join(out, 'model.onnx')), 'model.onnx') as { shortcut?: string }).shortcut, 'expansion');
    for (const cmd of [['summary'], ['train', '--out', path.join(tmp, 'v1')]]) {
      await assert.rejects(mnv2(...cmd, '--arch', 'mobilenetv1', '--shortcut', 'none'), (e: Error & { stderr?: string }) => {
        assert.match(e.stderr ?? '', /mnv2: --shortcut applies to mobilenetv2 \(imagenet, seed-cifar\), not mobilenetv1/);
        return true;
      });
    }
  });
});
