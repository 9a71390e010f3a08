/**
 * A model on the native oneDNN engine: eval-mode inference, and training steps (forward with batch statistics,
 * a task's loss on the named outputs, backward seeded from its output gradients) that leave every parameter
 * gradient in `grads`.
 */
import os from 'node:os';
import { native, setThreads, type ActFormat, type NativeProgram, type ProgramSpec } from './binding.js';
import { buildTrainProgram, dims4, TRAIN_IO, valueShape, type Externals, type TrainQuant } from './plan.js';
import { buildInferProgram, foldedWeights, INFER_IO } from './infer-plan.js';
import { foldBatchNorm, type FoldedGraph } from '../../model/fold.js';
import { LOGITS, numel, soleOutput, type BatchNormNode, type DropoutNode, type Graph, type GraphNode } from '../../model/graph.js';
import { checkStateDict, checkWeightValues, initWeights, type StateDict } from '../../model/weights.js';
import { assertFiniteInput } from '../../util/finite.js';
import { classification } from '../../task/classification.js';
import type { Task, TaskLoss } from '../../task/task.js';
import { Rng } from '../../util/rng.js';
import { ProgramCache, type ProgramCacheStats } from './program-cache.js';

/** Default byte budget of the compiled programs a model keeps (the most recent one is kept regardless). */
export const DEFAULT_PROGRAM_CACHE_BYTES = 1 << 30;

export interface NativeOptions {
  /** oneDNN (OpenMP) threads; default: all cores. */
  threads?: number;
  /** Activation memory layout inside the engine (default: blocked for the CPU's vector width). */
  actFormat?: ActFormat;
  /** Inference: fuse each expand 1x1 conv with its depthwise conv (default true; see InferPlanOptions). */
  fuseDepthwise?: boolean;
  /** Bytes of compiled programs (one per batch size and kind) kept, least recently used evicted first. */
  programCacheBytes?: number;
}

export interface StepResult {
  loss: number;
  /** Logits of the batch, [N, classes] (a view valid until the next step). */
  logits: Float32Array;
  /** Number of correct top-1 predictions. */
  correct: number;
}

export interface StepOptions {
  /** Also compute the gradient of the input (`inputGrad` afterwards). */
  inputGrad?: boolean;
  /** BN running-statistics momentum (PyTorch: 0.1). */
  bnMomentum?: number;
  /** Label smoothing for the cross-entropy (0 = none). */
  labelSmoothing?: number;
  /** Randomness for dropout masks. */
  rng?: Rng;
  /**
   * BN normalizes with its running statistics (constants, left unchanged) instead of the batch's, so the step
   * trains the function inference computes; γ and β still get gradients.
   */
  frozenBn?: boolean;
  /** Quantization-aware training (src/quant/qat.ts); its spec says whether BN is frozen. */
  quant?: QuantStep;
}

const FROZEN_BN: TrainQuant = { fakeQuant: [], frozenBn: true };

/**
 * A quantization-aware training step: the program fake-quantizes `spec`'s values and reads `arrays` (the
 * fake-quantized weights, under the weights' names, and the observer states) before the model's own weights.
 * The arrays are compiled into the program cached under `key`: one key per set of arrays and spec.
 */
export interface QuantStep {
  key: string;
  spec: TrainQuant;
  arrays: ReadonlyMap<string, Float32Array>;
}

/** Float32Array storage that is never on V8's heap, so the native side can keep its address. */
export function offHeap(n: number): Float32Array {
  return new Float32Array(new ArrayBuffer(Math.max(1, n) * 4));
}

class ArrayStore implements Externals {
  private m = new Map<string, Float32Array>();
  /** Bytes of the arrays this store owns (not its fallback's). */
  get bytes(): number {
    let n = 0;
    for (const a of this.m.values()) n += a.byteLength;
    return n;
  }
  constructor(private fallback?: { get(name: string): Float32Array | undefined }) {}
  get(name: string): Float32Array {
    const a = this.m.get(name) ?? this.fallback?.get(name);
    if (!a) throw new Error(`native engine: no array named ${name}`);
    return a;
  }
  ensure(name: string, n: number): Float32Array {
    let a = this.m.get(name);
    if (!a || a.length !== n) {
      a = offHeap(n);
      this.m.set(name, a);
    }
    return a;
  }
}

