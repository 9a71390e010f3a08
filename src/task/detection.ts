/**
 * Detection (SSD): the `boxes` [N, A, 4] and `logits` [N, A, C+1] outputs of an SSD head against per-image
 * ground truth. Per image the anchors are matched to the gt boxes (IoU ≥ 0.5 plus each gt's best anchor), then
 * the loss of either family (src/detect/losses.ts) gives the value and both output gradients; decoding is the
 * same family's post-processing (src/detect/postprocess.ts).
 * - `tf`: ArgMaxMatcher, sigmoid cross entropy with the hard example miner, smooth L1, (ty, tx, th, tw) codes.
 * - `torchvision`: SSDMatcher, softmax cross entropy with 3:1 hard negatives, smooth L1, (dx, dy, dw, dh) codes.
 * Anchors and gt boxes share one coordinate system (normalized, as the TF OD API trains, or pixels).
 */
import { BOXES, DETECTION_LOGITS } from '../model/ssdlite.js';
import { boxCount, iouMatrix } from '../detect/boxes.js';
import { matchSsdTorchvision, matchTf, UNMATCHED } from '../detect/matcher.js';
import { ssdLossTf, ssdLossTorchvision, type DetectionTarget, type HardExampleMinerOptions, type SsdLoss } from '../detect/losses.js';
import { postprocessSsd, STYLE_CODER, type PostprocessOptions, type SsdStyle } from '../detect/postprocess.js';
import type { Detections } from '../detect/nms.js';
import type { Task, TaskLoss } from './task.js';

export interface DetectionTaskOptions {
  style: SsdStyle;
  /** Foreground classes C: the logits have C + 1 columns, column 0 background; gt labels are 1..C. */
  numClasses: number;
  /** [A, 4] corner anchors, in the gt boxes' coordinates. */
  anchors: Float32Array;
  /** IoU at which an anchor matches a gt box (both families: 0.5). */
  matchThreshold?: number;
  /** tf: the hard example miner (default SSDLITE_HARD_MINER). */
  miner?: HardExampleMinerOptions;
  /** torchvision: hard negatives per positive (default 3). */
  negToPosRatio?: number;
}

export interface DetectionTask extends Task<readonly DetectionTarget[]> {
  readonly style: SsdStyle;
  /** Per-anchor gt index (or UNMATCHED / IGNORED) of each image, as the loss matches them. */
  match(targets: readonly DetectionTarget[]): Int32Array[];
  /** Post-processed detections of each image of a batch, in the anchors' coordinates. */
  decode(outputs: ReadonlyMap<string, Float32Array>, batch: number, o?: PostprocessOptions): Detections[];
}

function output(m: ReadonlyMap<string, Float32Array>, name: string, length: number, what: string): Float32Array {
  const v = m.get(name);
  if (!v) throw new Error(`detection: the model has no '${name}' ${what}`);
  if (v.length !== length) throw new Error(`detection: '${name}' ${what} has ${v.length} values, expected ${length}`);
  return v;
}

/** The SSD detection task; targets are one DetectionTarget per image of the batch. */
export function detection(o: DetectionTaskOptions): DetectionTask {
  const { style, numClasses, anchors } = o;
  const A = boxCount(anchors, 'anchors');
  const columns = numClasses + 1;
  if (!Number.isInteger(numClasses) || numClasses < 1) throw new Error(`detection: numClasses must be a positive integer, got ${numClasses}`);
  const threshold = o.matchThreshold ?? 0.5;
  const matchOne = (t: DetectionTarget): Int32Array => {
    const n = t.labels.length;
    // An empty IoU matrix does not tell the matcher how many anchors there are.
    if (n === 0) return new Int32Array(A).fill(UNMATCHED);
    const iou = iouMatrix(t.boxes, anchors);
    return style === 'tf' ? matchTf(iou, n, { matchedThreshold: threshold }) : matchSsdTorchvision(iou, n, threshold);
  };
  const sizes = (batch: number) => ({ boxes: batch * A * 4, logits: batch * A * columns });
  return {
    name: 'detection',
    style,
    // COCO AP@[.5:.95], the number detectors are compared by.
    bestKey: 'val_AP',
    validate(targets, batch) {
      if (targets.length !== batch) throw new Error(`targets has ${targets.length} images for batch ${batch}`);
      targets.forEach((t, b) => {
        const n = boxCount(t.boxes, `targets[${b}].boxes`);
        if (t.labels.length !== n) throw new Error(`targets[${b}]: ${n} boxes but ${t.labels.length} labels`);
        for (let i = 0; i < n; i++) {
          const l = t.labels[i]!;
          if (!Number.isInteger(l) || l < 1 || l > numClasses) throw new Error(`targets[${b}].labels[${i}] = ${l} is not a class in 1..${numClasses}`);
          const [x1, y1, x2, y2] = t.boxes.subarray(4 * i, 4 * i + 4);
          if (![x1, y1, x2, y2].every((v) => Number.isFinite(v)) || !(x2! > x1! && y2! > y1!)) {
            throw new Error(`targets[${b}].boxes[${i}] = [${x1}, ${y1}, ${x2}, ${y2}] is not a box with x2 > x1 and y2 > y1`);
          }
        }
      });
    },
    match: (targets) => targets.map(matchOne),
    loss(outputs, targets, batch, grads): TaskLoss {
      const n = sizes(batch);
      const x = {
        clsLogits: output(outputs, DETECTION_LOGITS, n.logits, 'output'),
        boxRegression: output(outputs, BOXES, n.boxes, 'output'),
        anchors,
        targets,
        matches: targets.map(matchOne),
      };
      const r: SsdLoss = style === 'tf'
        ? ssdLossTf(x, { miner: o.miner, coder: STYLE_CODER.tf })
        : ssdLossTorchvision(x, { negToPosRatio: o.negToPosRatio, coder: STYLE_CODER.torchvision });
      output(grads, DETECTION_LOGITS, n.logits, 'gradient').set(r.gradLogits);
      output(grads, BOXES, n.boxes, 'gradient').set(r.gradRegression);
      const matched = x.matches.reduce((s, m) => s + m.filter((g) => g >= 0).length, 0);
      const boxes = targets.reduce((s, t) => s + t.labels.length, 0);
      // localization + classification = loss: the two terms, for the logs.
      return { loss: r.localization + r.classification, counts: { matched, boxes, localization: r.localization, classification: r.classification } };
    },
    decode(outputs, batch, po = {}) {
      const n = sizes(batch);
      const codes = output(outputs, BOXES, n.boxes, 'output');
      const logits = output(outputs, DETECTION_LOGITS, n.logits, 'output');
      return Array.from({ length: batch }, (_, b) =>
        postprocessSsd(codes.subarray(b * A * 4, (b + 1) * A * 4), logits.subarray(b * A * columns, (b + 1) * A * columns), anchors, style, po));
    },
  };
}
