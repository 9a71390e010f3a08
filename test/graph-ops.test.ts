/**
 * The graph ops a detector needs (concat, reshape/flatten, transpose, sigmoid, softmax) and several named
 * outputs: shapes and counts from the builder, the ONNX export run by ONNX Runtime against the float64
 * reference forward (test/helpers/reference-forward.ts), and the native engine on sigmoid.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../src/model/builder.js';
import { makeConfig } from '../src/model/config.js';
import { consumers, nodeMacs, nodeParamCount, totalMacs, totalParams, type Graph } from '../src/model/graph.js';
import { initWeights, type StateDict } from '../src/model/weights.js';
import { exportOnnx } from '../src/engine/onnx/export.js';
import { NativeModel } from '../src/engine/native/model.js';
import { Rng } from '../src/util/rng.js';
import { referenceOutputs } from './helpers/reference-forward.js';
import { maxAbs, maxAbsDiff } from './helpers/fixtures.js';

/** A two-level SSD-like head on a tiny backbone: per level a box conv (4 per anchor) and a score conv (3 classes). */
function detectorLike(): Graph {
  const b = new GraphBuilder(makeConfig('seed-cifar'));
  const f1 = b.convBnAct('c1', 'c1.bn', b.g.input, 8, 3, 4); // [8, 8, 8]
  const f2 = b.convBnAct('c2', 'c2.bn', f1, 16, 3, 2); // [16, 4, 4]
  const boxes: string[] = [];
  const scores: string[] = [];
  for (const [i, f] of [f1, f2].entries()) {
    // 2 anchors per cell: conv -> HWC -> [cells * anchors, 4 | 3]
    boxes.push(b.reshape(`box${i}.r`, b.transpose(`box${i}.t`, b.conv(`box${i}`, f, 2 * 4, 1, 1, 1, true), [1, 2, 0]), [-1, 4]));
    scores.push(b.reshape(`cls${i}.r`, b.transpose(`cls${i}.t`, b.conv(`cls${i}`, f, 2 * 3, 1, 1, 1, true), [1, 2, 0]), [-1, 3]));
  }
  b.output('boxes', b.concat('boxes', boxes, 0));
  b.output('scores', b.softmax('scores', b.concat('cls', scores, 0), 1));
  b.output('objectness', b.act('objectness', b.flatten('obj.flat', b.concat('obj', [f1, b.conv('up', f1, 8, 1, 1, 1, true)], 0)), 'sigmoid'));
  return b.g;
}

function randomInput(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.normal());
}

/** Non-trivial BN statistics, so the export's folding matters. */
function weightsFor(g: Graph, seed: number): StateDict {
  const w = initWeights(g, seed);
  const rng = new Rng(seed + 1);
  for (const n of g.nodes) {
    if (n.op !== 'bn') continue;
    w.get(`${n.name}.running_mean`)!.forEach((_, i, a) => (a[i] = 0.2 * rng.normal()));
    w.get(`${n.name}.running_var`)!.forEach((_, i, a) => (a[i] = 0.5 + rng.uniform()));
  }
  return w;
}

describe('graph ops: builder', () => {
  it('shapes, named outputs, no parameters or MACs of their own, one consumers()', () => {
    const g = detectorLike();
    const shape = (name: string) => g.nodes.find((n) => n.name === name)!.shape;
    assert.deepEqual(shape('box0.t'), [8, 8, 8]);
    assert.deepEqual(shape('box0.r'), [128, 4]); // 8x8 cells x 2 anchors
    assert.deepEqual(shape('box1.r'), [32, 4]);
    assert.deepEqual(shape('boxes'), [160, 4]);
    assert.deepEqual(shape('scores'), [160, 3]);
    assert.deepEqual(shape('obj'), [16, 8, 8]);
    assert.deepEqual(shape('obj.flat'), [1024]);
    assert.deepEqual(g.outputs.map((o) => o.name), ['boxes', 'scores', 'objectness']);
    for (const n of g.nodes) if (['concat', 'reshape', 'transpose', 'softmax'].includes(n.op) || n.name === 'objectness') assert.deepEqual([nodeParamCount(n), nodeMacs(n)], [0, 0], n.name);
    // 3x3/4 conv 3->8 on 8x8 + BN, 3x3/2 conv 8->16 on 4x4 + BN, the 1x1 heads with bias
    const params = 8 * 3 * 9 + 16 + 16 * 8 * 9 + 32 + (8 * 8 + 8) + (6 * 8 + 6) + (8 * 16 + 8) + (6 * 16 + 6) + (8 * 8 + 8);
    assert.equal(totalParams(g), params);
    assert.equal(totalMacs(g), 64 * 8 * 27 + 16 * 16 * 72 + 64 * (8 * 8 + 6 * 8 + 8 * 8) + 16 * (8 * 16 + 6 * 16));
    assert.deepEqual(consumers(g).get('c1.bn.act')!.map((n) => n.name), ['c2', 'box0', 'cls0', 'up', 'obj']);
  });

  it('clear errors for shapes that do not fit', () => {
    const b = new GraphBuilder(makeConfig('seed-cifar'));
    const x = b.conv('c', b.g.input, 4, 3, 2); // [4, 16, 16]
    const y = b.conv('d', b.g.input, 4, 3, 4); // [4, 8, 8]
    assert.throws(() => b.concat('j', [x, y], 0), /concat j: input d has shape \[4, 8, 8\], input c \[4, 16, 16\] \(only axis 0 may differ\)/);
    assert.throws(() => b.reshape('r', x, [3, -1]), /reshape r: \[4, 16, 16\] \(1024 values\) cannot be \[3, -1\]/);
    assert.throws(() => b.reshape('r', x, [-1, -1]), /at most one -1/);
    assert.throws(() => b.transpose('t', x, [0, 0, 1]), /not a permutation/);
    assert.throws(() => b.softmax('s', x, 3), /softmax s axis 3 outside \[0, 3\)/);
    assert.throws(() => b.output('o', 'nope'), /unknown value nope/);
  });
});

