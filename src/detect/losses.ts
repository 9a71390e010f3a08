/**
 * SSD training losses, numerics only: given the heads' outputs for a batch — class logits [B, A, C] (column 0 is
 * background) and box regressions [B, A, 4] (in the box coder's order) — the anchors, the ground truth and each
 * image's anchor matches (matcher.ts), the loss values and their gradients with respect to both outputs.
 *
 * Two flavours:
 * - `ssdLossTorchvision`: torchvision 0.14 `SSD.compute_loss` (ssdlite320_mobilenet_v3_large): softmax cross
 *   entropy; per image the 3·(#positives) background anchors with the highest loss ("hard negatives"); smooth L1
 *   (beta 1) on the positives; both sums divided by N = max(1, #positives in the batch).
 * - `ssdLossTf`: TF OD API `SSDMetaArch.loss` as ssdlite_mobilenet_v2_coco.config sets it: weighted sigmoid cross
 *   entropy over all C columns (one-hot targets, background for unmatched anchors), weighted smooth L1 (Huber,
 *   delta 1) on matched anchors, `HardExampleMiner(num_hard_examples 3000, iou_threshold 0.99, loss_type
 *   CLASSIFICATION, max_negatives_per_positive 3, min_negatives_per_image 3)`, both divided by max(1, #matched).
 */
import { boxCount, gatherBoxes } from './boxes.js';
import { decodeBoxes, encodeBoxes, TF_BOX_CODER, TORCHVISION_BOX_CODER, type BoxCoder } from './box-coder.js';
import { UNMATCHED } from './matcher.js';
import { nms } from './nms.js';

/** Ground truth of one image: [x1, y1, x2, y2] boxes in the anchors' coordinates and labels in 1..C−1. */
export interface DetectionTarget {
  boxes: Float32Array;
  labels: ArrayLike<number>;
}

export interface SsdLossInput {
  /** [B, A, C] logits, column 0 background. */
  clsLogits: Float32Array;
  /** [B, A, 4] box regressions in the coder's order. */
  boxRegression: Float32Array;
  /** [A, 4] corner anchors. */
  anchors: Float32Array;
  targets: readonly DetectionTarget[];
  /** Per image, per anchor: matched gt index or a negative value (matcher.ts). */
  matches: readonly Int32Array[];
}

export interface SsdLoss {
  /** Localization loss (torchvision's `bbox_regression`). */
  localization: number;
  classification: number;
  /** d(localization + classification)/d clsLogits, [B, A, C]. */
  gradLogits: Float32Array;
  /** d(localization + classification)/d boxRegression, [B, A, 4]. */
  gradRegression: Float32Array;
  /** The normalizer: max(1, matched anchors in the batch). */
  normalizer: number;
}

interface Shapes {
  batch: number;
  anchors: number;
  classes: number;
}

function checkInput(x: SsdLossInput): Shapes {
  const anchors = boxCount(x.anchors, 'anchors');
  const batch = x.targets.length;
  if (x.matches.length !== batch) throw new Error(`${batch} targets but ${x.matches.length} match lists`);
  if (x.boxRegression.length !== batch * anchors * 4) {
    throw new Error(`boxRegression has ${x.boxRegression.length} values, expected ${batch}×${anchors}×4`);
  }
  const classes = x.clsLogits.length / (batch * anchors);
  if (!Number.isInteger(classes) || classes < 2) throw new Error(`clsLogits has ${x.clsLogits.length} values, not ${batch}×${anchors}×C`);
  x.targets.forEach((t, b) => {
    const n = boxCount(t.boxes, `targets[${b}].boxes`);
    if (t.labels.length !== n) throw new Error(`targets[${b}]: ${n} boxes but ${t.labels.length} labels`);
    for (let i = 0; i < n; i++) {
      const l = t.labels[i]!;
      if (!Number.isInteger(l) || l < 1 || l >= classes) throw new Error(`targets[${b}].labels[${i}] = ${l} is not in 1..${classes - 1}`);
    }
    const m = x.matches[b]!;
    if (m.length !== anchors) throw new Error(`matches[${b}] has ${m.length} entries for ${anchors} anchors`);
    for (let a = 0; a < anchors; a++) if (m[a]! >= n) throw new Error(`matches[${b}][${a}] = ${m[a]} but image ${b} has ${n} boxes`);
  });
  return { batch, anchors, classes };
}

