/**
 * Evaluation on the native engine (eval mode: running statistics): top-1, top-5, per-class accuracy, mean loss and
 * a confusion matrix, as a text table and as a PNG heat map (drawn pixel by pixel, encoded by sharp).
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.js';
import { BatchLoader } from '../data/loader.js';
import type { Dataset, InputConvention } from '../data/dataset.js';
import { rowMax } from '../task/classification.js';

export interface ClassAccuracy {
  index: number;
  name: string;
  correct: number;
  total: number;
  accuracy: number;
}

export interface EvalResult {
  top1: number;
  top5: number;
  correct: number;
  correct5: number;
  total: number;
  /** Mean cross-entropy over the images. */
  loss: number;
  perClass: ClassAccuracy[];
  /** classes × classes counts, row = true class, column = predicted class. */
  confusion: Int32Array;
  classes: readonly string[];
}

/** Accumulates predictions batch by batch. */
export class EvalAccumulator {
  readonly confusion: Int32Array;
  correct = 0;
  correct5 = 0;
  total = 0;
  lossSum = 0;
  constructor(readonly classes: readonly string[]) {
    this.confusion = new Int32Array(classes.length * classes.length);
  }

  /** Adds a batch of logits [n, classes] with its labels. */
  add(logits: Float32Array, labels: ArrayLike<number>, n: number): void {
    const k = this.classes.length;
    if (logits.length < n * k) throw new Error(`EvalAccumulator: ${logits.length} logits for ${n} images of ${k} classes`);
    const topk = Math.min(5, k);
    for (let i = 0; i < n; i++) {
      const row = i * k;
      const label = labels[i]!;
      const [max, arg] = rowMax(logits, row, k);
      // rank of the true class: number of classes scoring strictly higher (ties favour the true class)
      const lv = logits[row + label]!;
      let higher = 0;
      let sum = 0;
      for (let c = 0; c < k; c++) {
        const v = logits[row + c]!;
        if (v > lv) higher++;
        sum += Math.exp(v - max);
      }
      this.lossSum += Math.log(sum) + max - lv;
      if (arg === label) this.correct++;
      if (higher < topk) this.correct5++;
      this.confusion[label * k + arg]!++;
      this.total++;
    }
  }

  result(): EvalResult {
    const k = this.classes.length;
    const perClass: ClassAccuracy[] = this.classes.map((name, index) => {
      let total = 0;
      for (let c = 0; c < k; c++) total += this.confusion[index * k + c]!;
      const correct = this.confusion[index * k + index]!;
      return { index, name, correct, total, accuracy: total ? correct / total : 0 };
    });
    const t = this.total || 1;
    return {
      top1: this.correct / t, top5: this.correct5 / t, correct: this.correct, correct5: this.correct5, total: this.total,
      loss: this.lossSum / t, perClass, confusion: this.confusion, classes: this.classes,
    };
  }
}

export interface EvaluateOptions {
  onProgress?: (done: number, total: number) => void;
  /** Prepare batches in a worker thread (default true). */
  worker?: boolean;
}

/** What `evaluate` runs: eval-mode logits [batch, numClasses] of an NCHW batch (a NativeModel, or ONNX Runtime). */
export interface Predictor {
  readonly numClasses: number;
  predict(input: Float32Array, batch: number): Float32Array | Promise<Float32Array>;
}

/** Evaluates `model` (eval mode) on every image of `dataset`, fed with the input convention `conv`. */
export async function evaluate(
  model: Predictor, dataset: Dataset, conv: InputConvention, batch = 256, opts: EvaluateOptions = {},
): Promise<EvalResult> {
  const k = model.numClasses;
  if (dataset.classes.length !== k) {
    throw new Error(`${dataset.name} has ${dataset.classes.length} classes, the model has ${k}`);
  }
  const acc = new EvalAccumulator(dataset.classes);
  const loader = new BatchLoader({ dataset, batchSize: batch, shuffle: false, augment: 'none', input: conv, worker: opts.worker ?? true });
  try {
    for await (const b of loader.epoch(0)) {
      const logits = await model.predict(b.input, b.size);
      acc.add(logits, b.labels, b.size);
      opts.onProgress?.(acc.total, dataset.count);
    }
  } finally {
    await loader.close();
  }
  return acc.result();
}

const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;

