/** Strided views read in row-major order (PyTorch's strides, axis permutations). */

/** The source index of each element of a view of `shape` with element `strides` starting at `offset`, in row-major order. */
export function stridedOffsets(shape: readonly number[], strides: readonly number[], offset = 0): Float64Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float64Array(n);
  const idx = new Array<number>(shape.length).fill(0);
  let at = offset;
  for (let i = 0; i < n; i++) {
    out[i] = at;
    // odometer over the index, tracking the source offset
    for (let d = shape.length - 1; d >= 0; d--) {
      idx[d]!++;
      at += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      at -= idx[d]! * strides[d]!;
      idx[d] = 0;
    }
  }
  return out;
}
