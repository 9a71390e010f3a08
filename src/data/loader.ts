/**
 * Batch loader: prepares shuffled, augmented, normalized NCHW float32 batches in a worker thread, so loading
 * overlaps compute on the main thread.
 *
 * Determinism: the order of epoch e depends only on (seed, e), and the augmentation of batch b of epoch e only
 * on (seed, e, b), so a run resumed at any epoch (or batch, see EpochOptions.startBatch) reproduces the same batches.
 *
 * The dataset's images are shared with the worker once (SharedArrayBuffer; copied into one on the first epoch if
 * they are not already shared); each batch is a fresh ArrayBuffer transferred (not copied) to the main thread.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Rng } from '../util/rng.js';
import { canvasBatch } from './canvas.js';
import { AUGMENT_KINDS, randomResizedCropBatch, seedAugmentBatch, type AugmentKind, type SeedAugmentOptions } from './augment.js';
import { defaultInputConvention, inputShape, toModelInput, validateDataset, type Dataset, type InputConvention, type Shape3 } from './dataset.js';

export type { AugmentKind } from './augment.js';

export interface BatchLoaderOptions {
  dataset: Dataset;
  batchSize: number;
  /** Shuffle each epoch (default true). */
  shuffle?: boolean;
  /** 'seed': RandomCrop(padding 4) + horizontal flip; 'none' (default). */
  augment?: AugmentKind;
  seedAugment?: SeedAugmentOptions;
  seed?: number;
  /** Drop the last incomplete batch (default false). */
  dropLast?: boolean;
  /** Padding / channel replication / normalization (default: defaultInputConvention(dataset)). */
  input?: InputConvention;
  /** Batches prepared ahead of the consumer (default 3). */
  prefetch?: number;
  /** false: prepare batches on the calling thread (no overlap; for debugging). Default true. */
  worker?: boolean;
}

export interface Batch {
  /** NCHW float32, size × C × H × W. */
  input: Float32Array;
  labels: Int32Array;
  /** Dataset indices of the images in this batch. */
  indices: Int32Array;
  /** Batch number within the epoch. */
  index: number;
  epoch: number;
  /** Images in this batch (batchSize, or fewer for the last one without dropLast). */
  size: number;
}

export interface EpochOptions {
  /** Start at this batch (resume mid-epoch); earlier batches are skipped without being computed. */
  startBatch?: number;
}

/** Settings shared with the worker (structured-cloneable). */
export interface LoaderPlan {
  count: number;
  batchSize: number;
  shuffle: boolean;
  augment: AugmentKind;
  seedAugment: SeedAugmentOptions;
  seed: number;
  dropLast: boolean;
  input: InputConvention;
}

function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A 32-bit seed derived from several integers (seed, epoch, batch...). */
export function deriveSeed(...words: number[]): number {
  let h = 0x2545f491;
  for (const w of words) {
    const lo = w >>> 0;
    const hi = Math.floor(w / 4294967296) >>> 0;
    h = mix32((h ^ lo) + 0x9e3779b9);
    if (hi !== 0) h = mix32((h ^ hi) + 0x7f4a7c15);
  }
  return h;
}

export function batchesPerEpoch(count: number, batchSize: number, dropLast: boolean): number {
  return dropLast ? Math.floor(count / batchSize) : Math.ceil(count / batchSize);
}

/** The sample order of an epoch: a permutation of 0..count-1 depending only on (seed, epoch). */
export function epochOrder(plan: Pick<LoaderPlan, 'count' | 'shuffle' | 'seed'>, epoch: number): Int32Array {
  const order = new Int32Array(plan.count);
  for (let i = 0; i < plan.count; i++) order[i] = i;
  if (plan.shuffle) new Rng(deriveSeed(plan.seed, epoch, 0x5eed)).shuffle(order);
  return order;
}

