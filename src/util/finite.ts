/**
 * Non-finite numbers are refused where they enter: weights at load, inputs before a run, the loss and the
 * weights after a training step. Downstream they do not show reliably: oneDNN's ReLU/ReLU6 turn NaN into 0,
 * so the native engine answers confidently where ONNX Runtime and PyTorch answer NaN.
 */

/** Index of the first NaN or ±Infinity in `a`, or -1. */
export function firstNonFinite(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return i;
  return -1;
}

/** Throws `${what} has ${value} at index i` when `a` holds a NaN or ±Infinity. */
export function assertFinite(a: ArrayLike<number>, what: string): void {
  const i = firstNonFinite(a);
  if (i >= 0) throw new Error(`${what} has ${a[i]} at index ${i}; NaN and Infinity are not accepted`);
}

/** The check both engines run on an input batch [N, ...]: names the image that holds the value. */
export function assertFiniteInput(input: Float32Array, batch: number): void {
  const i = firstNonFinite(input);
  if (i < 0) return;
  const per = input.length / batch;
  throw new Error(`input image ${Math.floor(i / per)} of the batch has ${input[i]} (value ${i % per}); the engines accept finite inputs only`);
}