/** Summary + per-class accuracy + confusion matrix as text. */
export function formatEvalReport(r: EvalResult): string {
  const k = r.classes.length;
  const lines: string[] = [];
  lines.push(`top-1 ${pct(r.top1)} (${r.correct}/${r.total})   top-5 ${pct(r.top5)} (${r.correct5}/${r.total})   loss ${r.loss.toFixed(4)}`);
  lines.push('');
  lines.push('per-class accuracy:');
  const nameW = Math.max(5, ...r.classes.map((c) => c.length));
  for (const c of r.perClass) lines.push(`  ${String(c.index).padStart(3)} ${c.name.padEnd(nameW)}  ${pct(c.accuracy).padStart(7)}  (${c.correct}/${c.total})`);
  if (k <= 30) {
    lines.push('');
    lines.push('confusion matrix (rows: true class, columns: predicted class):');
    const cellW = Math.max(4, ...Array.from(r.confusion, (v) => String(v).length)) + 1;
    lines.push(`  ${''.padEnd(nameW + 4)}${r.classes.map((_, c) => String(c).padStart(cellW)).join('')}`);
    for (let t = 0; t < k; t++) {
      const row = Array.from(r.confusion.subarray(t * k, (t + 1) * k), (v) => String(v).padStart(cellW)).join('');
      lines.push(`  ${String(t).padStart(3)} ${r.classes[t]!.padEnd(nameW)}${row}`);
    }
  }
  return lines.join('\n');
}

/**
 * The confusion matrix as an RGBA heat map (row-normalized: each cell's share of its true class; white → dark
 * blue, the diagonal in green shades), `cell` pixels per cell with 1-px grid lines. No text: see the text report.
 */
export function confusionPixels(r: EvalResult, cell = 24): { data: Uint8Array; width: number; height: number } {
  const k = r.classes.length;
  const size = k * cell + 1;
  const data = new Uint8Array(size * size * 4).fill(255);
  for (let t = 0; t < k; t++) {
    let rowTotal = 0;
    for (let p = 0; p < k; p++) rowTotal += r.confusion[t * k + p]!;
    for (let p = 0; p < k; p++) {
      const f = rowTotal ? r.confusion[t * k + p]! / rowTotal : 0;
      const s = Math.sqrt(f); // make small confusions visible
      const col = t === p
        ? [Math.round(255 * (1 - s)), Math.round(255 - 140 * s), Math.round(255 * (1 - s))]
        : [Math.round(255 * (1 - s)), Math.round(255 * (1 - 0.8 * s)), Math.round(255 - 100 * s)];
      for (let y = t * cell + 1; y < (t + 1) * cell; y++) {
        for (let x = p * cell + 1; x < (p + 1) * cell; x++) {
          const o = (y * size + x) * 4;
          data[o] = col[0]!;
          data[o + 1] = col[1]!;
          data[o + 2] = col[2]!;
          data[o + 3] = 255;
        }
      }
    }
  }
  // grid lines
  for (let i = 0; i <= k; i++) {
    for (let j = 0; j < size; j++) {
      for (const o of [(i * cell * size + j) * 4, (j * size + i * cell) * 4]) {
        data[o] = 160;
        data[o + 1] = 160;
        data[o + 2] = 160;
      }
    }
  }
  return { data, width: size, height: size };
}

/** Writes the confusion heat map as PNG (atomically). */
export async function writeConfusionPng(r: EvalResult, path: string, cell = 24): Promise<void> {
  const { data, width, height } = confusionPixels(r, cell);
  mkdirSync(dirname(path), { recursive: true });
  const { default: sharp } = await import('sharp'); // only here: evaluation itself needs no image library
  writeFileAtomic(path, await sharp(Buffer.from(data.buffer, data.byteOffset, data.byteLength), { raw: { width, height, channels: 4 } }).png().toBuffer());
}

/** JSON-able view of a result (confusion as nested arrays). */
export function evalToJSON(r: EvalResult): Record<string, unknown> {
  const k = r.classes.length;
  return {
    top1: r.top1, top5: r.top5, correct: r.correct, correct5: r.correct5, total: r.total, loss: r.loss,
    perClass: r.perClass,
    confusion: Array.from({ length: k }, (_, t) => Array.from(r.confusion.subarray(t * k, (t + 1) * k))),
  };
}
