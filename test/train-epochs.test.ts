/**
 * The epoch loop knows no task: driven here by a regression task (not classification) on the graph's output,
 * with its own batch source, evaluation columns and best key: metrics.jsonl carries the task's loss and
 * columns, best.safetensors is the epoch with the best key, and a run stopped mid-epoch and resumed from its
 * last.safetensors ends bitwise equal to the straight run.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { LOGITS, numel } from '../src/model/graph.js';
import { initWeights, type StateDict } from '../src/model/weights.js';
import { NativeModel } from '../src/engine/native/model.js';
import type { Task } from '../src/task/task.js';
import { makeOptimizer, paramRefs } from '../src/train/optim.js';
import { makeSchedule } from '../src/train/schedule.js';
import { loadCheckpoint, type TrainPosition } from '../src/train/checkpoint.js';
import { loadModelFile } from '../src/io/weights.js';
import { readMetrics } from '../src/train/plot.js';
import { RunFolder } from '../src/train/artifacts.js';
import { trainEpochs, type BatchSource, type Evaluation, type Trainable } from '../src/train/epochs.js';
import type { TrainRecipe } from '../src/train/presets.js';
import { Rng } from '../src/util/rng.js';

const tmp = mkdtempSync(join(tmpdir(), 'mnv2-epochs-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const graph = mobilenetV2('imagenet', { alpha: 0.35, resolution: 32, numClasses: 1, dropout: 0 });
const PER = numel(graph.inputShape);
const COUNT = 32;
const BATCH = 8;

// Image i is a level v_i plus noise, and its target is v_i: a regression.
const rng = new Rng(5);
const targets = Float32Array.from({ length: COUNT }, () => rng.normal());
const images = Float32Array.from({ length: COUNT * PER }, (_, j) => targets[Math.floor(j / PER)]! + 0.3 * rng.normal());

/** Half the mean squared error of the model's single output; the best key is val_r2. */
const regression: Task<Float32Array> = {
  name: 'regression',
  bestKey: 'val_r2',
  validate(t, n) {
    if (t.length !== n) throw new Error(`${t.length} targets for batch ${n}`);
  },
  loss(outputs, t, n, grads) {
    const y = outputs.get(LOGITS)!;
    const g = grads.get(LOGITS)!;
    let loss = 0;
    for (let i = 0; i < n; i++) {
      const d = y[i]! - t[i]!;
      loss += (0.5 * d * d) / n;
      g[i] = d / n;
    }
    return { loss, counts: {} };
  },
};

/** The same order every epoch, shifted by the epoch: depends only on (epoch, batch), so resumes are exact. */
const source: BatchSource<Float32Array> = {
  batchesPerEpoch: COUNT / BATCH,
  async *epoch(epoch, { startBatch }) {
    for (let index = startBatch; index < COUNT / BATCH; index++) {
      const b = (index + epoch) % (COUNT / BATCH);
      yield { index, size: BATCH, input: images.subarray(b * BATCH * PER, (b + 1) * BATCH * PER), target: targets.subarray(b * BATCH, (b + 1) * BATCH) };
    }
  },
  close: async () => {},
};

function setup(weights: StateDict, dir: string) {
  const model = new NativeModel(graph, weights, { threads: 1 });
  const trainable: Trainable = { params: paramRefs(model), weights: model.weights, step: (x, n, task, t, o) => model.step(x, n, task, t, o), weightsChanged: () => model.weightsChanged() };
  mkdirSync(dir, { recursive: true });
  const folder = new RunFolder(dir, graph, () => ({}));
  const evaluate = async (): Promise<Evaluation> => {
    const y = model.predict(images, COUNT);
    let sse = 0;
    let sst = 0;
    const mean = targets.reduce((a, b) => a + b, 0) / COUNT;
    for (let i = 0; i < COUNT; i++) {
      sse += (y[i]! - targets[i]!) ** 2;
      sst += (targets[i]! - mean) ** 2;
    }
    const r2 = 1 - sse / sst;
    return { metrics: { val_mse: sse / COUNT, val_r2: r2 }, summary: `val r2 ${r2.toFixed(3)}`, metadata: { 'mnv2.val_r2': String(r2) } };
  };
  return { model, trainable, folder, evaluate };
}