export class NativeModel {
  readonly graph: Graph;
  // The global pool whose output forward() returns as features (none in detection graphs).
  private readonly pool: GraphNode | undefined;
  /** Parameters and BN buffers (PyTorch state-dict names). Update in place; call `weightsChanged()` after. */
  readonly weights: StateDict;
  /** Gradients of every parameter after `trainStep`. */
  readonly grads = new Map<string, Float32Array>();
  private readonly actFormat: ActFormat;
  private readonly fuseDepthwise: boolean;
  private readonly programs: ProgramCache<Compiled>;
  // Folded weights and biases of the convs and the classifier.
  private readonly folded = new ArrayStore();
  private fgCache: FoldedGraph | null = null;
  private version = 0;
  private foldedVersion = -1;
  // forward() calls run one at a time; pending counts those queued or on a worker thread.
  private queue: Promise<unknown> = Promise.resolve();
  private pending = 0;

  constructor(graph: Graph, weights?: StateDict, opts: NativeOptions = {}) {
    this.graph = graph;
    this.pool = graph.nodes.find((n) => n.op === 'avgpool');
    this.actFormat = opts.actFormat ?? native().info().actFormat;
    this.fuseDepthwise = opts.fuseDepthwise ?? true;
    this.programs = new ProgramCache(opts.programCacheBytes ?? DEFAULT_PROGRAM_CACHE_BYTES);
    setThreads(opts.threads ?? os.availableParallelism());
    const src = weights ?? initWeights(graph);
    checkStateDict(graph, src, 'weights', true);
    checkWeightValues(graph, src, 'weights');
    this.weights = new Map();
    for (const t of [...graph.params, ...graph.buffers]) {
      const a = offHeap(Math.max(1, numel(t.shape)));
      const from = src.get(t.name);
      if (from) a.set(from);
      this.weights.set(t.name, a);
    }
    for (const p of graph.params) this.grads.set(p.name, offHeap(numel(p.shape)));
  }

  /** Tell the engine that `weights` were modified (re-folds BN for inference). */
  weightsChanged(): void {
    this.version++;
  }

  /** Replace the weights with those of a state dict (checked against the graph). */
  loadStateDict(sd: StateDict, source = 'state dict'): void {
    this.checkIdle('loadStateDict');
    checkStateDict(this.graph, sd, source, true);
    checkWeightValues(this.graph, sd, source);
    for (const [k, v] of this.weights) {
      const from = sd.get(k);
      if (from) v.set(from);
    }
    this.weightsChanged();
  }

  /** The batch size is valid and every tensor of it fits the engine's per-tensor limit. */
  private checkBatch(batch: number): void {
    if (!Number.isInteger(batch) || batch < 1) throw new Error(`batch must be a positive integer, got ${batch}`);
    const max = native().info().maxTensorElements;
    const g = this.graph;
    for (const [name, shape] of [['input', g.inputShape] as const, ...g.nodes.map((n) => [n.name, n.shape] as const)]) {
      const d = dims4(batch, shape);
      const count = d.reduce((a, b) => a * b, 1);
      if (count > max) {
        throw new Error(`native engine: batch ${batch} makes ${name} [${d.join(', ')}] = ${count} elements, more than the ${max} (2^31 - 1) ` +
          'per tensor the engine takes (oneDNN 2.6 indexes some kernels with 32-bit integers); use a smaller batch or resolution, or --engine ort');
      }
    }
  }

  private checkInput(input: Float32Array, batch: number): void {
    this.checkBatch(batch);
    const per = numel(this.graph.inputShape);
    if (input.length !== batch * per) {
      throw new Error(`input has ${input.length} values; batch ${batch} of [${this.graph.inputShape.join(', ')}] needs ${batch * per}`);
    }
    assertFiniteInput(input, batch);
  }

