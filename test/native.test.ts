/**
 * The native oneDNN engine against PyTorch golden fixtures (tools/make-fixtures.py), a finite-difference
 * check, the ONNX Runtime path on the same weights, input validation and memory stability.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { initWeights, type StateDict } from '../src/model/weights.js';
import { NativeModel } from '../src/engine/native/model.js';
import { native } from '../src/engine/native/binding.js';
import { OrtModel } from '../src/engine/onnx/session.js';
import { exportOnnx } from '../src/engine/onnx/export.js';
import { loadWeights } from '../src/io/weights.js';
import { Rng } from '../src/util/rng.js';
import { fixturePath, get, loadFixture, maxAbs, maxAbsDiff, relL2 } from './helpers/fixtures.js';

const seedWeights = (): ReturnType<typeof loadWeights> => loadWeights(fixturePath('seed-cifar.weights.safetensors'));

describe('native engine vs PyTorch (eval mode)', () => {
  for (const tag of ['seed-cifar', 'tv-0.35-96', 'tv-1.0-224']) {
    it(`${tag}: logits within 1e-4 x max|logit|`, () => {
      const resolution = Number(/-(\d+)$/.exec(tag)?.[1] ?? 32);
      const { graph, weights } = loadWeights(fixturePath(`${tag}.weights.safetensors`), { resolution });
      const io = loadFixture(`${tag}.io.safetensors`).tensors;
      const input = get(io, 'eval.input');
      const ref = get(io, 'eval.logits');
      const batch = ref.length / graph.config.numClasses;
      const m = new NativeModel(graph, weights);
      const out = m.predict(input, batch);
      const err = maxAbsDiff(out, ref);
      assert.ok(err <= 1e-4 * maxAbs(ref), `max abs error ${err} vs max|logit| ${maxAbs(ref)}`);
    });
  }
});

describe('native engine vs PyTorch (training mode, seed model, batch 8)', () => {
  const { graph, weights } = seedWeights();
  const fx = loadFixture('seed-cifar.io.safetensors');
  const io = fx.tensors;
  const zero = new Set<string>(JSON.parse(fx.metadata.structurally_zero ?? '[]') as string[]);
  const m = new NativeModel(graph, weights);
  const labels = Array.from(get(io, 'train.labels'));
  const r = m.trainStep(get(io, 'train.input'), labels, 8, { inputGrad: true });

  it('logits and loss', () => {
    const ref = get(io, 'train.logits');
    assert.ok(maxAbsDiff(r.logits, ref) <= 1e-4 * maxAbs(ref), `logits error ${maxAbsDiff(r.logits, ref)}`);
    assert.ok(Math.abs(r.loss - get(io, 'train.loss')[0]!) <= 1e-5, `loss ${r.loss} vs ${get(io, 'train.loss')[0]}`);
  });

  it('every parameter gradient within 1e-3 relative L2 (structurally zero ones: |g| <= 1e-5)', () => {
    assert.equal(m.grads.size, graph.params.length);
    const bad: string[] = [];
    for (const [name, g] of m.grads) {
      const ref = get(io, `grad.${name}`);
      if (zero.has(name)) {
        // PyTorch's own float64 norm is ~1e-17 here: BN in train mode cancels these biases exactly.
        if (maxAbs(g) > 1e-5) bad.push(`${name}: max |g| ${maxAbs(g)} for a structurally zero gradient`);
        continue;
      }
      const e = relL2(g, ref);
      if (!(e <= 1e-3)) bad.push(`${name}: relative L2 ${e.toExponential(2)}`);
    }
    assert.deepEqual(bad, []);
  });

  it('input gradient within 1e-3 relative L2', () => {
    const e = relL2(m.inputGrad(8), get(io, 'grad.input'));
    assert.ok(e <= 1e-3, `input gradient relative L2 ${e}`);
  });

  it('running statistics updated like PyTorch (momentum 0.1, unbiased variance) within 1e-5', () => {
    let worst = 0;
    let n = 0;
    for (const [k, v] of io) {
      if (!k.startsWith('running.')) continue;
      worst = Math.max(worst, maxAbsDiff(get(m.weights, k.slice('running.'.length)), v));
      n++;
    }
    assert.equal(n, 2 * graph.nodes.filter((x) => x.op === 'bn').length);
    assert.ok(worst <= 1e-5, `running stats max abs error ${worst}`);
    assert.equal(get(m.weights, 'bn1.num_batches_tracked')[0], 1);
  });
});

/**
 * Central differences with Richardson extrapolation (error O(eps^4)) of the training loss along a direction
 * (the gradient's own, the largest signal over fp32 noise, plus an equal random part) against the gradient.
 */