/** Smooth L1 / Huber with threshold delta: value and derivative of one difference d. */
function huber(d: number, delta: number): [number, number] {
  const a = Math.abs(d);
  return a < delta ? [(0.5 * d * d) / delta, d / delta] : [a - 0.5 * delta, Math.sign(d)];
}

/** Encoded matched-gt targets of image b's matched anchors (zeros elsewhere), [A, 4]. */
function regressionTargets(x: SsdLossInput, b: number, coder: BoxCoder): Float32Array {
  const m = x.matches[b]!;
  const anchorIdx: number[] = [];
  const gtIdx: number[] = [];
  m.forEach((g, a) => {
    if (g >= 0) {
      anchorIdx.push(a);
      gtIdx.push(g);
    }
  });
  const enc = encodeBoxes(gatherBoxes(x.targets[b]!.boxes, gtIdx), gatherBoxes(x.anchors, anchorIdx), coder);
  const out = new Float32Array(m.length * 4);
  anchorIdx.forEach((a, k) => out.set(enc.subarray(4 * k, 4 * k + 4), 4 * a));
  return out;
}

/** Adds the Huber loss of anchor a's 4 regression values (scaled by 1/norm into grad) and returns it. */
function boxLoss(x: SsdLossInput, grad: Float32Array, target: Float32Array, off: number, a: number, norm: number): number {
  let sum = 0;
  for (let k = 0; k < 4; k++) {
    const [v, g] = huber(x.boxRegression[off + 4 * a + k]! - target[4 * a + k]!, 1);
    sum += v;
    grad[off + 4 * a + k] = g / norm;
  }
  return sum;
}

const countMatched = (matches: readonly Int32Array[]): number => matches.reduce((s, m) => s + m.filter((g) => g >= 0).length, 0);

/** Running sums and gradients of a batch (gradients already divided by the normalizer N). */
interface Accumulator extends Shapes {
  N: number;
  localization: number;
  classification: number;
  gradLogits: Float32Array;
  gradRegression: Float32Array;
}

/** One image: its index, matches, encoded regression targets ([A, 4], zeros where unmatched), class per anchor. */
interface ImageTerms {
  b: number;
  m: Int32Array;
  target: Float32Array;
  label: (a: number) => number;
}

/** Shared driver: validates, runs perImage on each image, divides both sums by N = max(1, #matched). */
function batchLoss(x: SsdLossInput, coder: BoxCoder, perImage: (acc: Accumulator, img: ImageTerms) => void): SsdLoss {
  const acc: Accumulator = {
    ...checkInput(x),
    N: Math.max(1, countMatched(x.matches)),
    localization: 0,
    classification: 0,
    gradLogits: new Float32Array(x.clsLogits.length),
    gradRegression: new Float32Array(x.boxRegression.length),
  };
  for (let b = 0; b < acc.batch; b++) {
    const m = x.matches[b]!;
    const label = (a: number): number => (m[a]! >= 0 ? x.targets[b]!.labels[m[a]!]! : 0);
    perImage(acc, { b, m, target: regressionTargets(x, b, coder), label });
  }
  const { N } = acc;
  return { localization: acc.localization / N, classification: acc.classification / N, gradLogits: acc.gradLogits, gradRegression: acc.gradRegression, normalizer: N };
}

/** torchvision's SSD.compute_loss (neg_to_pos_ratio 3, BoxCoder(10, 10, 5, 5)). */
export function ssdLossTorchvision(x: SsdLossInput, o: { negToPosRatio?: number; coder?: BoxCoder } = {}): SsdLoss {
  const ratio = o.negToPosRatio ?? 3;
  return batchLoss(x, o.coder ?? TORCHVISION_BOX_CODER, (acc, { b, m, target, label }) => {
    const { anchors, classes, N } = acc;
    const lse = new Float64Array(anchors); // log-sum-exp of each anchor's logits
    const ce = new Float64Array(anchors);
    const negatives: number[] = [];
    let numPos = 0;
    for (let a = 0; a < anchors; a++) {
      const off = (b * anchors + a) * classes;
      let max = -Infinity;
      for (let c = 0; c < classes; c++) max = Math.max(max, x.clsLogits[off + c]!);
      let z = 0;
      for (let c = 0; c < classes; c++) z += Math.exp(x.clsLogits[off + c]! - max);
      lse[a] = max + Math.log(z);
      ce[a] = lse[a]! - x.clsLogits[off + label(a)]!;
      if (m[a]! >= 0) {
        numPos++;
        acc.localization += boxLoss(x, acc.gradRegression, target, b * anchors * 4, a, N);
      } else {
        negatives.push(a);
      }
    }
    // Hard negatives: torchvision ranks every anchor by loss with positives at −inf (ties by index) and counts the
    // first 3·#positives as background; when that exceeds the negatives it also re-counts positives (kept as it is).
    negatives.sort((p, q) => ce[q]! - ce[p]! || p - q);
    const weight = new Float64Array(anchors);
    const positives: number[] = [];
    for (let a = 0; a < anchors; a++) if (m[a]! >= 0) (weight[a] = 1), positives.push(a);
    negatives.concat(positives).slice(0, ratio * numPos).forEach((a) => (weight[a]! += 1));
    for (let a = 0; a < anchors; a++) {
      if (weight[a] === 0) continue;
      acc.classification += weight[a]! * ce[a]!;
      const off = (b * anchors + a) * classes;
      const l = label(a);
      // Softmax recomputed here, for the few weighted anchors only.
      for (let c = 0; c < classes; c++) acc.gradLogits[off + c] = (weight[a]! * (Math.exp(x.clsLogits[off + c]! - lse[a]!) - (c === l ? 1 : 0))) / N;
    }
  });
}