  /**
   * Eval-mode forward (running statistics, BN folded into the convs) of a single-output graph. Returns its
   * output, a classifier's logits [N, classes] (a copy).
   */
  predict(input: Float32Array, batch: number): Float32Array {
    const out = soleOutput(this.graph, 'NativeModel.predict (predictOutputs returns every output)');
    const p = this.inferProgram(input, batch);
    p.prog.run(0);
    return p.io.get(INFER_IO.output(out.name)).slice();
  }

  /** Eval-mode forward returning every named graph output ([N, ...shape] each, copies), e.g. `boxes` and `logits`. */
  predictOutputs(input: Float32Array, batch: number): Map<string, Float32Array> {
    const p = this.inferProgram(input, batch);
    p.prog.run(0);
    return this.outputsOf(p.io);
  }

  /**
   * `predict` on a libuv worker thread, so the event loop stays free, also returning the pooled features
   * the classifier reads ([N, C], C = 1280·max(1, α) for torchvision's layout). Calls queue one after
   * another; while one runs, the synchronous methods (`predict`, `trainStep`, `loadStateDict`) throw
   * instead of touching the buffers the native side is reading.
   */
  forward(input: Float32Array, batch: number): Promise<{ logits: Float32Array; features: Float32Array }> {
    const out = soleOutput(this.graph, 'NativeModel.forward (forwardOutputs returns every output)');
    return this.enqueue(input, batch, (io) => {
      const logits = io.get(INFER_IO.output(out.name)).slice();
      // A feature extractor's one output is its features.
      return { logits, features: this.pool ? io.get(INFER_IO.features).slice() : logits };
    });
  }

  /** `predictOutputs` on a libuv worker thread, queued as `forward`. */
  forwardOutputs(input: Float32Array, batch: number): Promise<Map<string, Float32Array>> {
    return this.enqueue(input, batch, (io) => this.outputsOf(io));
  }

  private outputsOf(io: ArrayStore): Map<string, Float32Array> {
    return new Map(this.graph.outputs.map((o) => [o.name, io.get(INFER_IO.output(o.name)).slice()] as const));
  }

