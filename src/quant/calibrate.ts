/**
 * Running an exported ONNX model over a dataset with ONNX Runtime: activation statistics for post-training
 * quantization (min/max, histograms) and the range each calibration method derives from them, plus top-1/top-5
 * evaluation of any ONNX classifier (float32 or int8) on the same batches.
 */
import type onnxProto from 'onnx-proto';
import { gatherLabels, inputShape, toModelInput, type Dataset, type InputConvention } from '../data/dataset.js';
import { evaluate, type EvalResult } from '../train/metrics.js';
import type { OrtModel } from '../engine/onnx/session.js';

export const CALIBRATION_METHODS = ['minmax', 'percentile', 'entropy'] as const;
export type CalibrationMethod = (typeof CALIBRATION_METHODS)[number];

/** Histogram bins per sign: [0, max] for non-negative tensors, [-A, 0) and [0, A] for signed ones (TensorRT: 2048). */
export const HISTOGRAM_BINS = 2048;

/** Fixed-range histogram; values outside [lo, hi] count in the edge bins. */
export class Histogram {
  readonly counts: Float64Array;
  readonly width: number;
  total = 0;
  constructor(readonly lo: number, readonly hi: number, bins: number) {
    if (!(hi > lo) || !Number.isInteger(bins) || bins < 1) throw new Error(`Histogram: need lo < hi and bins >= 1, got [${lo}, ${hi}], ${bins}`);
    this.counts = new Float64Array(bins);
    this.width = (hi - lo) / bins;
  }

  add(values: ArrayLike<number>): void {
    const c = this.counts;
    const last = c.length - 1;
    const inv = 1 / this.width;
    const lo = this.lo;
    for (let i = 0; i < values.length; i++) {
      const b = Math.floor((values[i]! - lo) * inv);
      c[b < 0 ? 0 : b > last ? last : b]!++;
    }
    this.total += values.length;
  }
}

/** What calibration saw of one tensor. */
export interface TensorStats {
  min: number;
  max: number;
  /** Over [0, max] when min >= 0, else over [-A, A] with A = max(|min|, |max|) and 2·HISTOGRAM_BINS bins. */
  hist: Histogram | null;
}

/** The histogram range and bin count for a tensor whose observed range is [min, max] (symmetric about 0 when signed). */
export function histogramFor(min: number, max: number, bins = HISTOGRAM_BINS): Histogram | null {
  if (min >= 0) return max > 0 ? new Histogram(0, max, bins) : null;
  const a = Math.max(-min, max);
  return new Histogram(-a, a, 2 * bins);
}

export interface RangeOptions {
  /** Percentile kept by 'percentile' (default 99.99): each tail beyond it is clipped. */
  percentile?: number;
}

/** The float range [lo, hi] (lo <= 0 <= hi) a tensor is quantized over, by calibration method. */
export function calibrationRange(method: CalibrationMethod, s: TensorStats, opts: RangeOptions = {}): [number, number] {
  const lo = Math.min(0, s.min);
  const hi = Math.max(0, s.max);
  if (method === 'minmax' || lo === hi) return [lo, hi];
  if (!s.hist) throw new Error(`calibrationRange: method ${method} needs a histogram`);
  if (method === 'percentile') return percentileRange(s.hist, opts.percentile ?? 99.99, lo, hi);
  // entropy: TensorRT's KL threshold on |x| — 256 levels over [0, T] for a non-negative (uint8, zero point 0)
  // tensor; 128 over |x| for a signed one, i.e. 256 levels over [-T, T].
  const signed = s.hist.lo < 0;
  const abs = signed ? foldAbs(s.hist.counts) : Float64Array.from(s.hist.counts);
  // The exact zeros of a ReLU output would dominate P and make every merged first level look costly, pulling the
  // threshold far in; as NVIDIA's pytorch-quantization does, the zero bin counts like its neighbour.
  if (abs.length > 1) abs[0] = abs[1]!;
  const t = entropyThreshold(abs, s.hist.width, signed ? 128 : 256);
  return [Math.max(lo, -t), Math.min(hi, t)];
}

/**
 * [lo, hi] cutting (100 - p)% of the values off each tail: lo is the lower edge of the first bin where the count
 * from the left exceeds the cut, hi the upper edge of the bin where the count from the left reaches p%.
 */
