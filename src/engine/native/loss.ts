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
