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

/** Index of the first entry of the sorted `a[0..n)` that is ≥ v (n when none is). */
function lowerBound(a: Float64Array, n: number, v: number): number {
  let [lo, hi] = [0, n];
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * torchvision.ops.nms / tf.image.non_max_suppression: kept indices, highest score first.
 * IoU(a, b) ≤ min(area) / max(area), so with a threshold t ≥ 0 only kept boxes whose area is within a factor t of
 * the candidate's can suppress it: the kept boxes are held sorted by area and only that window is compared (at the
 * hard example miner's t = 0.99, a few of ~2000; the result is the full comparison's).
 */
export function nms(boxes: ArrayLike<number>, scores: ArrayLike<number>, iouThreshold: number, maxOutput = Infinity): number[] {
  const n = boxCount(boxes);
  if (scores.length !== n) throw new Error(`nms: ${n} boxes but ${scores.length} scores`);
  const keep: number[] = [];
  const cap = Math.min(n, maxOutput);
  // The kept boxes' areas (sorted) and corners, packed in the same order: this loop is the hard example miner's
  // and the post-processing's cost.
  const areas = new Float64Array(cap);
  const corners = new Float64Array(4 * cap);
  const t = iouThreshold;
  // The window's margins absorb float rounding in the IoU (relative ~1e-16); a negative t compares with every box.
  const [lowFactor, highFactor] = [t * (1 - 1e-9), (1 + 1e-9) / t];
  for (const i of byScore(scores, Array.from({ length: n }, (_, k) => k))) {
    if (keep.length >= maxOutput) break;
    const [x1, y1, x2, y2] = [boxes[4 * i]!, boxes[4 * i + 1]!, boxes[4 * i + 2]!, boxes[4 * i + 3]!];
    const area = boxArea(boxes, i);
    const count = keep.length;
    const [from, to] = t > 0 ? [lowerBound(areas, count, area * lowFactor), area * highFactor] : [0, Infinity];
    let suppressed = false;
    for (let k = from; k < count && !suppressed && areas[k]! <= to; k++) {
      const o = 4 * k;
      const w = Math.min(x2, corners[o + 2]!) - Math.max(x1, corners[o]!);
      const h = Math.min(y2, corners[o + 3]!) - Math.max(y1, corners[o + 1]!);
      const inter = w > 0 && h > 0 ? w * h : 0;
      const union = area + areas[k]! - inter;
      suppressed = (union > 0 ? inter / union : 0) > t; // = iou() of boxes.ts, inlined
    }
    if (suppressed) continue;
    const at = lowerBound(areas, count, area);
    areas.copyWithin(at + 1, at, count);
    corners.copyWithin(4 * (at + 1), 4 * at, 4 * count);
    areas[at] = area;
    corners.set([x1, y1, x2, y2], 4 * at);
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
 * maxPerClass; then all classes merged by decreasing score (ties: lower class, then NMS order) and cut to
 * maxTotal. With maxPerClass ≥ N this is torchvision's SSD postprocess (score threshold, batched_nms,
 * detections_per_img) without its per-class top-k.
 *
 * Exact shortcut: once maxTotal detections are kept, a candidate scoring below the maxTotal-th best so far
 * cannot make the cut (it ranks after all of them), nor can anything it would suppress (lower still), so each
 * class only looks at candidates at or above that bar; classes are visited by decreasing best score to raise the bar early. At
 * TF's score threshold of 1e-8 nearly every one of 1917 × 90 (anchor, class) pairs passes, and NMS over all of
 * them was the post-processing's whole cost.
 */
export function multiclassNms(boxes: ArrayLike<number>, scores: ArrayLike<number>, o: MulticlassNmsOptions): Detections {
  const n = boxCount(boxes);
  if (n === 0 || scores.length % n !== 0) throw new Error(`multiclassNms: ${n} boxes and ${scores.length} scores are not [N, 4] and [N, C]`);
  const numClasses = scores.length / n;
  const b = o.clipTo ? clipBoxes(boxes, o.clipTo.width, o.clipTo.height) : boxes;
  const valid = Uint8Array.from({ length: n }, (_, i) => (!o.clipTo || boxArea(b, i) > 0 ? 1 : 0));
  const classes = classesByBestScore(scores, n, numClasses, o.skipClasses ?? []);
  const picked: { i: number; c: number; rank: number; s: number }[] = [];
  const kept: number[] = []; // the best maxTotal scores so far, descending
  for (const c of classes) {
    // At the bar itself a lower class would still win the tie: only scores below it are left out.
    const bar = kept.length >= o.maxTotal ? kept[o.maxTotal - 1]! : -Infinity;
    const idx: number[] = [];
    const s: number[] = [];
    for (let i = 0; i < n; i++) {
      const v = scores[i * numClasses + c]!;
      if (v > o.scoreThreshold && v >= bar && valid[i]) idx.push(i), s.push(v);
    }
    nms(gatherBoxes(b, idx), s, o.iouThreshold, o.maxPerClass).forEach((k, rank) => {
      picked.push({ i: idx[k]!, c, rank, s: s[k]! });
      kept.push(s[k]!);
    });
    kept.sort((x, y) => y - x);
    if (kept.length > o.maxTotal) kept.length = o.maxTotal;
  }
  picked.sort((p, q) => q.s - p.s || p.c - q.c || p.rank - q.rank);
  const top = picked.slice(0, o.maxTotal);
  return {
    boxes: gatherBoxes(b, top.map((p) => p.i)),
    scores: Float32Array.from(top, (p) => p.s),
    classes: Int32Array.from(top, (p) => p.c),
    sources: Int32Array.from(top, (p) => p.i),
    count: top.length,
  };
}

/** The score columns not skipped, by decreasing best score over the boxes (ties: lower column first). */
function classesByBestScore(scores: ArrayLike<number>, n: number, numClasses: number, skip: readonly number[]): number[] {
  const best = new Float64Array(numClasses).fill(-Infinity);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < numClasses; c++) best[c] = Math.max(best[c]!, scores[i * numClasses + c]!);
  }
  const cols = Array.from({ length: numClasses }, (_, c) => c).filter((c) => !skip.includes(c));
  return cols.sort((x, y) => best[y]! - best[x]! || x - y);
}