export interface HardExampleMinerOptions {
  numHardExamples: number;
  /** NMS threshold over the decoded predicted boxes, ranked by loss. */
  iouThreshold: number;
  maxNegativesPerPositive: number;
  minNegativesPerImage: number;
}

export const SSDLITE_HARD_MINER: Readonly<HardExampleMinerOptions> = Object.freeze({
  numHardExamples: 3000,
  iouThreshold: 0.99,
  maxNegativesPerPositive: 3,
  minNegativesPerImage: 3,
});

/** log(1 + e^−|x|) + max(x, 0) − x·z: tf.nn.sigmoid_cross_entropy_with_logits. */
const sigmoidCe = (x: number, z: number): number => Math.max(x, 0) - x * z + Math.log1p(Math.exp(-Math.abs(x)));

/**
 * HardExampleMiner._subsample_selection_to_desired_neg_pos_ratio: keeps the selected positives and the first
 * max(minNeg, ratio·#selected positives) selected negatives — and, as TF's cumsum test does, any selected
 * ignored anchor met before the negatives run out.
 */
function subsampleSelection(selected: number[], m: Int32Array, o: HardExampleMinerOptions): number[] {
  const numPos = selected.filter((a) => m[a]! >= 0).length;
  const maxNeg = Math.max(o.minNegativesPerImage, Math.trunc(o.maxNegativesPerPositive * numPos));
  let negSeen = 0;
  return selected.filter((a) => {
    if (m[a] === UNMATCHED) negSeen++;
    return m[a]! >= 0 || negSeen <= maxNeg;
  });
}

/** TF OD API's SSD loss with hard example mining (see the file comment). */
export function ssdLossTf(x: SsdLossInput, o: { miner?: HardExampleMinerOptions; coder?: BoxCoder } = {}): SsdLoss {
  const miner = o.miner ?? SSDLITE_HARD_MINER;
  const coder = o.coder ?? TF_BOX_CODER;
  return batchLoss(x, coder, (acc, { b, m, target, label }) => {
    const { anchors, classes, N } = acc;
    // Class targets: one-hot of the gt label, background (column 0) when unmatched; ignored anchors weigh 0.
    const weighted = (a: number): boolean => m[a]! >= 0 || m[a] === UNMATCHED;
    const clsLoss = new Float64Array(anchors);
    for (let a = 0; a < anchors; a++) {
      if (!weighted(a)) continue;
      const off = (b * anchors + a) * classes;
      for (let c = 0; c < classes; c++) clsLoss[a]! += sigmoidCe(x.clsLogits[off + c]!, c === label(a) ? 1 : 0);
    }
    const decoded = decodeBoxes(x.boxRegression.subarray(b * anchors * 4, (b + 1) * anchors * 4), x.anchors, coder);
    const selected = subsampleSelection(nms(decoded, clsLoss, miner.iouThreshold, miner.numHardExamples), m, miner);
    for (const a of selected) {
      acc.classification += clsLoss[a]!;
      if (m[a]! >= 0) acc.localization += boxLoss(x, acc.gradRegression, target, b * anchors * 4, a, N);
      if (!weighted(a)) continue;
      const off = (b * anchors + a) * classes;
      for (let c = 0; c < classes; c++) {
        const s = 1 / (1 + Math.exp(-x.clsLogits[off + c]!));
        acc.gradLogits[off + c] = (s - (c === label(a) ? 1 : 0)) / N;
      }
    }
  });
}
