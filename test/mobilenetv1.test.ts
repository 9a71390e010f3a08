/**
 * MobileNetV1 (src/model/mobilenetv1.ts) against the PyTorch model of tools/mobilenet_v1.py: parameter and
 * multiply-add counts, state-dict names, eval logits of both variants and one training step on the native
 * engine (fixtures by tools/make-v1-fixtures.py), and the ONNX export on ONNX Runtime.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { totalMacs, totalParams, type Graph } from '../src/model/graph.js';
import { makeV1Config, mobilenetV1, mobilenetV1Family, type MobileNetV1Config, type V1Variant } from '../src/model/mobilenetv1.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { loadModelFile } from '../src/io/weights.js';
import { NativeModel } from '../src/engine/native/model.js';
import { OrtModel } from '../src/engine/onnx/session.js';
import { exportOnnx } from '../src/engine/onnx/export.js';
import { Rng } from '../src/util/rng.js';
import { fixturePath, get, loadFixture, maxAbs, maxAbsDiff, relL2 } from './helpers/fixtures.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const WEIGHTS = fixturePath('v1-0.25.weights.safetensors');
const io = loadFixture('v1-0.25.io.safetensors');
const VARIANTS: { tag: 'imagenet' | 'cifar'; arch: V1Variant; resolution: number }[] = [
  { tag: 'imagenet', arch: 'mobilenetv1', resolution: 64 },
  { tag: 'cifar', arch: 'mobilenetv1-cifar', resolution: 32 },
];
const fixtureModel = (arch: V1Variant, resolution: number): ReturnType<typeof loadModelFile> => loadModelFile(WEIGHTS, { arch, resolution });

describe('MobileNetV1 graph (Table 1)', () => {
  it('α 1.0 @ 224, 1000 classes: 4,231,976 parameters and 568,740,352 multiply-adds (the paper: 4.2M, 569M)', () => {
    const g = mobilenetV1('mobilenetv1');
    assert.equal(totalParams(g), 4_231_976);
    assert.equal(totalMacs(g), 568_740_352);
  });

  it('every (variant, α, resolution, classes) counted by PyTorch hooks in the fixture matches', () => {
    const counts = JSON.parse(io.metadata.counts!) as { variant: string; alpha: number; resolution: number; classes: number; params: number; macs: number }[];
    assert.equal(counts.length, 7);
    for (const c of counts) {
      const g = mobilenetV1(c.variant === 'cifar' ? 'mobilenetv1-cifar' : 'mobilenetv1', { alpha: c.alpha, resolution: c.resolution, numClasses: c.classes });
      assert.deepEqual([totalParams(g), totalMacs(g)], [c.params, c.macs], `${c.variant} α ${c.alpha} @ ${c.resolution}`);
    }
  });

  it('28 layers: a 3x3 conv, 13 depthwise + pointwise pairs each with BN + ReLU6, one linear; no shortcuts', () => {
    for (const arch of ['mobilenetv1', 'mobilenetv1-cifar'] as const) {
      const g = mobilenetV1(arch);
      const convs = g.nodes.filter((n) => n.op === 'conv');
      assert.equal(convs.length, 27);
      assert.equal(convs.filter((n) => n.op === 'conv' && n.groups === n.inC && n.k === 3).length, 13);
      assert.equal(convs.filter((n) => n.op === 'conv' && n.k === 1).length, 13);
      assert.equal(g.nodes.filter((n) => n.op === 'linear').length, 1);
      assert.equal(g.nodes.filter((n) => n.op === 'add').length, 0);
      // Each conv is followed by its BN and a ReLU6.
      for (const c of convs) {
        const i = g.nodes.indexOf(c);
        assert.deepEqual([g.nodes[i + 1]!.op, g.nodes[i + 2]!.op], ['bn', 'act'], c.name);
        assert.equal((g.nodes[i + 2] as { kind: string }).kind, 'relu6');
      }
      const last = convs.at(-1)!;
      assert.deepEqual(last.shape, arch === 'mobilenetv1' ? [1024, 7, 7] : [1024, 4, 4]);
    }
  });

  it('state-dict names and shapes are exactly those of the PyTorch model', () => {
    const file = readSafetensors(WEIGHTS);
    const g = mobilenetV1('mobilenetv1', { alpha: 0.25, numClasses: 10 });
    // Scalars (num_batches_tracked) compare as one element.
    const ours = new Map([...g.params, ...g.buffers].map((t) => [t.name, (t.shape.length ? t.shape : [1]).join()]));
    const theirs = new Map([...file.tensors].map(([k, t]) => [k, (t.shape.length ? t.shape : [1]).join()]));
    assert.deepEqual(ours, theirs);
    assert.equal(ours.size, 164);
  });

  it('summary --arch mobilenetv1 prints the totals', () => {
    const out = execFileSync(process.execPath, [CLI, 'summary', '--arch', 'mobilenetv1'], { encoding: 'utf8' });
    assert.match(out, /^MobileNetV1 mobilenetv1, alpha 1, 224x224x3, 1000 classes, relu6/);
    assert.match(out, /\ntotal\s+4,231,976\s+568,740,352\n\npeak activation memory: 802,816 elements/);
  });

  it('bad configs are rejected', () => {
    assert.throws(() => makeV1Config('mobilenetv1', { resolution: 100 }), /mobilenetv1 resolution must be a multiple of 32, got 100/);
    assert.throws(() => makeV1Config('mobilenetv1-cifar', { resolution: 30 }), /mobilenetv1-cifar resolution must be a multiple of 8, got 30/);
    assert.throws(() => makeV1Config('mobilenetv1', { alpha: 0.01 }), /alpha must be at least 1\/32, got 0.01/);
  });
});

describe('MobileNetV1 weights without metadata', () => {
  it('PyTorch keys are detected as mobilenetv1; α and classes come from the shapes; the default preprocessing is torchvision\'s', () => {
    const { graph } = loadModelFile(WEIGHTS);
    const c = graph.config as MobileNetV1Config;
    assert.deepEqual([c.family, c.variant, c.alpha, c.numClasses, c.resolution], ['mobilenetv1', 'mobilenetv1', 0.25, 10, 224]);
    assert.equal(mobilenetV1Family.defaultPreprocess(c), 'torchvision');
    assert.equal(mobilenetV1Family.defaultPreprocess(makeV1Config('mobilenetv1-cifar')), 'seed-cifar');
  });
});

describe('MobileNetV1 native engine vs PyTorch', () => {
  for (const v of VARIANTS) {
    it(`${v.arch} @ ${v.resolution}: eval logits within 1e-4 x max|logit|`, () => {
      const { graph, weights } = fixtureModel(v.arch, v.resolution);
      const ref = get(io.tensors, `eval.${v.tag}.logits`);
      const out = new NativeModel(graph, weights).predict(get(io.tensors, `eval.${v.tag}.input`), 2);
      const err = maxAbsDiff(out, ref);
      assert.ok(maxAbs(ref) > 0.01, `logits are not degenerate (max ${maxAbs(ref)})`);
      assert.ok(err <= 1e-4 * maxAbs(ref), `max abs error ${err} vs max|logit| ${maxAbs(ref)}`);
    });
  }

  describe('training step (mobilenetv1-cifar, batch 4)', () => {
    const { graph, weights } = fixtureModel('mobilenetv1-cifar', 32);
    const m = new NativeModel(graph, weights);
    const r = m.trainStep(get(io.tensors, 'train.input'), Array.from(get(io.tensors, 'train.labels')), 4, { inputGrad: true });

    it('logits within 1e-4 x max|logit|, loss within 1e-5', () => {
      const ref = get(io.tensors, 'train.logits');
      assert.ok(maxAbsDiff(r.logits, ref) <= 1e-4 * maxAbs(ref), `logits error ${maxAbsDiff(r.logits, ref)}`);
      assert.ok(Math.abs(r.loss - get(io.tensors, 'train.loss')[0]!) <= 1e-5, `loss ${r.loss} vs ${get(io.tensors, 'train.loss')[0]}`);
    });

    it('every parameter gradient and the input gradient within 1e-3 relative L2', () => {
      assert.equal(m.grads.size, graph.params.length);
      const bad: string[] = [];
      for (const [name, g] of m.grads) {
        const e = relL2(g, get(io.tensors, `grad.${name}`));
        if (!(e <= 1e-3)) bad.push(`${name}: relative L2 ${e.toExponential(2)}`);
      }
      assert.deepEqual(bad, []);
      const e = relL2(m.inputGrad(4), get(io.tensors, 'grad.input'));
      assert.ok(e <= 1e-3, `input gradient relative L2 ${e}`);
    });

    it('running statistics updated like PyTorch within 1e-5', () => {
      let worst = 0;
      let n = 0;
      for (const [k, v] of io.tensors) {
        if (!k.startsWith('running.')) continue;
        worst = Math.max(worst, maxAbsDiff(get(m.weights, k.slice('running.'.length)), v));
        n++;
      }
      assert.equal(n, 2 * 27);
      assert.ok(worst <= 1e-5, `running stats max abs error ${worst}`);
    });
  });

  it('inference fuses each pointwise conv with the next depthwise conv: 12 of 13 fused, same logits (1e-5 relative)', () => {
    const { graph, weights } = fixtureModel('mobilenetv1', 64);
    const x = randomInput(graph, 3, 4);
    const fused = new NativeModel(graph, weights);
    const plain = new NativeModel(graph, weights, { fuseDepthwise: false });
    const a = fused.predict(x, 3);
    const b = plain.predict(x, 3);
    assert.ok(maxAbsDiff(a, b) <= 1e-5 * maxAbs(b), `max abs diff ${maxAbsDiff(a, b)}`);
    const separateDw = (mm: NativeModel): number => mm.implementations().filter((i) => /: jit_dw/.test(i)).length;
    assert.equal(separateDw(plain), 13);
    assert.equal(separateDw(fused), 1);
  });
});

function randomInput(graph: Graph, batch: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: batch * 3 * graph.config.resolution ** 2 }, () => rng.normal());
}

describe('MobileNetV1 ONNX export on ONNX Runtime', () => {
  for (const v of VARIANTS) {
    it(`${v.arch} @ ${v.resolution}: PyTorch's logits within 1e-4 x max|logit|, native engine's within 1e-4 relative`, async () => {
      const { graph, weights } = fixtureModel(v.arch, v.resolution);
      const ort = await OrtModel.create(exportOnnx(graph, weights), { threads: 2 });
      try {
        const ref = get(io.tensors, `eval.${v.tag}.logits`);
        const y = await ort.run(get(io.tensors, `eval.${v.tag}.input`), 2);
        assert.ok(maxAbsDiff(y, ref) <= 1e-4 * maxAbs(ref), `vs PyTorch: ${maxAbsDiff(y, ref)}`);
        const x = randomInput(graph, 3, 8);
        const a = new NativeModel(graph, weights).predict(x, 3);
        const b = await ort.run(x, 3);
        assert.ok(maxAbsDiff(a, b) <= 1e-4 * maxAbs(b), `native vs ORT: ${maxAbsDiff(a, b)}, max|logit| ${maxAbs(b)}`);
      } finally {
        await ort.release();
      }
    });
  }
});