  /** Runs the inference program on a worker thread after the forwards queued before, then reads its arrays. */
  private enqueue<R>(input: Float32Array, batch: number, read: (io: ArrayStore) => R): Promise<R> {
    const run = async (): Promise<R> => {
      const p = this.inferProgram(input, batch, true);
      await p.prog.runAsync(0);
      return read(p.io);
    };
    this.pending++;
    const result = this.queue.then(run).finally(() => this.pending--);
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Throws while a `forward` runs on a worker thread: its buffers must not change meanwhile. */
  private checkIdle(fn: string): void {
    if (this.pending > 0) throw new Error(`NativeModel.${fn}: a forward() is queued or running on a worker thread; await it first`);
  }

  /** The compiled inference program for `batch` with `input` copied in and the folded weights up to date. */
  private inferProgram(input: Float32Array, batch: number, fromQueue = false): { prog: NativeProgram; io: ArrayStore } {
    if (!fromQueue) this.checkIdle('predict');
    this.checkInput(input, batch);
    if (this.foldedVersion !== this.version) {
      foldedWeights(this.foldedGraph(), this.folded);
      for (const p of this.programs.values()) p.prog.weightsChanged();
      this.foldedVersion = this.version;
    }
    const key = `infer:${batch}`;
    let p = this.programs.get(key);
    if (!p) {
      const io = new ArrayStore(this.folded);
      io.ensure(INFER_IO.input, input.length);
      for (const o of this.graph.outputs) io.ensure(INFER_IO.output(o.name), batch * numel(valueShape(this.graph, o.value)));
      // Graphs without a global pool have no features; the plan then names what it cannot run.
      if (this.pool) io.ensure(INFER_IO.features, batch * this.featureSize);
      p = this.compile(key, buildInferProgram(this.foldedGraph(), batch, io, this.actFormat, { fuseDepthwise: this.fuseDepthwise }), io, batch);
    }
    p.io.get(INFER_IO.input).set(input);
    return p;
  }

  /** Width of the pooled feature vector (the classifier's input). */
  get featureSize(): number {
    if (!this.pool) throw new Error('NativeModel: the graph has no global pool');
    return numel(this.pool.shape);
  }

  /** The eval-mode folded graph of the current weights (refolded when they changed). */
  private foldedGraph(): FoldedGraph {
    if (!this.fgCache || this.foldedVersion !== this.version) this.fgCache = foldBatchNorm(this.graph, this.weights);
    return this.fgCache;
  }

  /**
   * Compiles a program unless its memory estimate (the buffers it allocates plus its own arrays) exceeds the
   * memory available now, and caches it.
   */
  private compile(key: string, spec: ProgramSpec, io: ArrayStore, batch: number): Compiled {
    const estimate = planBytes(spec) + io.bytes;
    const available = os.freemem();
    if (estimate > available) {
      throw new Error(`native engine: batch ${batch} needs an estimated ${gb(estimate)} for its activations, ${gb(available)} is available; use a smaller batch`);
    }
    const { Program } = native();
    const prog = new Program(spec);
    const p = { prog, io, bytes: prog.bytes() + io.bytes };
    this.programs.add(key, p);
    return p;
  }

  /** Compiled programs kept (count, bytes, evictions so far). */
  programStats(): ProgramCacheStats {
    return this.programs.stats();
  }

  private trainProgram(batch: number, inputGrad: boolean, quant: QuantStep | undefined, frozenBn: boolean): Compiled {
    const spec = quant?.spec ?? (frozenBn ? FROZEN_BN : undefined);
    const key = `train:${batch}:${inputGrad}${quant ? `:${quant.key}` : frozenBn ? ':frozen-bn' : ''}`;
    let p = this.programs.get(key);
    if (p) return p;
    const io = new ArrayStore({ get: (name) => quant?.arrays.get(name) ?? this.weights.get(name) ?? this.gradArray(name) });
    const g = this.graph;
    io.ensure(TRAIN_IO.input, batch * numel(g.inputShape));
    for (const o of g.outputs) {
      const n = batch * numel(valueShape(g, o.value));
      io.ensure(TRAIN_IO.output(o.name), n);
      io.ensure(TRAIN_IO.outputGrad(o.name), n);
    }
    if (inputGrad) io.ensure(TRAIN_IO.dinput, batch * numel(g.inputShape));
    for (const n of g.nodes) {
      if (n.op === 'bn') {
        io.ensure(TRAIN_IO.batchMean(n.name), n.channels);
        io.ensure(TRAIN_IO.batchVar(n.name), n.channels);
      } else if (n.op === 'dropout') {
        io.ensure(TRAIN_IO.mask(n.name), batch * numel(n.shape));
      }
    }
    return this.compile(key, buildTrainProgram(g, batch, io, this.actFormat, inputGrad, spec), io, batch);
  }

  private gradArray(name: string): Float32Array | undefined {
    return name.startsWith('grad.') ? this.grads.get(name.slice(5)) : undefined;
  }

  /**
   * One training-mode forward + loss + backward on a batch for any task: the forward's named outputs go to
   * `task.loss`, whose output gradients seed the backward. Updates BN running statistics (PyTorch semantics:
   * momentum 0.1, unbiased running variance) and leaves gradients in `grads`. No weight update. The outputs
   * returned are views valid until the next step.
   */
  step<T>(input: Float32Array, batch: number, task: Task<T>, target: T, opts: StepOptions = {}): TaskLoss & { outputs: ReadonlyMap<string, Float32Array> } {
    this.checkIdle('step');
    this.checkInput(input, batch);
    task.validate(target, batch);
    if (opts.quant && opts.frozenBn !== undefined) throw new Error('NativeModel.step: with quant, its spec.frozenBn decides; do not pass frozenBn too');
    const frozenBn = opts.quant?.spec.frozenBn ?? opts.frozenBn ?? false;
    const p = this.trainProgram(batch, opts.inputGrad ?? false, opts.quant, frozenBn);
    const outputs = new Map(this.graph.outputs.map((o) => [o.name, p.io.get(TRAIN_IO.output(o.name))] as const));
    const grads = new Map(this.graph.outputs.map((o) => [o.name, p.io.get(TRAIN_IO.outputGrad(o.name))] as const));
    p.io.get(TRAIN_IO.input).set(input);
    for (const n of this.graph.nodes) if (n.op === 'dropout') this.drawMask(n, p.io.get(TRAIN_IO.mask(n.name)), opts.rng);
    p.prog.run(0);
    if (!frozenBn) this.updateRunningStats(p.io, batch, opts.bnMomentum ?? 0.1);
    // An output the task has no loss on gets a zero gradient, not the previous step's.
    for (const g of grads.values()) g.fill(0);
    const r = task.loss(outputs, target, batch, grads);
    p.prog.run(1);
    this.weightsChanged();
    return { ...r, outputs };
  }

  /** {@link step} for classification: softmax cross-entropy (optionally label-smoothed) on the logits. */
  trainStep(input: Float32Array, labels: ArrayLike<number>, batch: number, opts: StepOptions = {}): StepResult {
    const r = this.step(input, batch, classification(this.numClasses, { labelSmoothing: opts.labelSmoothing }), labels, opts);
    return { loss: r.loss, logits: r.outputs.get(LOGITS)!, correct: r.counts['correct']! };
  }

  /** oneDNN's implementation of every compiled step ("name: impl"); `ref:` names a slow reference kernel. */
  /** Classes of the model's classifier (the width of `predict`'s rows). */
  get numClasses(): number {
    return this.graph.config.numClasses;
  }

  implementations(): string[] {
    return [...this.programs.values()].flatMap((p) => p.prog.implementations());
  }

  /** Gradient of the loss w.r.t. the input of the last `trainStep` run with `inputGrad: true`. */
  inputGrad(batch: number): Float32Array {
    const p = this.programs.get(`train:${batch}:true`);
    if (!p) throw new Error(`no training step with inputGrad at batch ${batch} has run`);
    return p.io.get(TRAIN_IO.dinput);
  }

  private drawMask(n: DropoutNode, mask: Float32Array, rng?: Rng): void {
    if (!rng) throw new Error('a model with dropout needs opts.rng in trainStep');
    const keep = 1 / (1 - n.p);
    for (let i = 0; i < mask.length; i++) mask[i] = rng.uniform() < n.p ? 0 : keep;
  }

  private updateRunningStats(io: ArrayStore, batch: number, momentum: number): void {
    for (const n of this.graph.nodes) {
      if (n.op !== 'bn') continue;
      updateBn(n, io, this.weights, batch, momentum);
    }
  }
}

interface Compiled {
  prog: NativeProgram;
  io: ArrayStore;
  bytes: number;
}

/** Bytes of the buffers a program allocates itself (those without caller-owned data; an arena once, at its largest). */
export function planBytes(spec: ProgramSpec): number {
  let n = 0;
  const arenas = new Map<number, number>();
  for (const b of spec.buffers) {
    if (b.data || !b.dims) continue;
    const bytes = 4 * b.dims.reduce((a, d) => a * d, 1);
    if (b.arena === undefined) n += bytes;
    else arenas.set(b.arena, Math.max(arenas.get(b.arena) ?? 0, bytes));
  }
  for (const bytes of arenas.values()) n += bytes;
  return n;
}

const gb = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(2)} GB`;

function updateBn(n: BatchNormNode, io: ArrayStore, w: StateDict, batch: number, m: number): void {
  const count = batch * n.shape[1]! * n.shape[2]!;
  const unbias = count > 1 ? count / (count - 1) : 1;
  const mean = io.get(TRAIN_IO.batchMean(n.name));
  const variance = io.get(TRAIN_IO.batchVar(n.name));
  const rm = w.get(`${n.name}.running_mean`)!;
  const rv = w.get(`${n.name}.running_var`)!;
  for (let c = 0; c < n.channels; c++) {
    rm[c] = (1 - m) * rm[c]! + m * mean[c]!;
    rv[c] = (1 - m) * rv[c]! + m * variance[c]! * unbias;
  }
  w.get(`${n.name}.num_batches_tracked`)![0]! += 1;
}