const freshPosition = (): TrainPosition => ({
  epoch: 0, step: 0, globalStep: 0, epochLoss: 0, epochCorrect: 0, epochSeen: 0, elapsed: 0, bestTop1: -Infinity, bestEpoch: 0, recipe: {} as TrainRecipe,
});

async function run(dir: string, weights: StateDict, pos: TrainPosition, optimState: Map<string, Float32Array> | null, rngState: Uint32Array | null, stopAfterSteps?: number) {
  const s = setup(weights, dir);
  const optimizer = makeOptimizer('sgd', { momentum: 0 });
  if (optimState) optimizer.loadStateDict(optimState, 'checkpoint');
  const r = await trainEpochs({
    task: regression, source, trainable: s.trainable, optimizer, schedule: makeSchedule({ kind: 'constant', base: 0.002 }, 'test'), ema: null,
    rng: rngState ? new Rng(rngState) : new Rng(1), epochs: 4, bnMomentum: 0.1, evaluate: s.evaluate, pos, folder: s.folder,
    progress: false, log: () => {}, stopAfterSteps, stopRequested: () => false,
  });
  return { ...r, model: s.model };
}

it('a regression task drives the loop: its loss, columns and best key are recorded, a stopped run resumes bitwise', async () => {
  const init = initWeights(graph, 2);
  const straightDir = join(tmp, 'straight');
  const pos = freshPosition();
  const a = await run(straightDir, new Map(init), pos, null, null);
  assert.equal(a.stopped, false);
  const rows = readMetrics(straightDir).rows as unknown as Record<string, number>[];
  assert.equal(rows.length, 4);
  // Half the squared error of targets with variance ~1 at an output near 0 to start.
  assert.ok(rows.every((r) => r['train_loss']! > 0.05 && r['train_loss']! < 2), `train loss ${rows.map((r) => r['train_loss']!.toFixed(4)).join(' -> ')}`);
  for (const r of rows) {
    assert.deepEqual(Object.keys(r).filter((k) => k.startsWith('val_')), ['val_mse', 'val_r2']);
    // A task that counts no top-1 hits writes no training accuracy (not a meaningless 0).
    assert.ok(!('train_acc' in r), `regression row has train_acc ${r['train_acc']}`);
  }
  const best = rows.reduce((b, r) => (r['val_r2']! > b['val_r2']! ? r : b));
  assert.deepEqual([pos.bestEpoch, pos.bestTop1], [best['epoch'], best['val_r2']]);
  const bestFile = loadModelFile(join(straightDir, 'best.safetensors'));
  assert.equal(bestFile.metadata['mnv2.val_r2'], String(best['val_r2']));
  assert.equal(bestFile.metadata['mnv2.epoch'], String(best['epoch']));

  // Stopped after 6 steps (mid epoch 2), resumed from the checkpoint alone.
  const dir = join(tmp, 'resumed');
  const b = await run(dir, new Map(init), freshPosition(), null, null, 6);
  assert.equal(b.stopped, true);
  const ck = loadCheckpoint(dir);
  assert.deepEqual([ck.position!.epoch, ck.position!.step, ck.position!.globalStep], [1, 2, 6]);
  const c = await run(dir, ck.weights, ck.position!, ck.optim, ck.rng);
  assert.equal(c.stopped, false);
  for (const [k, v] of a.model.weights) assert.deepEqual(c.model.weights.get(k), v, k);
  assert.deepEqual(readMetrics(dir).rows.map((r) => r.train_loss), rows.map((r) => r['train_loss']));
});
