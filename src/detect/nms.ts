/**
 * Non-maximum suppression. Greedy, highest score first; a box is suppressed when its IoU with a kept box is
 * **> iouThreshold** (strict, in both torchvision's nms kernel and TF's NonMaxSuppressionV3). Equal scores keep
 * the lower index first (a stable sort; torchvision's unstable sort leaves that order unspecified).
 */
import { boxArea, boxCount, clipBoxes, gatherBoxes } from './boxes.js';

/** Indices in decreasing score order (stable). */
function byScore(scores: ArrayLike<number>, idx: number[]): number[] {
  return idx.sort((a, b) => scores[b]! - scores[a]! || a - b);
}

/** torchvision.ops.nms / tf.image.non_max_suppression: kept indices, highest score first. */
export function nms(boxes: ArrayLike<number>, scores: ArrayLike<number>, iouThreshold: number, maxOutput = Infinity): number[] {
  const n = boxCount(boxes);
  if (scores.length !== n) throw new Error(`nms: ${n} boxes but ${scores.length} scores`);
  const keep: number[] = [];
  // The kept boxes' corners and areas, packed: this loop is the hard example miner's and the post-processing's cost.
  const kept = new Float64Array(5 * Math.min(n, maxOutput));
  for (const i of byScore(scores, Array.from({ length: n }, (_, k) => k))) {
    if (keep.length >= maxOutput) break;
    const [x1, y1, x2, y2] = [boxes[4 * i]!, boxes[4 * i + 1]!, boxes[4 * i + 2]!, boxes[4 * i + 3]!];
    const area = boxArea(boxes, i);
    let suppressed = false;
    for (let k = 0; k < keep.length && !suppressed; k++) {
      const o = 5 * k;
      const w = Math.min(x2, kept[o + 2]!) - Math.max(x1, kept[o]!);
      const h = Math.min(y2, kept[o + 3]!) - Math.max(y1, kept[o + 1]!);
      const inter = w > 0 && h > 0 ? w * h : 0;
      const union = area + kept[o + 4]! - inter;
      suppressed = (union > 0 ? inter / union : 0) > iouThreshold; // = iou() of boxes.ts, inlined
    }
    if (suppressed) continue;
    kept.set([x1, y1, x2, y2, area], 5 * keep.length);
    keep.push(i);
  }
  return keep;
}

/** torchvision.ops.batched_nms: NMS within each class; kept indices over all classes, highest score first. */
export function batchedNms(boxes: ArrayLike<number>, scores: ArrayLike<number>, classes: ArrayLike<number>, iouThreshold: number): number[] {
  const n = boxCount(boxes);
  if (classes.length !== n || scores.length !== n) throw new Error(`batchedNms: ${n} boxes, ${scores.length} scores, ${classes.length} classes`);
  const groups = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const g = groups.get(classes[i]!);
    if (g) g.push(i);
    else groups.set(classes[i]!, [i]);
  }
  const keep: number[] = [];
  for (const idx of groups.values()) {
    for (const k of nms(gatherBoxes(boxes, idx), idx.map((i) => scores[i]!), iouThreshold)) keep.push(idx[k]!);
  }
  return byScore(scores, keep);
}

export interface MulticlassNmsOptions {
  /** Scores must be > this (TF score_thresh; torchvision SSD's score_thresh). */
  scoreThreshold: number;
  iouThreshold: number;
  maxPerClass: number;
  maxTotal: number;
  /**
   * Clip boxes to [0, w] × [0, h] before the per-class NMS and drop those left with zero area (TF's
   * clip_to_window, as in the 2018 exporter of ssdlite_mobilenet_v2_coco; newer TF clips after NMS).
   */
  clipTo?: { width: number; height: number };
  /** Score columns to skip (TF drops the background column 0 before NMS). Default: none. */
  skipClasses?: readonly number[];
}

export interface Detections {
  /** [count, 4] corner boxes. */
  boxes: Float32Array;
  scores: Float32Array;
  /** Score column of each detection. */
  classes: Int32Array;
  /** Index of the input box of each detection. */
  sources: Int32Array;
  count: number;
}

/** SSDLite-MobileNetV2 COCO's `batch_non_max_suppression` (score threshold of the sample config). */
export const SSDLITE_NMS: Readonly<MulticlassNmsOptions> = Object.freeze({
  scoreThreshold: 1e-8,
  iouThreshold: 0.6,
  maxPerClass: 100,
  maxTotal: 100,
  clipTo: Object.freeze({ width: 1, height: 1 }),
  skipClasses: Object.freeze([0]),
});

/**
 * One image's TF `multiclass_non_max_suppression` (batch_multiclass_non_max_suppression does this per image):
 * boxes [N, 4], scores [N, C] (after the score converter); per class c: scores > threshold, NMS keeping up to
 * maxPerClass; then all classes merged by decreasing score and cut to maxTotal. With maxPerClass ≥ N this is
 * torchvision's SSD postprocess (score threshold, batched_nms, detections_per_img) without its per-class top-k.
 */
export function multiclassNms(boxes: ArrayLike<number>, scores: ArrayLike<number>, o: MulticlassNmsOptions): Detections {
  const n = boxCount(boxes);
  if (n === 0 || scores.length % n !== 0) throw new Error(`multiclassNms: ${n} boxes and ${scores.length} scores are not [N, 4] and [N, C]`);
  const numClasses = scores.length / n;
  const b = o.clipTo ? clipBoxes(boxes, o.clipTo.width, o.clipTo.height) : boxes;
  const picked: { i: number; c: number; s: number }[] = [];
  for (let c = 0; c < numClasses; c++) {
    if (o.skipClasses?.includes(c)) continue;
    const idx: number[] = [];
    for (let i = 0; i < n; i++) if (scores[i * numClasses + c]! > o.scoreThreshold && (!o.clipTo || boxArea(b, i) > 0)) idx.push(i);
    const s = idx.map((i) => scores[i * numClasses + c]!);
    for (const k of nms(gatherBoxes(b, idx), s, o.iouThreshold, o.maxPerClass)) picked.push({ i: idx[k]!, c, s: s[k]! });
  }
  // Stable: equal scores keep class order, then box order (TF's sort_by_field uses top_k, also stable).
  picked.sort((p, q) => q.s - p.s);
  const top = picked.slice(0, o.maxTotal);
  return {
    boxes: gatherBoxes(b, top.map((p) => p.i)),
    scores: Float32Array.from(top, (p) => p.s),
    classes: Int32Array.from(top, (p) => p.c),
    sources: Int32Array.from(top, (p) => p.i),
    count: top.length,
  };
}
