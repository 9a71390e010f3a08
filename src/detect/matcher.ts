/**
 * Anchor ↔ ground-truth matching on an IoU matrix [G, A] (rows: ground-truth boxes, columns: anchors, as
 * iouMatrix(gt, anchors) gives it). Result per anchor: the matched gt index, UNMATCHED (−1, background) or
 * IGNORED (−2, between the thresholds). An image without gt matches nothing (torchvision's SSD does the same
 * before calling its matcher, which raises on an empty matrix).
 *
 * Every matcher first takes each anchor's best gt (first index on ties) and keeps it when IoU ≥ the upper
 * threshold. They differ in how each gt gets at least one anchor:
 * - TF `ArgMaxMatcher(force_match_for_each_row=True)`: each gt's best anchor (first on ties) is matched to that gt;
 *   when several gts share a best anchor, the **lowest** gt index wins (argmax over the one-hot indicator).
 * - torchvision `SSDMatcher`: the same forcing, but written as an indexed assignment, so the **highest** gt index
 *   wins a shared best anchor.
 * - torchvision `Matcher(allow_low_quality_matches=True)` (Faster R-CNN's): every anchor whose IoU equals a gt's
 *   best IoU (**all ties**) is restored to **its own** best gt — which need not be that gt — and a gt that overlaps
 *   no anchor (best IoU 0) restores every anchor with IoU 0 to it, i.e. typically all of them. SSD does not use it.
 */

export const UNMATCHED = -1;
export const IGNORED = -2;

function checkMatrix(iou: ArrayLike<number>, numGt: number): number {
  if (!Number.isInteger(numGt) || numGt < 0) throw new Error(`numGt must be a non-negative integer, got ${numGt}`);
  if (numGt === 0) {
    if (iou.length !== 0) throw new Error(`numGt 0 but the IoU matrix has ${iou.length} entries`);
    return 0;
  }
  if (iou.length % numGt !== 0) throw new Error(`IoU matrix of ${iou.length} entries is not ${numGt} × anchors`);
  return iou.length / numGt;
}

/** Each anchor's best gt and its IoU (first gt on ties). */
function bestGtPerAnchor(iou: ArrayLike<number>, numGt: number, numAnchors: number): { gt: Int32Array; value: Float32Array } {
  const gt = new Int32Array(numAnchors);
  const value = new Float32Array(numAnchors).fill(-Infinity);
  for (let g = 0; g < numGt; g++) {
    for (let a = 0; a < numAnchors; a++) {
      const v = iou[g * numAnchors + a]!;
      if (v > value[a]!) {
        value[a] = v;
        gt[a] = g;
      }
    }
  }
  return { gt, value };
}

/** Each gt's best anchor (first anchor on ties). */
function bestAnchorPerGt(iou: ArrayLike<number>, numGt: number, numAnchors: number): Int32Array {
  const out = new Int32Array(numGt);
  for (let g = 0; g < numGt; g++) {
    let best = 0;
    for (let a = 1; a < numAnchors; a++) if (iou[g * numAnchors + a]! > iou[g * numAnchors + best]!) best = a;
    out[g] = best;
  }
  return out;
}

/** Thresholded argmax: ≥ high → the best gt, < low → UNMATCHED, between → IGNORED. */
function thresholdMatches(iou: ArrayLike<number>, numGt: number, numAnchors: number, high: number, low: number) {
  if (low > high) throw new Error(`low threshold ${low} > high threshold ${high}`);
  const best = bestGtPerAnchor(iou, numGt, numAnchors);
  const matches = new Int32Array(numAnchors);
  for (let a = 0; a < numAnchors; a++) {
    const v = best.value[a]!;
    matches[a] = v >= high ? best.gt[a]! : v < low ? UNMATCHED : IGNORED;
  }
  return { matches, allMatches: best.gt };
}

export interface ThresholdOptions {
  /** IoU ≥ this matches (TF matched_threshold, torchvision high_threshold). Default 0.5. */
  matchedThreshold?: number;
  /** IoU < this is background (TF unmatched_threshold, torchvision low_threshold). Default = matchedThreshold. */
  unmatchedThreshold?: number;
}

function thresholds(o: ThresholdOptions): [number, number] {
  const high = o.matchedThreshold ?? 0.5;
  return [high, o.unmatchedThreshold ?? high];
}

/** TF OD API's ArgMaxMatcher (negatives_lower_than_unmatched), with force_match_for_each_row by default. */
export function matchTf(iou: ArrayLike<number>, numGt: number, o: ThresholdOptions & { forceMatchForEachRow?: boolean } = {}): Int32Array {
  const numAnchors = checkMatrix(iou, numGt);
  if (numGt === 0) return new Int32Array(numAnchors).fill(UNMATCHED);
  const { matches } = thresholdMatches(iou, numGt, numAnchors, ...thresholds(o));
  if (o.forceMatchForEachRow ?? true) {
    const best = bestAnchorPerGt(iou, numGt, numAnchors);
    for (let g = numGt - 1; g >= 0; g--) matches[best[g]!] = g; // descending, so the lowest gt index wins
  }
  return matches;
}

/** torchvision's SSDMatcher(threshold): Matcher(t, t) plus each gt's best anchor forced to it (highest gt wins). */
export function matchSsdTorchvision(iou: ArrayLike<number>, numGt: number, threshold = 0.5): Int32Array {
  const numAnchors = checkMatrix(iou, numGt);
  if (numGt === 0) return new Int32Array(numAnchors).fill(UNMATCHED);
  const { matches } = thresholdMatches(iou, numGt, numAnchors, threshold, threshold);
  const best = bestAnchorPerGt(iou, numGt, numAnchors);
  for (let g = 0; g < numGt; g++) matches[best[g]!] = g;
  return matches;
}

/** torchvision's Matcher(high, low, allow_low_quality_matches). */
export function matchTorchvision(
  iou: ArrayLike<number>,
  numGt: number,
  o: ThresholdOptions & { allowLowQualityMatches?: boolean } = {},
): Int32Array {
  const numAnchors = checkMatrix(iou, numGt);
  if (numGt === 0) return new Int32Array(numAnchors).fill(UNMATCHED);
  const { matches, allMatches } = thresholdMatches(iou, numGt, numAnchors, ...thresholds(o));
  if (o.allowLowQualityMatches ?? false) {
    for (let g = 0; g < numGt; g++) {
      let top = -Infinity;
      for (let a = 0; a < numAnchors; a++) top = Math.max(top, iou[g * numAnchors + a]!);
      for (let a = 0; a < numAnchors; a++) if (iou[g * numAnchors + a] === top) matches[a] = allMatches[a]!;
    }
  }
  return matches;
}