function assertDirectionalDerivatives(m: NativeModel, loss: () => number, names: string[]): void {
  const rng = new Rng(11);
  for (const name of names) {
    loss(); // the gradients at the base point (the previous parameter's differences left others)
    const p = get(m.weights, name);
    const g = Float32Array.from(get(m.grads, name));
    const gNorm = Math.sqrt(g.reduce((s, v) => s + v * v, 0));
    const r = Float32Array.from(p, () => rng.normal());
    const rNorm = Math.sqrt(r.reduce((s, v) => s + v * v, 0));
    const dir = Float32Array.from(g, (v, i) => v / gNorm + r[i]! / rNorm);
    const norm = Math.sqrt(dir.reduce((s, v) => s + v * v, 0));
    let analytic = 0;
    for (let i = 0; i < p.length; i++) analytic += (g[i]! * dir[i]!) / norm;
    const base = Float32Array.from(p);
    const lossAt = (t: number): number => {
      for (let i = 0; i < p.length; i++) p[i] = base[i]! + (t * dir[i]!) / norm;
      m.weightsChanged();
      return loss();
    };
    const eps = 0.02;
    const central = (e: number): number => (lossAt(e) - lossAt(-e)) / (2 * e);
    const numeric = (4 * central(eps / 2) - central(eps)) / 3;
    p.set(base);
    m.weightsChanged();
    const rel = Math.abs(numeric - analytic) / Math.abs(analytic);
    assert.ok(rel <= 0.02, `${name}: numeric ${numeric} vs analytic ${analytic} (rel ${rel})`);
  }
}

describe('finite differences (seed model, fixture weights, batch 8)', () => {
  // The fixture's BN parameters keep every ReLU input at least 0.2 from zero, so small steps cross no kink
  // and central differences converge; the check is independent of PyTorch.
  const PARAMS = ['conv1.weight', 'layers.2.conv2.weight', 'layers.4.conv1.weight', 'layers.4.bn2.weight', 'layers.10.shortcut.0.weight', 'layers.16.conv3.weight', 'linear.weight'];
  const io = loadFixture('seed-cifar.io.safetensors').tensors;
  const x = get(io, 'train.input');
  const labels = Array.from(get(io, 'train.labels'));

  it('directional derivatives of the loss match the gradients within 2% (fp32 loss resolution)', () => {
    const { graph, weights } = seedWeights();
    const m = new NativeModel(graph, weights);
    assertDirectionalDerivatives(m, () => m.trainStep(x, labels, 8).loss, PARAMS);
  });

  it('frozen BN: the step computes the eval-mode logits, keeps the statistics, and its gradients are that function\'s (2%)', async () => {
    const { graph, weights } = seedWeights();
    const m = new NativeModel(graph, weights);
    // Statistics near this batch's (the fixture's are PyTorch's initial 0 / 1, under which the eval-mode loss is
    // flat), moved off them so the frozen function is not the batch-statistics one: mean ± 0.05 σ, variance × 1.1 (small enough to keep the ReLU inputs off their kink).
    m.trainStep(x, labels, 8, { bnMomentum: 1 });
    for (const [k, mean] of m.weights) {
      if (!k.endsWith('running_mean')) continue;
      const v = get(m.weights, k.replace(/mean$/, 'var'));
      mean.forEach((mu, c) => (mean[c] = mu + (c % 2 ? 0.05 : -0.05) * Math.sqrt(v[c]!)));
      v.forEach((s2, c) => (v[c] = 1.1 * s2));
    }
    m.weightsChanged();
    const stats = new Map([...m.weights].filter(([k]) => /running_(mean|var)$/.test(k)).map(([k, v]) => [k, Float32Array.from(v)]));
    const logits = Float32Array.from(m.trainStep(x, labels, 8, { frozenBn: true }).logits);
    for (const [k, v] of stats) assert.deepEqual(m.weights.get(k), v, `${k} changed`);
    const evalLogits = (await m.forward(x, 8)).logits;
    assert.ok(maxAbsDiff(logits, evalLogits) <= 1e-4 * maxAbs(evalLogits), `train-mode step with frozen BN vs eval forward: ${maxAbsDiff(logits, evalLogits)}`);
    const live = Float32Array.from(m.trainStep(x, labels, 8, { bnMomentum: 0 }).logits);
    assert.ok(maxAbsDiff(live, evalLogits) > 1e-2 * maxAbs(evalLogits), `batch statistics give other logits (else the check above proves nothing): ${maxAbsDiff(live, evalLogits)}`);
    assertDirectionalDerivatives(m, () => m.trainStep(x, labels, 8, { frozenBn: true }).loss, PARAMS);
  });
});

