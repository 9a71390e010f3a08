/**
 * Head-only fine-tuning as a parameter set: the classifier's weight and bias are trained, everything else is
 * frozen. The frozen backbone (eval mode) runs once per image; its pooled features are the inputs of the
 * batches, and a step is the linear head (with the model's dropout before it) on them.
 */
import { NativeModel, type StepOptions } from '../engine/native/model.js';
import { buildModel, reconfigure } from '../model/registry.js';
import { LOGITS, type Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import { BatchLoader, epochOrder } from '../data/loader.js';
import type { Dataset, InputConvention } from '../data/dataset.js';
import type { Task, TaskLoss } from '../task/task.js';
import type { ParamRef } from './types.js';
import type { BatchSource, TaskBatch, Trainable } from './epochs.js';
import { EvalAccumulator, type EvalResult } from './metrics.js';
import { classifierNode } from './run-state.js';
import { progressBar, speed } from './progress.js';

export interface FeatureOptions {
  batch: number;
  threads?: number;
  progress: boolean;
  worker: boolean;
}

/** Pooled features of every image of `ds` (eval mode), [count, F], computed by a copy of the model whose classifier is the identity. */
export async function extractFeatures(graph: Graph, weights: StateDict, ds: Dataset, conv: InputConvention, what: string, o: FeatureOptions): Promise<Float32Array> {
  const lin = classifierNode(graph);
  const F = lin.inF;
  const fg = buildModel(reconfigure(graph.config, { numClasses: F, dropout: 0 }));
  const fw: StateDict = new Map();
  for (const t of [...fg.params, ...fg.buffers]) {
    if (t.name === `${lin.name}.weight`) {
      const id = new Float32Array(F * F);
      for (let i = 0; i < F; i++) id[i * F + i] = 1;
      fw.set(t.name, id);
    } else if (t.name === `${lin.name}.bias`) fw.set(t.name, new Float32Array(F));
    else fw.set(t.name, weights.get(t.name)!);
  }
  const fm = new NativeModel(fg, fw, { threads: o.threads });
  const out = new Float32Array(ds.count * F);
  const pb = progressBar(o.progress, `${what} |{bar}| {value}/{total} images | {speed} img/s | ETA {eta_formatted}`);
  pb?.start(ds.count, 0, { speed: '-' });
  const t0 = performance.now();
  const loader = new BatchLoader({ dataset: ds, batchSize: o.batch, shuffle: false, augment: 'none', input: conv, worker: o.worker });
  let done = 0;
  try {
    for await (const b of loader.epoch(0)) {
      out.set(fm.predict(b.input, b.size), done * F);
      done += b.size;
      pb?.update(done, { speed: speed(done, t0) });
    }
  } finally {
    pb?.stop();
    await loader.close();
  }
  return out;
}

/** Logits of the linear head on n feature rows: out[i, c] = f·Wᵀ + b (float64 accumulation), f masked by dropout. */
function headForward(feat: Float32Array, n: number, F: number, W: Float32Array, b: Float32Array, k: number, out: Float32Array, mask?: Float32Array): void {
  for (let i = 0; i < n; i++) {
    const fo = i * F;
    for (let c = 0; c < k; c++) {
      let s = b[c]!;
      const wo = c * F;
      if (mask) for (let j = 0; j < F; j++) s += feat[fo + j]! * mask[fo + j]! * W[wo + j]!;
      else for (let j = 0; j < F; j++) s += feat[fo + j]! * W[wo + j]!;
      out[i * k + c] = s;
    }
  }
}

/** The classifier of `graph` as the trained parameter set, stepping on feature batches [n, F]. */
export class LinearHead implements Trainable {
  readonly params: readonly ParamRef[];
  private readonly W: ParamRef;
  private readonly B: ParamRef;
  /** Width of the features the head takes. */
  readonly F: number;
  private readonly k: number;
  private readonly dropoutP: number;
  private logits = new Float32Array(0);
  private dlogits = new Float32Array(0);
  private mask = new Float32Array(0);

  /** `weights` is the whole model's state dict; its classifier arrays are trained in place. */
  constructor(graph: Graph, readonly weights: StateDict, noDecayBias: boolean) {
    const lin = classifierNode(graph);
    this.F = lin.inF;
    this.k = lin.outF;
    const W = weights.get(`${lin.name}.weight`)!;
    const B = weights.get(`${lin.name}.bias`)!;
    this.W = { name: `${lin.name}.weight`, value: W, grad: new Float32Array(W.length), decay: true };
    this.B = { name: `${lin.name}.bias`, value: B, grad: new Float32Array(B.length), decay: !noDecayBias };
    this.params = [this.W, this.B];
    this.dropoutP = graph.nodes.find((n) => n.op === 'dropout')?.p ?? 0;
  }

  step<T>(feat: Float32Array, n: number, task: Task<T>, target: T, opts: StepOptions): TaskLoss {
    task.validate(target, n);
    const { F, k } = this;
    if (this.logits.length < n * k) {
      this.logits = new Float32Array(n * k);
      this.dlogits = new Float32Array(n * k);
    }
    let mask: Float32Array | undefined;
    if (this.dropoutP > 0) {
      if (!opts.rng) throw new Error('a model with dropout needs opts.rng in step');
      if (this.mask.length < n * F) this.mask = new Float32Array(n * F);
      mask = this.mask;
      const p = this.dropoutP;
      for (let i = 0; i < n * F; i++) mask[i] = opts.rng.uniform() < p ? 0 : 1 / (1 - p);
    }
    const logits = this.logits.subarray(0, n * k);
    const dlogits = this.dlogits.subarray(0, n * k);
    headForward(feat, n, F, this.W.value, this.B.value, k, logits, mask);
    const r = task.loss(new Map([[LOGITS, logits]]), target, n, new Map([[LOGITS, dlogits]]));
    const [Wg, Bg] = [this.W.grad, this.B.grad];
    Wg.fill(0);
    Bg.fill(0);
    for (let i = 0; i < n; i++) {
      const fo = i * F;
      for (let c = 0; c < k; c++) {
        const d = dlogits[i * k + c]!;
        Bg[c]! += d;
        const wo = c * F;
        if (mask) for (let j = 0; j < F; j++) Wg[wo + j]! += d * feat[fo + j]! * mask[fo + j]!;
        else for (let j = 0; j < F; j++) Wg[wo + j]! += d * feat[fo + j]!;
      }
    }
    return r;
  }

  /** The head reads its weights directly: nothing to recompile. */
  weightsChanged(): void {}

  /** Evaluates the head with `weights` (e.g. the EMA's) on the features of every validation image. */
  evaluate(feat: Float32Array, ds: Dataset, weights: StateDict): EvalResult {
    const { F, k } = this;
    const acc = new EvalAccumulator(ds.classes);
    const W = weights.get(this.W.name)!;
    const B = weights.get(this.B.name)!;
    const chunk = 256;
    const logits = new Float32Array(chunk * k);
    for (let s = 0; s < ds.count; s += chunk) {
      const n = Math.min(chunk, ds.count - s);
      headForward(feat.subarray(s * F, (s + n) * F), n, F, W, B, k, logits);
      acc.add(logits, ds.labels.subarray(s, s + n), n);
    }
    return acc.result();
  }
}

/** Batches of the cached features of `ds` with their labels, shuffled per epoch like the image loader. */
export function featureBatches(feat: Float32Array, F: number, ds: Dataset, batch: number, seed: number): BatchSource<Int32Array> {
  const batchesPerEpoch = Math.ceil(ds.count / batch);
  return {
    batchesPerEpoch,
    async *epoch(epoch, { startBatch }): AsyncGenerator<TaskBatch<Int32Array>> {
      const order = epochOrder({ count: ds.count, shuffle: true, seed }, epoch);
      for (let index = startBatch; index < batchesPerEpoch; index++) {
        const rows = order.subarray(index * batch, Math.min((index + 1) * batch, ds.count));
        const input = new Float32Array(rows.length * F);
        rows.forEach((r, i) => input.set(feat.subarray(r * F, (r + 1) * F), i * F));
        yield { index, size: rows.length, input, target: Int32Array.from(rows, (r) => ds.labels[r]!) };
      }
    },
    close: async () => {},
  };
}
