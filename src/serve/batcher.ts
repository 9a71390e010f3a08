/**
 * Dynamic micro-batching: single images queue up and run through the model together, up to `maxBatch` images
 * or until the oldest has waited `maxWaitMs`, one batch at a time. A batch of N costs much less than N batches
 * of one on a CPU (the weights are read once, the kernels vectorize over the batch), so under load throughput
 * rises for a bounded added latency. `maxBatch` 1 runs every image as soon as the model is free.
 */
import { performance } from 'node:perf_hooks';

export interface BatcherOptions {
  maxBatch: number;
  /** How long the oldest queued image may wait for others before a partial batch runs. */
  maxWaitMs: number;
  /** Floats per input image (C·H·W) and per output row (classes). */
  inputSize: number;
  outputSize: number;
  /** Runs a batch: NCHW input of `batch` images to [batch, outputSize] logits. */
  run(input: Float32Array, batch: number): Promise<Float32Array>;
  /** Called after each successful batch with its size and model time. */
  onBatch?(size: number, ms: number): void;
}

export interface BatchResult {
  /** This image's row of logits. */
  logits: Float32Array;
  /** How many images ran in the same batch. */
  batchSize: number;
}

interface Pending {
  input: Float32Array;
  enqueued: number;
  resolve(r: BatchResult): void;
  reject(e: unknown): void;
}

export class BatcherClosedError extends Error {
  constructor() {
    super('the batcher is shutting down');
  }
}

export class Batcher {
  private readonly queue: Pending[] = [];
  private running: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly o: BatcherOptions) {
    if (!Number.isInteger(o.maxBatch) || o.maxBatch < 1) throw new Error(`max batch must be a positive integer, got ${o.maxBatch}`);
    if (!(o.maxWaitMs >= 0) || !Number.isFinite(o.maxWaitMs)) throw new Error(`max wait must be a non-negative number of ms, got ${o.maxWaitMs}`);
  }

  /** Images waiting for a batch (not counting the batch running). */
  get depth(): number {
    return this.queue.length;
  }

  /** Queue one image; resolves with its logits once its batch has run. */
  submit(input: Float32Array): Promise<BatchResult> {
    if (this.closed) return Promise.reject(new BatcherClosedError());
    if (input.length !== this.o.inputSize) {
      return Promise.reject(new Error(`batcher: input has ${input.length} values, expected ${this.o.inputSize}`));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ input, enqueued: performance.now(), resolve, reject });
      this.schedule();
    });
  }

  /** Stop taking images and run everything queued without waiting; resolves when the last batch is done. */
  async drain(): Promise<void> {
    this.closed = true;
    this.schedule();
    while (this.running) await this.running;
  }

  private schedule(): void {
    if (this.running || this.queue.length === 0) return;
    const wait = this.closed || this.queue.length >= this.o.maxBatch ? 0 : this.queue[0]!.enqueued + this.o.maxWaitMs - performance.now();
    if (wait > 0) {
      // The timer belongs to the head of the queue, which only a dispatch removes (and it clears the timer).
      this.timer ??= setTimeout(() => {
        this.timer = null;
        this.schedule();
      }, wait);
      return;
    }
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const items = this.queue.splice(0, this.o.maxBatch);
    this.running = this.runBatch(items).finally(() => {
      this.running = null;
      this.schedule();
    });
  }

  private async runBatch(items: Pending[]): Promise<void> {
    const n = items.length;
    const { inputSize, outputSize } = this.o;
    let input = items[0]!.input;
    if (n > 1) {
      input = new Float32Array(n * inputSize);
      items.forEach((it, i) => input.set(it.input, i * inputSize));
    }
    try {
      const t0 = performance.now();
      const logits = await this.o.run(input, n);
      if (logits.length !== n * outputSize) throw new Error(`the model returned ${logits.length} values for a batch of ${n}, expected ${n * outputSize}`);
      this.o.onBatch?.(n, performance.now() - t0);
      items.forEach((it, i) => it.resolve({ logits: logits.slice(i * outputSize, (i + 1) * outputSize), batchSize: n }));
    } catch (e) {
      for (const it of items) it.reject(e);
    }
  }
}