export function percentileRange(h: Histogram, p: number, min = h.lo, max = h.hi): [number, number] {
  if (!(p > 0 && p <= 100)) throw new Error(`percentile must be in (0, 100], got ${p}`);
  const cut = h.total * (1 - p / 100);
  const keep = h.total - cut;
  const n = h.counts.length;
  let lo = h.lo;
  let hi = h.hi;
  let cum = 0;
  let first = true;
  for (let b = 0; b < n; b++) {
    cum += h.counts[b]!;
    if (first && cum > cut) {
      lo = h.lo + b * h.width;
      first = false;
    }
    if (cum >= keep) {
      hi = h.lo + (b + 1) * h.width;
      break;
    }
  }
  return [Math.min(0, Math.max(lo, min)), Math.max(0, Math.min(hi, max))];
}

/** A histogram over [-A, A] with 2n bins folded to |x| over [0, A] with n bins. */
export function foldAbs(counts: Float64Array): Float64Array {
  const n = counts.length / 2;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = counts[n + i]! + counts[n - 1 - i]!;
  return out;
}

/**
 * TensorRT's entropy calibration on a histogram of |x| (bin width `width`): for each candidate threshold of i bins
 * (i >= levels), P = the first i bins with the tail folded into the last one, Q = the same bins quantized to
 * `levels` levels (each level spread evenly over its non-empty bins), both smoothed as MXNet does (eps of mass
 * onto empty bins); returns (argmin_i KL(P || Q) + 0.5) · width. One pass per candidate, on prefix sums.
 */
export function entropyThreshold(abs: Float64Array, width: number, levels: number, eps = 1e-4): number {
  const n = abs.length;
  if (n <= levels) return n * width;
  const cum = new Float64Array(n + 1);
  const nonZero = new Int32Array(n + 1);
  for (let j = 0; j < n; j++) {
    cum[j + 1] = cum[j]! + abs[j]!;
    nonZero[j + 1] = nonZero[j]! + (abs[j] !== 0 ? 1 : 0);
  }
  const total = cum[n]!;
  if (total === 0) return n * width;
  // Smoothing: empty bins get eps, the others give up the same mass evenly.
  const take = (zeros: number, size: number): number => (zeros > 0 && zeros < size ? (eps * zeros) / (size - zeros) : 0);
  let best = Infinity;
  let bestI = n;
  for (let i = levels; i <= n; i++) {
    const qsum = cum[i]!;
    if (qsum === 0) continue;
    const lastP = abs[i - 1]! + (total - qsum);
    const zerosQ = i - nonZero[i]!;
    const zerosP = zerosQ - (abs[i - 1] === 0 && lastP > 0 ? 1 : 0);
    const takeP = take(zerosP, i);
    const takeQ = take(zerosQ, i);
    const per = i / levels;
    let kl = 0;
    for (let g = 0; g < levels; g++) {
      const a = Math.floor(g * per);
      const b = g === levels - 1 ? i : Math.floor((g + 1) * per);
      const ne = nonZero[b]! - nonZero[a]!;
      const qLevel = ne > 0 ? (cum[b]! - cum[a]!) / ne / qsum : 0;
      for (let j = a; j < b; j++) {
        const p = (j === i - 1 ? lastP : abs[j]!) / total;
        const q = abs[j] !== 0 ? qLevel : 0;
        const ps = p === 0 ? (zerosP < i ? eps : 0) : p - takeP;
        const qs = q === 0 ? eps : q - takeQ;
        if (ps > 0) kl += ps * Math.log(ps / qs);
      }
    }
    if (kl < best) {
      best = kl;
      bestI = i;
    }
  }
  return Math.min(n, bestI + 0.5) * width;
}

/** A batch of normalized model input with its labels. */
export interface Batch {
  input: Float32Array;
  labels: Int32Array;
  size: number;
}

/** The images of `ds` in order, `batch` at a time, prepared as `mnv2 eval` does (no augmentation). */
export function* datasetBatches(ds: Dataset, conv: InputConvention, batch: number, count = ds.count): Generator<Batch> {
  if (!Number.isInteger(batch) || batch < 1) throw new Error(`batch size must be a positive integer, got ${batch}`);
  const s = inputShape(ds, conv);
  const buf = new Float32Array(batch * s.channels * s.height * s.width);
  const n = Math.min(count, ds.count);
  for (let start = 0; start < n; start += batch) {
    const size = Math.min(batch, n - start);
    const idx = Int32Array.from({ length: size }, (_, i) => start + i);
    yield { input: toModelInput(ds, idx, buf, conv), labels: gatherLabels(ds, idx), size };
  }
}

