/**
 * Boxes for detection, one convention everywhere in src/detect: corner form **[x1, y1, x2, y2]** (torchvision's,
 * also what COCO's [x, y, w, h] becomes), flat in a Float32Array, 4 numbers per box. Coordinates are whatever the
 * caller uses (pixels or normalized); IoU is scale-free. TF's [ymin, xmin, ymax, xmax] and TFLite's
 * [ycenter, xcenter, h, w] appear only at the edges (anchors.ts, box-coder.ts) and convert here.
 */

/** Number of boxes in a flat [N, 4] array; throws when the length is not a multiple of 4. */
export function boxCount(boxes: ArrayLike<number>, what = 'boxes'): number {
  if (boxes.length % 4 !== 0) throw new Error(`${what}: length ${boxes.length} is not a multiple of 4`);
  return boxes.length / 4;
}

/** Area of box i; degenerate boxes (x2 < x1 or y2 < y1) have area 0. */
export function boxArea(b: ArrayLike<number>, i: number): number {
  return Math.max(0, b[4 * i + 2]! - b[4 * i]!) * Math.max(0, b[4 * i + 3]! - b[4 * i + 1]!);
}

/** Intersection area of box i of a and box j of b. */
export function intersection(a: ArrayLike<number>, i: number, b: ArrayLike<number>, j: number): number {
  const w = Math.min(a[4 * i + 2]!, b[4 * j + 2]!) - Math.max(a[4 * i]!, b[4 * j]!);
  const h = Math.min(a[4 * i + 3]!, b[4 * j + 3]!) - Math.max(a[4 * i + 1]!, b[4 * j + 1]!);
  return w > 0 && h > 0 ? w * h : 0;
}

/** IoU of box i of a and box j of b; 0 when the union is empty (as TF's IoU; torchvision gives NaN there). */
export function iou(a: ArrayLike<number>, i: number, b: ArrayLike<number>, j: number): number {
  const inter = intersection(a, i, b, j);
  const union = boxArea(a, i) + boxArea(b, j) - inter;
  return union > 0 ? inter / union : 0;
}

/** Pairwise IoU, [N, M] row-major (torchvision.ops.box_iou; TF's iou_similarity). */
export function iouMatrix(a: ArrayLike<number>, b: ArrayLike<number>): Float32Array {
  const n = boxCount(a, 'first boxes');
  const m = boxCount(b, 'second boxes');
  const out = new Float32Array(n * m);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) out[i * m + j] = iou(a, i, b, j);
  return out;
}

/** [cx, cy, w, h] or TFLite's [cy, cx, h, w] (yxFirst) center form → [x1, y1, x2, y2]. */
export function centerToCorners(c: ArrayLike<number>, yxFirst: boolean): Float32Array {
  const n = boxCount(c, 'center boxes');
  const out = new Float32Array(4 * n);
  for (let i = 0; i < n; i++) {
    const [cx, cy, w, h] = yxFirst
      ? [c[4 * i + 1]!, c[4 * i]!, c[4 * i + 3]!, c[4 * i + 2]!]
      : [c[4 * i]!, c[4 * i + 1]!, c[4 * i + 2]!, c[4 * i + 3]!];
    out.set([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 4 * i);
  }
  return out;
}

/** Clips boxes to [0, width] × [0, height] (TF clips to its window [0, 0, 1, 1] before NMS). */
export function clipBoxes(b: ArrayLike<number>, width: number, height: number): Float32Array {
  const out = Float32Array.from(b);
  for (let k = 0; k < out.length; k++) out[k] = Math.min(Math.max(out[k]!, 0), k % 2 === 0 ? width : height);
  return out;
}

/** Scales every coordinate: x by sx, y by sy (normalized ↔ pixels). */
export function scaleBoxes(b: ArrayLike<number>, sx: number, sy: number): Float32Array {
  const out = Float32Array.from(b);
  for (let k = 0; k < out.length; k++) out[k] = out[k]! * (k % 2 === 0 ? sx : sy);
  return out;
}

/** Boxes idx[0], idx[1], … of b. */
export function gatherBoxes(b: ArrayLike<number>, idx: readonly number[]): Float32Array {
  const out = new Float32Array(4 * idx.length);
  idx.forEach((i, k) => {
    for (let c = 0; c < 4; c++) out[4 * k + c] = b[4 * i + c]!;
  });
  return out;
}