/** Computes batch `b` of an epoch (given that epoch's order). Used by the worker and by the in-thread mode. */
export function makeBatch(ds: Dataset, plan: LoaderPlan, order: Int32Array, epoch: number, b: number): Batch {
  const start = b * plan.batchSize;
  const end = Math.min(start + plan.batchSize, plan.count);
  const indices = order.slice(start, end);
  const shape = inputShape(ds, plan.input);
  const input = new Float32Array(indices.length * shape.channels * shape.height * shape.width);
  const rng = new Rng(deriveSeed(plan.seed, epoch, b + 1));
  if (plan.input.canvas) {
    // canvas conventions draw every batch on the frame: randomly to train, at fixed placements to evaluate
    canvasBatch(ds, indices, input, plan.input, plan.augment === 'canvas' ? rng : undefined);
  } else if (plan.augment === 'seed') {
    seedAugmentBatch(ds, indices, input, plan.input, rng, plan.seedAugment);
  } else if (plan.augment === 'rrc') {
    randomResizedCropBatch(ds, indices, input, plan.input, rng);
  } else {
    toModelInput(ds, indices, input, plan.input);
  }
  const labels = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) labels[i] = ds.labels[indices[i]!]!;
  return { input, labels, indices, index: b, epoch, size: indices.length };
}

/** Messages main → worker. */
export type ToWorker =
  | { type: 'epoch'; id: number; epoch: number; start: number; end: number; credits: number }
  | { type: 'credit'; id: number }
  | { type: 'cancel'; id: number };

/** Messages worker → main. */
export type FromWorker =
  | { type: 'batch'; id: number; index: number; input: Float32Array; labels: Int32Array; indices: Int32Array }
  | { type: 'error'; id: number; message: string; stack?: string };

export interface WorkerInit {
  meta: Omit<Dataset, 'images' | 'labels'>;
  images: Uint8Array;
  labels: Uint8Array;
  plan: LoaderPlan;
}

function workerUrl(): URL {
  const js = new URL('./loader-worker.js', import.meta.url);
  if (existsSync(fileURLToPath(js))) return js;
  throw new Error(`BatchLoader: worker script ${fileURLToPath(js)} not found (run \`npx tsc -p .\`)`);
}

type Waiter = { resolve: (m: FromWorker & { type: 'batch' }) => void; reject: (e: Error) => void };

export class BatchLoader {
  readonly dataset: Dataset;
  readonly plan: LoaderPlan;
  readonly prefetch: number;
  readonly useWorker: boolean;
  /** Per-image model input shape. */
  readonly shape: Shape3;
  private worker: Worker | null = null;
  private failure: Error | null = null;
  private closed = false;
  private active = false;
  private epochId = 0;
  private queue: (FromWorker & { type: 'batch' })[] = [];
  private waiter: Waiter | null = null;