describe('graph ops: ONNX export on ONNX Runtime vs the float64 reference', () => {
  for (const fp16 of [false, true]) {
    it(`every named output within ${fp16 ? '2e-2' : '1e-5'} x max|value|${fp16 ? ' (fp16)' : ''}`, async (t) => {
      const g = detectorLike();
      const w = weightsFor(g, 5);
      const batch = 2;
      const input = randomInput(batch * 3 * 32 * 32, 9);
      const ref = referenceOutputs(g, w, input, batch);
      const session = await ort.InferenceSession.create(exportOnnx(g, w, { fp16 }));
      assert.deepEqual(session.outputNames, ['boxes', 'scores', 'objectness']);
      const out = await session.run({ input: new ort.Tensor('float32', input, [batch, 3, 32, 32]) });
      for (const [name, r] of ref) {
        const got = out[name]!;
        assert.deepEqual(got.dims, [batch, ...g.nodes.find((n) => n.output === g.outputs.find((o) => o.name === name)!.value)!.shape]);
        const d = maxAbsDiff(got.data as Float32Array, r);
        t.diagnostic(`${name}: max |diff| ${d.toExponential(2)}, max |value| ${maxAbs(r).toFixed(3)}`);
        assert.ok(d <= (fp16 ? 2e-2 : 1e-5) * maxAbs(r), `${name}: ${d}`);
      }
      // Softmax rows sum to 1: the axis is the class axis, not the batch's.
      const s = out['scores']!.data as Float32Array;
      for (let row = 0; row < s.length / 3; row++) assert.ok(Math.abs(s[3 * row]! + s[3 * row + 1]! + s[3 * row + 2]! - 1) < 1e-3);
      await session.release();
    });
  }
});

describe('graph ops: native engine', () => {
  it('sigmoid as a conv post-op and standalone, inference and training forward, vs the reference', () => {
    const b = new GraphBuilder(makeConfig('seed-cifar', { numClasses: 5 }));
    const x = b.convBnAct('c1', 'c1.bn', b.g.input, 8, 3, 2, 1, false);
    const s = b.act('c1.sig', x, 'sigmoid'); // fused into c1 for inference
    const y = b.act('y.sig', b.addValues('y', s, b.bn('c2.bn', b.conv('c2', s, 8, 1, 1))), 'sigmoid');
    b.output('logits', b.linear('fc', b.avgpool('pool', y), 5));
    const g = b.g;
    const w = weightsFor(g, 3);
    const batch = 3;
    const input = randomInput(batch * 3 * 32 * 32, 4);
    const ref = referenceOutputs(g, w, input, batch).get('logits')!;
    const m = new NativeModel(g, w, { threads: 1 });
    const got = m.predict(input, batch);
    assert.ok(maxAbsDiff(got, ref) <= 1e-5 * maxAbs(ref), `inference: ${maxAbsDiff(got, ref)}`);
    assert.ok(maxAbs(ref) > 0.01);
  });

  it('ops without a native primitive yet are a clear error, not a crash', () => {
    const g = detectorLike();
    const m = new NativeModel(g, weightsFor(g, 1), { threads: 1 });
    assert.throws(() => m.predict(randomInput(3 * 32 * 32, 1), 1), /NativeModel\.predict .*expects a graph with one output, this one has 3 \(boxes, scores, objectness\)/);
    // Layout nodes run natively only on the way to a graph output (src/engine/native/views.ts); softmax not at all.
    assert.throws(() => m.predictOutputs(randomInput(3 * 32 * 32, 1), 1), /native inference: the native engine runs concat nodes only on the way to a graph output; concat cls feeds softmax scores/);
    const b = new GraphBuilder(makeConfig('seed-cifar'));
    b.output('logits', b.linear('fc', b.flatten('f', b.avgpool('p', b.conv('c', b.g.input, 4, 3, 2, 1, true))), 2));
    assert.throws(() => new NativeModel(b.g, initWeights(b.g, 1), { threads: 1 }).predict(randomInput(3 * 32 * 32, 1), 1), /native inference: the native engine runs reshape nodes only on the way to a graph output; reshape f feeds linear fc/);
  });
});
