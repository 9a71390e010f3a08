/**
 * Exponential moving average of the weights (tf.train.ExponentialMovingAverage as TF-slim's
 * train_image_classifier uses it with --moving_average_decay 0.9999):
 *
 *   shadow = decay·shadow + (1 − decay)·w,   decay = min(decay, (1 + n)/(10 + n)) with `numUpdatesWarmup`
 *
 * where n counts the previous updates (TF passes global_step as num_updates). Parameters are averaged (in
 * float64 shadows, so the tiny (1 − decay) increments are not lost to float32 rounding); BN running
 * statistics are copied (they already are moving averages) unless `buffers: 'average'` (TF-slim averages every
 * model variable, moving_mean/variance included).
 */
import type { Graph } from '../model/graph.js';
import { fail } from '../util/errors.js';

export interface EMAOptions {
  /** Default 0.9999 (TF-slim moving_average_decay). */
  decay?: number;
  /** TF's num_updates warm-up: decay = min(decay, (1 + n)/(10 + n)). Default true. */
  numUpdatesWarmup?: boolean;
  /** BN running mean/var: copy (default) or average like the params. num_batches_tracked is always copied. */
  buffers?: 'copy' | 'average';
}

/** Key of the update counter in `stateDict()`: [n mod 2^24, floor(n / 2^24)], exact in float32. */
export const EMA_COUNT_KEY = 'num_updates';
const TWO24 = 16777216;

export class EMA {
  readonly decay: number;
  readonly numUpdatesWarmup: boolean;
  private readonly averaged: string[];
  private readonly copied: string[];
  private readonly shadow = new Map<string, Float64Array>();
  private readonly sizes = new Map<string, number>();
  private count = 0;

  /** Starts the shadows at the current `weights` (a model's state dict: params + BN buffers). */
  constructor(graph: Graph, weights: ReadonlyMap<string, Float32Array>, opts: EMAOptions = {}) {
    this.decay = opts.decay ?? 0.9999;
    if (typeof this.decay !== 'number' || !(this.decay >= 0 && this.decay <= 1)) throw new Error(`EMA: decay must be in [0, 1], got ${String(this.decay)}`);
    this.numUpdatesWarmup = opts.numUpdatesWarmup ?? true;
    const avgBuffers = (opts.buffers ?? 'copy') === 'average';
    this.averaged = graph.params.map((p) => p.name);
    this.copied = [];
    for (const b of graph.buffers) {
      if (avgBuffers && b.role !== 'bn.num_batches_tracked') this.averaged.push(b.name);
      else this.copied.push(b.name);
    }
    for (const name of [...this.averaged, ...this.copied]) {
      const w = weights.get(name);
      if (!w) throw new Error(`EMA: the weights have no ${name}`);
      this.sizes.set(name, w.length);
      this.shadow.set(name, Float64Array.from(w));
    }
  }

  /** Number of updates so far. */
  get numUpdates(): number {
    return this.count;
  }

  /** The decay the next update will use. */
  currentDecay(): number {
    const n = this.count;
    return this.numUpdatesWarmup ? Math.min(this.decay, (1 + n) / (10 + n)) : this.decay;
  }

  /** One EMA step towards `weights` (call after each optimizer step). */
  update(weights: ReadonlyMap<string, Float32Array>): void {
    const d = this.currentDecay();
    const k = 1 - d;
    for (const name of this.averaged) {
      const w = this.get(weights, name);
      const s = this.shadow.get(name)!;
      for (let i = 0; i < s.length; i++) s[i]! += k * (w[i]! - s[i]!);
    }
    for (const name of this.copied) {
      const w = this.get(weights, name);
      const s = this.shadow.get(name)!;
      for (let i = 0; i < s.length; i++) s[i] = w[i]!;
    }
    this.count++;
  }

  /** Write the averaged weights (and copied buffers) into `weights`; a NativeModel then needs `weightsChanged()`. */
  copyTo(weights: ReadonlyMap<string, Float32Array>): void {
    for (const [name, s] of this.shadow) this.get(weights, name).set(s);
  }

  /** The averaged weights as a new state dict (float32). */
  weights(): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const [name, s] of this.shadow) out.set(name, Float32Array.from(s));
    return out;
  }

  /** For checkpoints: the shadows by weight name (float32) plus `num_updates`. */
  stateDict(): Map<string, Float32Array> {
    const out = this.weights();
    out.set(EMA_COUNT_KEY, new Float32Array([this.count % TWO24, Math.floor(this.count / TWO24)]));
    return out;
  }

  loadStateDict(state: ReadonlyMap<string, Float32Array>, source: string): void {
    const problems: string[] = [];
    for (const [name, n] of this.sizes) {
      const a = state.get(name);
      if (!a) problems.push(`missing ${name}`);
      else if (a.length !== n) problems.push(`${name} has ${a.length} values, expected ${n}`);
    }
    const c = state.get(EMA_COUNT_KEY);
    if (!c) problems.push(`missing ${EMA_COUNT_KEY}`);
    else if (c.length !== 2 || !c.every((v) => Number.isInteger(v) && v >= 0)) problems.push(`${EMA_COUNT_KEY} must be two non-negative integers, got [${[...c].join(', ')}]`);
    for (const k of state.keys()) if (k !== EMA_COUNT_KEY && !this.sizes.has(k)) problems.push(`unexpected ${k}`);
    if (problems.length) {
      const more = problems.length > 12 ? `\n  ... and ${problems.length - 12} more` : '';
      fail(source, `EMA state does not match the model:\n  ${problems.slice(0, 12).join('\n  ')}${more}`);
    }
    for (const [name, s] of this.shadow) s.set(state.get(name)!);
    this.count = c![0]! + c![1]! * TWO24;
  }

  private get(weights: ReadonlyMap<string, Float32Array>, name: string): Float32Array {
    const w = weights.get(name);
    if (!w) throw new Error(`EMA: the weights have no ${name}`);
    if (w.length !== this.sizes.get(name)) throw new Error(`EMA: ${name} has ${w.length} values, expected ${this.sizes.get(name)}`);
    return w;
  }
}