  constructor(opts: BatchLoaderOptions) {
    const ds = opts.dataset;
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`BatchLoader: batchSize must be a positive integer, got ${opts.batchSize}`);
    if (ds.count < 1) throw new Error(`BatchLoader: dataset ${ds.name} is empty`);
    validateDataset(ds);
    const input = opts.input ?? defaultInputConvention(ds);
    this.shape = inputShape(ds, input);
    this.dataset = ds;
    this.plan = {
      count: ds.count,
      batchSize: opts.batchSize,
      shuffle: opts.shuffle ?? true,
      augment: opts.augment ?? 'none',
      seedAugment: { ...opts.seedAugment },
      seed: opts.seed ?? 0,
      dropLast: opts.dropLast ?? false,
      input: { channels: input.channels, pad: input.pad, mean: [...input.mean], std: [...input.std], ...(input.canvas && { canvas: { ...input.canvas } }) },
    };
    if (this.plan.augment === 'canvas' && !this.plan.input.canvas) throw new Error("BatchLoader: augment 'canvas' needs an input convention with a canvas");
    if (!AUGMENT_KINDS.includes(this.plan.augment)) throw new Error(`BatchLoader: unknown augment '${String(this.plan.augment)}'`);
    if (this.batchesPerEpoch === 0) throw new Error(`BatchLoader: ${ds.count} images give no batch of ${opts.batchSize} with dropLast`);
    this.prefetch = Math.max(1, Math.min(16, Math.floor(opts.prefetch ?? 3)));
    this.useWorker = opts.worker ?? true;
  }

  get batchesPerEpoch(): number {
    return batchesPerEpoch(this.plan.count, this.plan.batchSize, this.plan.dropLast);
  }

  private startWorker(): Worker {
    if (this.worker) return this.worker;
    const ds = this.dataset;
    let images = ds.images;
    if (!(images.buffer instanceof SharedArrayBuffer)) {
      const shared = new Uint8Array(new SharedArrayBuffer(images.length));
      shared.set(images);
      images = shared;
    }
    const { images: _i, labels: _l, ...meta } = ds;
    const init: WorkerInit = { meta: { ...meta, classes: [...ds.classes] }, images, labels: ds.labels, plan: this.plan };
    const w = new Worker(workerUrl(), { workerData: init });
    w.on('message', (m: FromWorker) => this.onMessage(m));
    w.on('error', (e) => this.fail(e instanceof Error ? e : new Error(String(e))));
    w.on('exit', (code) => {
      if (!this.closed) this.fail(new Error(`BatchLoader: worker exited unexpectedly (code ${code})`));
      this.worker = null;
    });
    w.unref(); // kept referenced only while an epoch is running
    this.worker = w;
    return w;
  }

  private onMessage(m: FromWorker): void {
    if (m.id !== this.epochId) return; // stale message of a cancelled epoch
    if (m.type === 'error') {
      const e = new Error(`BatchLoader worker: ${m.message}`);
      if (m.stack) e.stack = `${e.message}\n--- in worker ---\n${m.stack}`;
      this.fail(e);
      return;
    }
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve(m);
    } else {
      this.queue.push(m);
    }
  }

  private fail(e: Error): void {
    if (!this.failure) this.failure = e;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(e);
    }
  }

  private next(): Promise<FromWorker & { type: 'batch' }> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /** The batches of epoch `epoch` (0-based), in order. One epoch at a time per loader. */
  async *epoch(epoch: number, opts: EpochOptions = {}): AsyncGenerator<Batch, void, undefined> {
    if (this.closed) throw new Error('BatchLoader: closed');
    if (this.active) throw new Error('BatchLoader: an epoch is already being iterated');
    if (this.failure) throw this.failure;
    const n = this.batchesPerEpoch;
    const start = opts.startBatch ?? 0;
    if (!Number.isInteger(start) || start < 0 || start > n) throw new RangeError(`BatchLoader: startBatch ${start} not in [0, ${n}]`);
    this.active = true;
    try {
      if (!this.useWorker) {
        const order = epochOrder(this.plan, epoch);
        for (let b = start; b < n; b++) yield makeBatch(this.dataset, this.plan, order, epoch, b);
        return;
      }
      const w = this.startWorker();
      const id = ++this.epochId;
      this.queue = [];
      w.ref();
      let done = start;
      try {
        w.postMessage({ type: 'epoch', id, epoch, start, end: n, credits: this.prefetch } satisfies ToWorker);
        for (let b = start; b < n; b++) {
          const m = await this.next();
          if (m.index !== b) throw new Error(`BatchLoader: expected batch ${b}, worker sent ${m.index}`);
          done = b + 1;
          if (b + this.prefetch < n) w.postMessage({ type: 'credit', id } satisfies ToWorker);
          w.unref(); // while the consumer computes, the worker must not keep the process alive on its own
          yield { input: m.input, labels: m.labels, indices: m.indices, index: b, epoch, size: m.labels.length };
          w.ref();
        }
      } finally {
        if (done < n && this.worker) this.worker.postMessage({ type: 'cancel', id } satisfies ToWorker);
        this.epochId++; // drop anything still in flight
        this.queue = [];
        this.worker?.unref();
      }
    } finally {
      this.active = false;
    }
  }

  /** Stops the worker. Safe to call more than once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fail(new Error('BatchLoader: closed'));
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
  }
}