describe('native engine and ONNX Runtime agree on the same weights', () => {
  const cases: [string, () => { graph: ReturnType<typeof mobilenetV2>; weights: StateDict }][] = [
    ['seed-cifar', () => seedWeights()],
    ['imagenet alpha 0.35 @ 96', () => loadWeights(fixturePath('tv-0.35-96.weights.safetensors'), { resolution: 96 })],
  ];
  for (const [tag, make] of cases) {
    it(`${tag}: logits within 1e-4 relative`, async () => {
      const { graph, weights } = make();
      const batch = 3;
      const rng = new Rng(5);
      const x = Float32Array.from({ length: batch * 3 * graph.config.resolution ** 2 }, () => rng.normal());
      const a = new NativeModel(graph, weights).predict(x, batch);
      const ort = await OrtModel.create(exportOnnx(graph, weights), { threads: 2 });
      const b = await ort.run(x, batch);
      await ort.release();
      const err = maxAbsDiff(a, b);
      assert.ok(err <= 1e-4 * maxAbs(b), `max abs diff ${err}, max|logit| ${maxAbs(b)}`);
    });
  }
});

describe('inference: fused expand + depthwise convs (oneDNN depthwise post-op)', () => {
  // [name, model, depthwise convs left unfused: the seed's blocks all start with a 1x1 conv; torchvision's first (t = 1) does not]
  const cases: [string, () => { graph: ReturnType<typeof mobilenetV2>; weights: StateDict }, number][] = [
    ['seed-cifar (fixture weights)', () => seedWeights(), 0],
    ['imagenet alpha 0.35 @ 96, Keras padding (stride-2 depthwise padded after only)', () => {
      const graph = mobilenetV2('imagenet', { alpha: 0.35, resolution: 96, padding: 'keras', bnEps: 1e-3 });
      return { graph, weights: initWeights(graph, 3) };
    }, 1],
  ];
  for (const [tag, make, unfused] of cases) {
    it(`${tag}: same logits as one primitive per conv (1e-5 relative), 17 depthwise convs -> ${unfused} separate`, () => {
      const { graph, weights } = make();
      const batch = 4;
      const rng = new Rng(9);
      const x = Float32Array.from({ length: batch * 3 * graph.config.resolution ** 2 }, () => rng.normal());
      const fused = new NativeModel(graph, weights);
      const plain = new NativeModel(graph, weights, { fuseDepthwise: false });
      const a = fused.predict(x, batch);
      const b = plain.predict(x, batch);
      assert.ok(maxAbsDiff(a, b) <= 1e-5 * maxAbs(b), `max abs diff ${maxAbsDiff(a, b)}, max|logit| ${maxAbs(b)}`);
      const separateDw = (m: NativeModel): number => m.implementations().filter((i) => /: jit_dw/.test(i)).length;
      assert.equal(separateDw(plain), 17);
      assert.equal(separateDw(fused), unfused);
      assert.equal(fused.implementations().length, plain.implementations().length - (17 - unfused));
    });
  }
  it('a depthwise post-op on anything but a 1x1 stride-1 conv is rejected in C++', () => {
    const { Program } = native();
    const buffers = [{ layout: 'act', dims: [1, 8, 4, 4] }, { layout: 'plain', dims: [8, 8, 3, 3] }, { layout: 'act', dims: [1, 8, 4, 4] },
      { layout: 'plain', dims: [8, 1, 3, 3] }, { layout: 'plain', dims: [8] }];
    const conv = { op: 'conv', src: 0, wei: 1, dst: 2, stride: [1, 1], padL: [1, 1], padR: [1, 1], groups: 1 };
    assert.throws(() => new Program({ actFormat: 'nhwc', buffers, segments: [[{ ...conv, post: [{ kind: 'dw', wei: 3, bias: 4, stride: 1, pad: 1 }] }]] } as never),
      /depthwise post-op needs a 1x1, stride-1, unpadded conv/);
    const b1 = [buffers[0], { layout: 'plain', dims: [8, 8, 1, 1] }, { layout: 'act', dims: [1, 8, 4, 4] }, buffers[3], { layout: 'plain', dims: [7] }];
    const c1 = { ...conv, padL: [0, 0], padR: [0, 0] };
    assert.throws(() => new Program({ actFormat: 'nhwc', buffers: b1, segments: [[{ ...c1, post: [{ kind: 'dw', wei: 3, bias: 4, stride: 1, pad: 1 }] }]] } as never),
      /depthwise post-op bias has dims \[7\], expected \[8\]/);
    b1[4] = buffers[4]!;
    assert.throws(() => new Program({ actFormat: 'nhwc', buffers: b1, segments: [[{ ...c1, post: [{ kind: 'dw', wei: 3, bias: 4, stride: 2, pad: 1 }] }]] } as never),
      /depthwise post-op output has dims \[1, 8, 4, 4\], expected \[1, 8, 2, 2\]/);
    assert.throws(() => new Program({ actFormat: 'nhwc', buffers: b1, segments: [[{ ...c1, post: [{ kind: 'dw', wei: 3, bias: 4, stride: 1, pad: 0 }] }]] } as never),
      /stride 1 needs pad 1/);
  });
});

