/**
 * Classification: softmax cross-entropy with label smoothing on the `logits` output, top-1 hits, the
 * `val_top1` best key, and top-k decoding.
 */
import { LOGITS } from '../model/graph.js';
import type { Task, TaskLoss } from './task.js';

/** Softmax cross-entropy (mean over the batch), computed in float64, with optional label smoothing. */
export function softmaxCrossEntropy(
  logits: Float32Array,
  labels: ArrayLike<number>,
  batch: number,
  classes: number,
  dlogits: Float32Array,
  smoothing = 0,
): { loss: number; correct: number } {
  let loss = 0;
  let correct = 0;
  const off = smoothing / classes;
  for (let i = 0; i < batch; i++) {
    const row = i * classes;
    const [max, arg] = rowMax(logits, row, classes);
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(logits[row + c]! - max);
    const logSum = Math.log(sum) + max;
    const label = labels[i]!;
    if (arg === label) correct++;
    for (let c = 0; c < classes; c++) {
      const target = (c === label ? 1 - smoothing : 0) + off;
      const logp = logits[row + c]! - logSum;
      loss -= target * logp;
      dlogits[row + c] = (Math.exp(logp) - target) / batch;
    }
  }
  return { loss: loss / batch, correct };
}

/** Largest logit of the row starting at `row`, and its class (the first on ties). */
export function rowMax(logits: ArrayLike<number>, row: number, classes: number): [number, number] {
  let max = -Infinity;
  let arg = 0;
  for (let c = 0; c < classes; c++) {
    const v = logits[row + c]!;
    if (v > max) {
      max = v;
      arg = c;
    }
  }
  return [max, arg];
}

export interface ClassificationOptions {
  /** Label smoothing for the cross-entropy (0 = none). */
  labelSmoothing?: number;
}

/** The classification task over a model with `classes` logits; targets are class indices. */
export function classification(classes: number, opts: ClassificationOptions = {}): Task<ArrayLike<number>> {
  const smoothing = opts.labelSmoothing ?? 0;
  return {
    name: 'classification',
    bestKey: 'val_top1',
    countsCorrect: true,
    validate(labels, batch) {
      if (labels.length !== batch) throw new Error(`labels has ${labels.length} entries for batch ${batch}`);
      for (let i = 0; i < batch; i++) {
        const l = labels[i]!;
        if (!Number.isInteger(l) || l < 0 || l >= classes) throw new Error(`label ${l} at index ${i} is not a class index in [0, ${classes})`);
      }
    },
    loss(outputs, labels, batch, grads): TaskLoss {
      const logits = outputs.get(LOGITS);
      const dlogits = grads.get(LOGITS);
      if (!logits || !dlogits) throw new Error(`classification: the model has no '${LOGITS}' output`);
      const { loss, correct } = softmaxCrossEntropy(logits, labels, batch, classes, dlogits, smoothing);
      return { loss, counts: { correct } };
    },
  };
}

/** Indices and softmax probabilities of the k largest logits of row `i`. */
export function topK(logits: Float32Array, classes: number, i: number, k: number): { index: number; prob: number }[] {
  const row = logits.subarray(i * classes, (i + 1) * classes);
  const [max] = rowMax(row, 0, classes);
  const exps = Array.from(row, (v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps
    .map((e, index) => ({ index, prob: e / sum }))
    .sort((a, b) => b.prob - a.prob)
    .slice(0, Math.min(k, classes));
}
