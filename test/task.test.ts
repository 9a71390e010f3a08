/**
 * The loss lives outside the engine: a Task gets the named graph outputs of a training forward and writes
 * their gradients, which seed the backward. Checked on a model with two outputs (pooled features, read by the
 * classifier too, and logits) against central finite differences of the task's loss.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { GraphBuilder } from '../src/model/builder.js';
import { makeConfig } from '../src/model/config.js';
import { initWeights } from '../src/model/weights.js';
import { NativeModel } from '../src/engine/native/model.js';
import { classification, softmaxCrossEntropy } from '../src/task/classification.js';
import type { Task } from '../src/task/task.js';
import { Rng } from '../src/util/rng.js';

const BATCH = 4;
const CLASSES = 3;

/** conv-BN-ReLU, conv-BN, average pool -> `features` (an output) -> linear -> `logits`. */
function twoOutputModel(): NativeModel {
  const b = new GraphBuilder(makeConfig('seed-cifar', { numClasses: CLASSES }));
  const x = b.convBnAct('c1', 'c1.bn', b.g.input, 4, 3, 4);
  const f = b.avgpool('pool', b.bn('c2.bn', b.conv('c2', x, 6, 3, 2)));
  b.output('features', f);
  b.output('logits', b.linear('fc', f, CLASSES));
  return new NativeModel(b.g, initWeights(b.g, 7), { threads: 1 });
}

/** Cross-entropy on the logits plus <r, features>: both outputs get a gradient. */
function taskWithFeatures(r: Float32Array): Task<number[]> {
  const ce = classification(CLASSES);
  return {
    name: 'ce+features',
    bestKey: 'val_top1',
    validate: (t, n) => ce.validate(t, n),
    loss(outputs, labels, batch, grads) {
      const { loss } = ce.loss(outputs, labels, batch, grads);
      const f = outputs.get('features')!;
      let dot = 0;
      for (let i = 0; i < f.length; i++) dot += r[i]! * f[i]!;
      grads.get('features')!.set(r);
      return { loss: loss + dot, counts: {} };
    },
  };
}

describe('task: classification', () => {
  it('the loss and gradient of softmaxCrossEntropy, the val_top1 key, label checks before any work', () => {
    const task = classification(CLASSES, { labelSmoothing: 0.1 });
    assert.equal(task.bestKey, 'val_top1');
    const logits = Float32Array.of(1, 2, 3, 0, -1, 0.5);
    const d1 = new Float32Array(6);
    const d2 = new Float32Array(6);
    const r = task.loss(new Map([['logits', logits]]), [2, 0], 2, new Map([['logits', d1]]));
    const ref = softmaxCrossEntropy(logits, [2, 0], 2, CLASSES, d2, 0.1);
    assert.deepEqual([r.loss, r.counts['correct']], [ref.loss, ref.correct]);
    assert.deepEqual(d1, d2);
    assert.throws(() => task.validate([0], 2), /labels has 1 entries for batch 2/);
    assert.throws(() => task.validate([0, 3], 2), /label 3 at index 1 is not a class index in \[0, 3\)/);
    assert.throws(() => task.loss(new Map(), [0], 1, new Map()), /classification: the model has no 'logits' output/);
  });
});

describe('task: backward seeded from several outputs', () => {
  it('parameter gradients match central differences of the task loss (an output also read inside the graph)', () => {
    const m = twoOutputModel();
    const rng = new Rng(3);
    const input = Float32Array.from({ length: BATCH * 3 * 32 * 32 }, () => rng.normal());
    const labels = [0, 2, 1, 2];
    const r = Float32Array.from({ length: BATCH * 6 }, () => rng.normal());
    const task = taskWithFeatures(r);
    const lossAt = (): number => m.step(input, BATCH, task, labels).loss;
    lossAt();
    const checks: [string, number][] = [['c1.weight', 5], ['c2.weight', 17], ['c1.bn.weight', 1], ['c2.bn.bias', 4], ['fc.weight', 2]];
    const analytic = checks.map(([name, i]) => m.grads.get(name)![i]!);
    checks.forEach(([name, i], k) => {
      const w = m.weights.get(name)!;
      const h = 1e-2;
      const w0 = w[i]!;
      w[i] = w0 + h;
      m.weightsChanged();
      const up = lossAt();
      w[i] = w0 - h;
      m.weightsChanged();
      const down = lossAt();
      w[i] = w0;
      m.weightsChanged();
      const numeric = (up - down) / (2 * h);
      const rel = Math.abs(numeric - analytic[k]!) / Math.max(1e-3, Math.abs(analytic[k]!));
      assert.ok(rel <= 0.02, `${name}[${i}]: numeric ${numeric} vs analytic ${analytic[k]} (rel ${rel})`);
    });
    // The feature term reaches the backbone but not the classifier: against plain classification, the
    // classifier's gradient is the same and the first conv's is not.
    lossAt();
    const [fc, c1] = ['fc.weight', 'c1.weight'].map((k) => m.grads.get(k)!.slice());
    m.trainStep(input, labels, BATCH);
    assert.deepEqual(m.grads.get('fc.weight'), fc);
    const diff = Math.max(...c1.map((v, i) => Math.abs(v - m.grads.get('c1.weight')![i]!)));
    assert.ok(diff > 1e-3, `c1.weight gradient moved by ${diff}`);
  });
});