/** The images a model is calibrated on: how many, each one's model input [C, H, W], batches of them in order. */
export interface CalibrationImages {
  name: string;
  count: number;
  shape: readonly [number, number, number];
  /** A fixed random subset of n images (seeded), in order; all of them when n >= count. */
  subset(n: number, seed: number): CalibrationImages;
  batches(batch: number): AsyncIterable<{ input: Float32Array; size: number }>;
}

/** Top-1/top-5 (and the rest of EvalResult) of an ONNX classifier on a dataset. */
export async function evaluateOnnx(model: OrtModel, ds: Dataset, conv: InputConvention, batch = 250): Promise<EvalResult> {
  checkInputShape(ds, conv, model.inputShape);
  return evaluate({ numClasses: model.numClasses, predict: (x, n) => model.run(x, n) }, ds, conv, batch);
}

/** Throws unless the dataset, prepared with `conv`, gives inputs of the model's shape [C, H, W]. */
export function checkInputShape(ds: Dataset, conv: InputConvention, shape: readonly number[]): void {
  const s = inputShape(ds, conv);
  if (s.channels !== shape[0] || s.height !== shape[1] || s.width !== shape[2]) {
    throw new Error(`${ds.name} gives ${s.channels}x${s.height}x${s.width} inputs, the model takes ${shape.join('x')}`);
  }
}

export interface CollectOptions {
  /** Batch size of the calibration runs (default 32). */
  batch?: number;
  threads?: number;
  /** Also build histograms (a second pass over the images; needed by 'percentile' and 'entropy'). */
  histograms?: boolean;
  bins?: number;
}

/**
 * Runs `model` (a float32 ModelProto) on every image of `images` with every tensor of `tensors` added as a graph
 * output, and returns what each tensor held: min/max, and with `histograms` a histogram over the observed range.
 */
export async function collectStats(
  model: onnxProto.onnx.IModelProto, tensors: readonly string[], images: CalibrationImages, opts: CollectOptions = {},
): Promise<Map<string, TensorStats>> {
  // Loaded here, not at import: the calibration methods are a CLI choice list, read at every start-up.
  const [ort, { default: { onnx } }] = await Promise.all([import('onnxruntime-node'), import('onnx-proto')]);
  const graph = model.graph!;
  const inputName = graph.input![0]!.name!;
  // The graph input's statistics come from the batches themselves; everything else is fetched as an extra output.
  const fetched = tensors.filter((t) => t !== inputName);
  const have = new Set((graph.output ?? []).map((o) => o.name));
  const extra = fetched.filter((t) => !have.has(t)).map((name) => ({ name, type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT } } }));
  const probe = onnx.ModelProto.encode(onnx.ModelProto.create({ ...model, graph: { ...graph, output: [...(graph.output ?? []), ...extra] } })).finish();
  const session = await ort.InferenceSession.create(probe, {
    graphOptimizationLevel: 'all', intraOpNumThreads: opts.threads ?? 0, interOpNumThreads: 1, executionMode: 'sequential', logSeverityLevel: 3,
  });
  const [c, h, w] = images.shape;
  const batch = opts.batch ?? 32;
  const stats = new Map<string, TensorStats>(tensors.map((t) => [t, { min: Infinity, max: -Infinity, hist: null }]));
  const pass = async (visit: (s: TensorStats, data: Float32Array) => void): Promise<void> => {
    for await (const b of images.batches(batch)) {
      const out = await session.run({ [inputName]: new ort.Tensor('float32', b.input, [b.size, c, h, w]) }, fetched);
      for (const t of tensors) visit(stats.get(t)!, t === inputName ? b.input : (out[t]!.data as Float32Array));
    }
  };
  try {
    await pass((s, data) => {
      let mn = s.min;
      let mx = s.max;
      for (let i = 0; i < data.length; i++) {
        const v = data[i]!;
        if (v < mn) mn = v;
        if (v > mx) mx = v;
        if (v !== v) mn = NaN; // NaN sticks: caught below
      }
      s.min = mn;
      s.max = mx;
    });
    if (opts.histograms) {
      for (const s of stats.values()) s.hist = histogramFor(s.min, s.max, opts.bins);
      await pass((s, data) => s.hist?.add(data));
    }
  } finally {
    await session.release();
  }
  for (const [t, s] of stats) if (!Number.isFinite(s.min) || !Number.isFinite(s.max)) throw new Error(`calibration: tensor ${t} holds non-finite values`);
  return stats;
}
