/**
 * SSDLite on the native engine: the detection heads' transpose + reshape + concat as reorders into windows of
 * the outputs. Inference against ONNX Runtime on the same weights (random, and the real clownfish model when
 * present); one training step against PyTorch autograd (tools/make-ssdlite-fixtures.py).
 */
import { describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { archConfig, buildModel } from '../src/model/registry.js';
import { GraphBuilder } from '../src/model/builder.js';
import { makeSsdliteConfig, type SsdliteConfig } from '../src/model/ssdlite.js';
import type { Graph } from '../src/model/graph.js';
import type { ModelConfig } from '../src/model/config.js';
import { initWeights, type StateDict } from '../src/model/weights.js';
import { exportOnnx } from '../src/engine/onnx/export.js';
import { NativeModel } from '../src/engine/native/model.js';
import { native } from '../src/engine/native/binding.js';
import { importTfliteSsdlite } from '../src/io/tflite-ssdlite.js';
import { SsdliteDetector, type Detection } from '../src/detect/ssdlite-detector.js';
import type { Task } from '../src/task/task.js';
import { Rng } from '../src/util/rng.js';
import { get, loadFixture, maxAbs, maxAbsDiff, relL2 } from './helpers/fixtures.js';
import { countSketch, hashTensor, hashWeights } from './helpers/hash-init.js';
import { CLI } from './helpers/imagenet-photos.js';

const ssdlite = (o: Partial<SsdliteConfig>): Graph<SsdliteConfig> => buildModel(archConfig('ssdlite', o)) as Graph<SsdliteConfig>;

/** Seeded weights with non-trivial BN statistics and head biases, so folding and biases matter. */
function randomWeights(g: Graph): StateDict {
  const w = initWeights(g, 3);
  const rng = new Rng(4);
  for (const [name, v] of w) {
    if (name.endsWith('running_mean') || /\.1\.bias$/.test(name)) v.forEach((_, i, a) => (a[i] = 0.2 * rng.normal()));
    if (name.endsWith('running_var')) v.forEach((_, i, a) => (a[i] = 0.5 + rng.uniform()));
  }
  return w;
}

async function ortOutputs(g: Graph, w: StateDict, input: Float32Array, batch: number): Promise<Map<string, Float32Array>> {
  const session = await ort.InferenceSession.create(exportOnnx(g, w));
  const r = g.config.resolution;
  const out = await session.run({ input: new ort.Tensor('float32', input, [batch, 3, r, r]) });
  await session.release();
  return new Map(Object.entries(out).map(([k, t]) => [k, t.data as Float32Array]));
}

describe('native SSDLite inference vs ONNX Runtime (α 0.35 @ 160, 2 classes, random weights, batch 2)', async () => {
  const g = ssdlite({ alpha: 0.35, resolution: 160, numClasses: 2 });
  const w = randomWeights(g);
  const batch = 2;
  const rng = new Rng(5);
  const input = Float32Array.from({ length: batch * 3 * 160 * 160 }, () => rng.uniform() * 2 - 1);
  const ref = await ortOutputs(g, w, input, batch);
  const m = new NativeModel(g, w);

  it('predictOutputs: boxes [2, 540, 4] and logits [2, 540, 3] within 1e-4 of ONNX Runtime', (t) => {
    const out = m.predictOutputs(input, batch);
    assert.deepEqual([...out.keys()], ['boxes', 'logits']);
    for (const [name, r] of ref) {
      const v = out.get(name)!;
      assert.equal(v.length, batch * 540 * (name === 'boxes' ? 4 : 3));
      const d = maxAbsDiff(v, r);
      t.diagnostic(`${name}: max |diff| ${d.toExponential(2)}, max |value| ${maxAbs(r).toFixed(3)}`);
      assert.ok(maxAbs(r) > 1, `${name}: outputs are not near zero`);
      assert.ok(d <= 1e-4, `${name}: max |diff| ${d}`);
    }
  });

  it('forwardOutputs (worker thread) returns the same values; predict() names the multi-output graph', async () => {
    const a = m.predictOutputs(input, batch);
    const b = await m.forwardOutputs(input, batch);
    for (const [k, v] of a) assert.equal(maxAbsDiff(v, b.get(k)!), 0, k);
    assert.throws(() => m.predict(input, batch), /NativeModel\.predict.*one output.*2 \(boxes, logits\)/);
  });

  it('the inference program runs each head as one reorder into its output window (no concat op)', () => {
    const impl = m.implementations();
    const heads = impl.filter((s) => /^head\.(regression|classification)_head\.module_list\.\d\.1\.out0: /.test(s));
    assert.equal(heads.length, 12, impl.filter((s) => s.startsWith('head')).join('\n'));
    assert.equal(impl.some((s) => /concat/.test(s)), false);
  });
});

const FISH = new URL('../../../shared/data/detection/clownfish-ssdlite/', import.meta.url).pathname;
const fishSkip = existsSync(path.join(FISH, 'ssdlite_mobilenet_v2_clownfish.tflite')) ? false : `${FISH} is absent (the shared reference data is not on this machine)`;

test('the real clownfish SSDLite (TFLite import, 300x300): native and ONNX Runtime give the same detections', { skip: fishSkip }, async (t) => {
  const fish = importTfliteSsdlite(path.join(FISH, 'ssdlite_mobilenet_v2_clownfish.tflite'));
  const photo = path.join(FISH, 'clownfish.jpg');
  const results = [];
  for (const engine of ['ort', 'native'] as const) {
    const det = await SsdliteDetector.create(fish.graph, fish.weights, 2, engine);
    assert.equal(det.engine, engine);
    const raw = await det.forward(hashTensor('fish input', [3, 300, 300]));
    const r = await det.detect(photo, { maxDetections: 10, scoreThreshold: 0.1 });
    await det.release();
    results.push({ raw, r });
  }
  const [o, n] = results as [(typeof results)[0], (typeof results)[0]];
  const dc = maxAbsDiff(n.raw.codes, o.raw.codes);
  const dl = maxAbsDiff(n.raw.logits, o.raw.logits);
  t.diagnostic(`box codes max |diff| ${dc.toExponential(2)} (max ${maxAbs(o.raw.codes).toFixed(2)}), logits ${dl.toExponential(2)} (max ${maxAbs(o.raw.logits).toFixed(2)})`);
  assert.ok(dc <= 1e-4 * Math.max(1, maxAbs(o.raw.codes)) && dl <= 1e-4 * Math.max(1, maxAbs(o.raw.logits)), `codes ${dc}, logits ${dl}`);
  assert.ok(o.r.detections.length >= 2, `${o.r.detections.length} detections`);
  assert.equal(n.r.detections.length, o.r.detections.length);
  for (const [i, d] of o.r.detections.entries()) {
    const e = n.r.detections[i]!;
    assert.equal(e.classId, d.classId);
    assert.ok(Math.abs(e.score - d.score) <= 1e-4, `detection ${i}: score ${e.score} vs ${d.score}`);
    assert.ok(maxAbsDiff(e.box, d.box) <= 0.05, `detection ${i}: box [${e.box.join(', ')}] vs [${d.box.join(', ')}] px`);
  }
});

test('mnv2 detect --engine native --json: the detections of --engine ort', { skip: fishSkip }, () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ssdlite-native-'));
  try {
    const weights = path.join(dir, 'fish.safetensors');
    execFileSync(process.execPath, [CLI, 'import', 'tflite', path.join(FISH, 'ssdlite_mobilenet_v2_clownfish.tflite'), '--out', weights], { stdio: 'pipe' });
    const detect = (engine: string) => (JSON.parse(execFileSync(process.execPath, [CLI, 'detect', path.join(FISH, 'clownfish.jpg'), '--weights', weights,
      '--engine', engine, '--json', '--max', '5', '--score', '0.3'], { encoding: 'utf8', stdio: 'pipe' })) as { detections: Detection[] }).detections;
    const [o, n] = [detect('ort'), detect('native')];
    assert.ok(o.length >= 2, `${o.length} detections`);
    assert.deepEqual(n.map((d) => d.classId), o.map((d) => d.classId));
    for (const [i, d] of o.entries()) {
      assert.ok(Math.abs(n[i]!.score - d.score) <= 1e-4 && maxAbsDiff(n[i]!.box, d.box) <= 0.05, `detection ${i}: ${JSON.stringify(n[i])} vs ${JSON.stringify(d)}`);
    }
    assert.throws(() => execFileSync(process.execPath, [CLI, 'detect', path.join(FISH, 'clownfish.jpg'), '--weights', weights, '--engine', 'gpu'], { stdio: 'pipe' }), /Allowed choices are native, ort/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The fixture's fixed loss Σ boxes·R1 + Σ logits·R2: its output gradients are R1 and R2. */
function probeTask(r: ReadonlyMap<string, Float32Array>): Task<null> {
  return {
    name: 'probe', bestKey: 'none', validate: () => {},
    loss(outputs, _target, _batch, grads) {
      let loss = 0;
      for (const [name, w] of r) {
        const y = outputs.get(name)!;
        for (let i = 0; i < w.length; i++) loss += y[i]! * w[i]!;
        grads.get(name)!.set(w);
      }
      return { loss, counts: {} };
    },
  };
}

describe('native SSDLite training step vs PyTorch autograd (α 0.35 @ 160, 1 class, batch 4, float64 reference)', () => {
  const fx = loadFixture('ssdlite-train.safetensors');
  const meta = fx.metadata;
  const batch = Number(meta['batch']);
  const buckets = Number(meta['sketch']);
  const g = ssdlite({ alpha: Number(meta['alpha']), resolution: Number(meta['resolution']), numClasses: Number(meta['num_classes']) });
  const m = new NativeModel(g, hashWeights(g));
  const outShape = (name: string): number[] => [batch, ...g.nodes.find((n) => n.output === g.outputs.find((o) => o.name === name)!.value)!.shape];
  const r = new Map(['boxes', 'logits'].map((k) => [k, hashTensor(`R.${k}`, outShape(k))] as const));
  const res = g.config.resolution;
  const step = m.step(hashTensor('input', [batch, 3, res, res]), batch, probeTask(r), null);

  it('the fixture is the same model: parameter count and names', () => {
    assert.equal(g.params.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0), Number(meta['params']));
    assert.deepEqual(g.params.map((p) => p.name).filter((n) => !fx.tensors.has(`sketch.${n}`)), []);
  });

  it('train-mode boxes and logits within 1e-4 × max|value|, the loss within 1e-5 relative', (t) => {
    for (const name of ['boxes', 'logits']) {
      const ref = get(fx.tensors, `out.${name}`);
      const d = maxAbsDiff(step.outputs.get(name)!, ref);
      t.diagnostic(`${name}: max |diff| ${d.toExponential(2)}, max |value| ${maxAbs(ref).toFixed(3)}`);
      assert.ok(d <= 1e-4 * maxAbs(ref), `${name}: ${d}`);
    }
    const want = get(fx.tensors, 'out.loss')[0]!;
    assert.ok(Math.abs(step.loss - want) <= 1e-5 * Math.abs(want), `loss ${step.loss} vs ${want}`);
  });

  it('every parameter gradient within 1e-3 relative L2 (CountSketch of 256 buckets above 256 elements); structurally zero ones |g| <= 1e-4', (t) => {
    const zero = new Set(JSON.parse(meta['structurally_zero'] ?? '[]') as string[]);
    assert.ok(zero.size < 30, `${zero.size} structurally zero gradients`);
    const bad: string[] = [];
    const errs: number[] = [];
    const floor: number[] = [];
    for (const p of g.params) {
      const grad = m.grads.get(p.name)!;
      if (zero.has(p.name)) {
        // The float64 norm is below 1e-8: a linear conv and a train-mode BN follow this BN shift.
        if (!(maxAbs(grad) <= 1e-4)) bad.push(`${p.name}: max |g| ${maxAbs(grad)} for a structurally zero gradient`);
        continue;
      }
      const e = relL2(countSketch(p.name, grad, buckets), get(fx.tensors, `sketch.${p.name}`));
      errs.push(e);
      floor.push(get(fx.tensors, `f32err.${p.name}`)[0]!);
      if (!(e <= 1e-3)) bad.push(`${p.name}: relative L2 ${e.toExponential(2)}`);
    }
    const median = (a: number[]): number => [...a].sort((x, y) => x - y)[a.length >> 1]!;
    t.diagnostic(`${errs.length} gradients: median ${median(errs).toExponential(2)}, worst ${Math.max(...errs).toExponential(2)} ` +
      `(PyTorch float32 vs float64: median ${median(floor).toExponential(2)}, worst ${Math.max(...floor).toExponential(2)}); ${zero.size} structurally zero`);
    assert.deepEqual(bad, []);
  });

  it('BN running statistics updated as PyTorch (momentum 0.1, unbiased variance) within 1e-5', () => {
    let worst = 0;
    let n = 0;
    for (const [k, v] of fx.tensors) {
      if (!k.startsWith('running.')) continue;
      worst = Math.max(worst, maxAbsDiff(get(m.weights, k.slice('running.'.length)), v) / Math.max(1, maxAbs(v)));
      n++;
    }
    assert.equal(n, 2 * g.nodes.filter((x) => x.op === 'bn').length);
    assert.ok(worst <= 1e-5, `worst running-statistic error ${worst}`);
  });
});

describe('layout nodes in other positions: concat along channels, transposes, flatten, one value in several outputs', () => {
  // Two convs on a 32x32 input (no BN: the training forward equals inference, and every output is linear in
  // every weight, so a finite difference of 1 is the exact gradient).
  const b = new GraphBuilder(archConfig('mobilenetv2', { resolution: 32, numClasses: 2 }) as ModelConfig);
  const a = b.conv('a', b.g.input, 4, 3, 2, 1, true);
  const c = b.conv('c', b.g.input, 6, 1, 2, 1, true);
  b.output('cat', b.concat('cat', [a, c], 0));
  b.output('t', b.transpose('t', a, [2, 0, 1]));
  b.output('flat', b.flatten('flat', b.transpose('hwc', c, [1, 2, 0])));
  b.output('a', a);
  const g = b.g;
  const batch = 2;
  const rng = new Rng(6);
  const w = initWeights(g, 1);
  for (const v of w.values()) v.forEach((_, i, arr) => (arr[i] = rng.normal()));
  const input = Float32Array.from({ length: batch * 3 * 32 * 32 }, () => rng.uniform() * 2 - 1);

  it('inference: every output as ONNX Runtime computes it', async () => {
    const ref = await ortOutputs(g, w, input, batch);
    const out = new NativeModel(g, w).predictOutputs(input, batch);
    assert.deepEqual([...out.keys()], ['cat', 't', 'flat', 'a']);
    for (const [k, v] of out) assert.ok(maxAbsDiff(v, ref.get(k)!) <= 1e-5 * maxAbs(ref.get(k)!), `${k}: ${maxAbsDiff(v, ref.get(k)!)}`);
  });

  it('training: outputs as inference, gradients through every window equal exact finite differences', () => {
    const m = new NativeModel(g, w);
    const r = new Map(g.outputs.map((o) => [o.name, Float32Array.from({ length: m.predictOutputs(input, batch).get(o.name)!.length }, () => rng.normal())] as const));
    const lossOf = (outs: ReadonlyMap<string, Float32Array>): number => [...r].reduce((s, [k, x]) => s + x.reduce((t, v, i) => t + v * outs.get(k)![i]!, 0), 0);
    const eval0 = m.predictOutputs(input, batch);
    const step = m.step(input, batch, probeTask(r), null);
    for (const [k, v] of step.outputs) assert.ok(maxAbsDiff(v, eval0.get(k)!) <= 1e-5 * maxAbs(v), k);
    const grads = new Map([...m.grads].map(([k, v]) => [k, v.slice()] as const));
    const base = lossOf(eval0);
    const probe = new NativeModel(g, w);
    for (const [name, idx] of [['a.bias', [0, 3]], ['c.bias', [0, 5]], ['a.weight', [0, 50, 107]], ['c.weight', [2, 17]]] as const) {
      for (const i of idx) {
        const bumped = new Map([...w].map(([k, v]) => [k, v.slice()] as const));
        bumped.get(name)![i]! += 1;
        probe.loadStateDict(bumped);
        const fd = lossOf(probe.predictOutputs(input, batch)) - base;
        const got = grads.get(name)![i]!;
        assert.ok(Math.abs(got - fd) <= 1e-3 * Math.max(1, Math.abs(fd)), `${name}[${i}]: gradient ${got}, finite difference ${fd}`);
      }
    }
  });

  it('a reshape that would merge dims of a strided window is refused, naming it', () => {
    const b2 = new GraphBuilder(archConfig('mobilenetv2', { resolution: 32, numClasses: 2 }) as ModelConfig);
    const p = b2.reshape('r1', b2.transpose('p1', b2.conv('x', b2.g.input, 4, 3, 2), [1, 2, 0]), [-1, 2]);
    const q = b2.reshape('r2', b2.transpose('p2', b2.conv('y', b2.g.input, 4, 3, 2), [1, 2, 0]), [-1, 2]);
    b2.output('both', b2.concat('both', [p, q], 1));
    assert.throws(() => new NativeModel(b2.g).predictOutputs(input.subarray(0, 3 * 32 * 32), 1), /native inference: reshape r1 of a strided window to \[1, 16, 16, 4\] needs a copy/);
  });
});

describe('layout nodes the native engine cannot run, and bad views: clear errors, never a crash', () => {
  it('a transpose feeding a conv is refused, naming both nodes', () => {
    const b = new GraphBuilder(makeSsdliteConfig({ resolution: 160, numClasses: 1 }));
    const t = b.transpose('swap', b.g.input, [0, 2, 1]);
    b.output('y', b.conv('conv', t, 4, 1, 1));
    const m = new NativeModel(b.g);
    const input = new Float32Array(3 * 160 * 160);
    assert.throws(() => m.predictOutputs(input, 1), /native inference: .*transpose swap feeds conv conv/);
    assert.throws(() => m.step(input, 1, probeTask(new Map()), null), /native training: .*transpose swap feeds conv conv/);
  });

  it('reorder views outside their buffer, with overflowing strides, or over act buffers are rejected', () => {
    const { Program } = native();
    const buffers = [{ layout: 'act', dims: [1, 8, 2, 2] }, { layout: 'plain', dims: [2, 32] }];
    const spec = (dstView: unknown) => ({ actFormat: 'nChw8c', buffers, segments: [[{ op: 'reorder', src: 0, dst: 1, dstView }]] }) as never;
    // The second image's window: offset 32 of 64 elements.
    assert.doesNotThrow(() => new Program(spec({ offset: 32, dims: [1, 8, 2, 2], strides: [32, 1, 16, 8] })).release());
    const cases: [unknown, RegExp][] = [
      [{ offset: 33, dims: [1, 8, 2, 2], strides: [32, 1, 16, 8] }, /reaches element 64 of a buffer of 64/],
      [{ offset: 0, dims: [1, 8, 2, 2], strides: [32, 1, 2 ** 39, 2 ** 39] }, /reaches element|overflow/],
      [{ offset: 0, dims: [1, 8, 2, 2], strides: [1e12, 1e12, 1e12, 1e12] }, /overflow|reaches/],
      [{ offset: 0, dims: [1, 8, 2], strides: [32, 1, 16] }, /reorder between dims/],
      [{ offset: 0, dims: [1, 8, 2, 2], strides: [32, 0, 16, 8] }, /strides entries must be positive/],
      [{ offset: 0, dims: [1, 8, 2, 2] }, /strides/],
      [7, /must be an object/],
    ];
    for (const [view, msg] of cases) assert.throws(() => new Program(spec(view)), msg);
    const onAct = { actFormat: 'nChw8c', buffers, segments: [[{ op: 'reorder', src: 1, dst: 0, dstView: { offset: 0, dims: [2, 32], strides: [32, 1] } }]] } as never;
    assert.throws(() => new Program(onAct), /views are windows of plain buffers/);
  });
});