describe('validation: bad calls throw, never crash', () => {
  const graph = mobilenetV2('imagenet', { alpha: 0.35, resolution: 32, numClasses: 3 });
  const m = new NativeModel(graph, initWeights(graph, 1));
  it('wrong input length, batch, labels', () => {
    assert.throws(() => m.predict(new Float32Array(10), 1), /input has 10 values/);
    assert.throws(() => m.predict(new Float32Array(0), 0), /batch must be a positive integer/);
    assert.throws(() => m.trainStep(new Float32Array(2 * 3 * 32 * 32), [0], 2), /labels has 1 entries/);
    assert.throws(() => m.trainStep(new Float32Array(2 * 3 * 32 * 32), [0, 7], 2), /label 7 at index 1/);
  });
  it('malformed programs are rejected in C++ with a message', () => {
    const { Program } = native();
    const bad: [unknown, RegExp][] = [
      [undefined, /expected one spec object/],
      [{ actFormat: 'xyz', buffers: [], segments: [] }, /actFormat/],
      [{ actFormat: 'nhwc', buffers: [{ layout: 'act', dims: [1, 2, 3] }], segments: [] }, /act buffers must be 4-D/],
      [{ actFormat: 'nhwc', buffers: [{ layout: 'plain', dims: [4], data: new Float32Array(3) }], segments: [] }, /has 3 elements/],
      [{ actFormat: 'nhwc', buffers: [{ layout: 'plain', dims: [-1] }], segments: [] }, /non-negative integer|1\.\.2\^31/],
      [{ actFormat: 'nhwc', buffers: [{ layout: 'plain', dims: [4], data: new Int32Array(4) }], segments: [] }, /Float32Array/],
      [{ actFormat: 'nhwc', buffers: [], segments: [[{ op: 'reorder', src: 0, dst: 1 }]] }, /refers to buffer 0 of 0/],
      [{ actFormat: 'nhwc', buffers: [{ layout: 'act', dims: [1, 8, 4, 4] }, { layout: 'plain', dims: [8, 8, 3, 3] }, { layout: 'act', dims: [1, 8, 5, 5] }],
        segments: [[{ op: 'conv', src: 0, wei: 1, dst: 2, stride: [1, 1], padL: [1, 1], padR: [1, 1], groups: 1 }]] }, /conv output has dims \[1, 8, 5, 5\], expected \[1, 8, 4, 4\]/],
      [{ actFormat: 'nhwc', buffers: [{ layout: 'act', dims: [1, 8, 4, 4] }, { layout: 'plain', dims: [8, 8, 3, 3] }, { layout: 'act', dims: [1, 8, 4, 4] }],
        segments: [[{ op: 'conv', src: 0, wei: 1, dst: 2, stride: [1, 1], padL: [1, 1], padR: [1, 1], groups: 3 }]] }, /groups 3 must divide/],
      [{ actFormat: 'nhwc', buffers: [], segments: [[{ op: 'nope' }]] }, /unknown op 'nope'/],
    ];
    for (const [spec, re] of bad) assert.throws(() => new Program(spec as never), re);
    const ok = new Program({ actFormat: 'nhwc', buffers: [], segments: [[]] });
    assert.throws(() => ok.run(3), /no segment 3/);
  });
});

describe('memory stays flat', () => {
  it('1,000 training steps grow RSS by less than 50 MB after warm-up', () => {
    const graph = mobilenetV2('imagenet', { alpha: 0.35, resolution: 32, numClasses: 4 });
    const m = new NativeModel(graph, initWeights(graph, 2), { threads: 2 });
    const x = new Float32Array(2 * 3 * 32 * 32).fill(0.5);
    for (let i = 0; i < 50; i++) m.trainStep(x, [1, 2], 2, { rng: new Rng(i) });
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 1000; i++) m.trainStep(x, [1, 2], 2, { rng: new Rng(i) });
    const grown = (process.memoryUsage().rss - before) / 1e6;
    assert.ok(grown < 50, `RSS grew by ${grown.toFixed(1)} MB over 1000 steps`);
  });
});
