/**
 * SSD post-processing of one image's raw head outputs in either family's style: box codes decoded against the
 * anchors, logits turned into scores, per-class NMS.
 * - `tf` (TF OD API ssdlite_mobilenet_v2_coco): sigmoid scores, (10, 10, 5, 5) coder in (ty, tx, th, tw) order,
 *   boxes clipped to the window, background column skipped, score > 1e-8, IoU 0.6, 100 per class and in all.
 * - `torchvision` (ssdlite320_mobilenet_v3_large): softmax scores, coder in (dx, dy, dw, dh) order with its exp
 *   clamp, boxes clipped to the image, score > 0.001, IoU 0.55, 300 in all (without its top-300 per class
 *   before NMS, see nms.ts).
 */
import { decodeBoxes, TF_BOX_CODER, TORCHVISION_BOX_CODER, type BoxCoder } from './box-coder.js';
import { multiclassNms, SSDLITE_NMS, type Detections, type MulticlassNmsOptions } from './nms.js';

import { SSD_STYLES, type SsdStyle } from '../model/ssdlite.js';

export { SSD_STYLES, type SsdStyle };

/** Each style's box coder (the losses encode with the same). */
export const STYLE_CODER: Readonly<Record<SsdStyle, Readonly<BoxCoder>>> = { tf: TF_BOX_CODER, torchvision: TORCHVISION_BOX_CODER };

export const STYLE_NMS: Readonly<Record<SsdStyle, Omit<MulticlassNmsOptions, 'clipTo'>>> = {
  tf: SSDLITE_NMS,
  torchvision: { scoreThreshold: 0.001, iouThreshold: 0.55, maxPerClass: Infinity, maxTotal: 300, skipClasses: [0] },
};

export interface PostprocessOptions {
  scoreThreshold?: number;
  iouThreshold?: number;
  /** At most this many detections in all. */
  maxDetections?: number;
  /** Clip window (the anchors' coordinates): default 1 × 1, i.e. normalized anchors. */
  clipTo?: { width: number; height: number };
  /** Box coder scales (y, x, h, w), e.g. from TFLite_Detection_PostProcess. */
  scales?: BoxCoder['scales'];
}

export function checkStyle(style: string): SsdStyle {
  if (!(SSD_STYLES as readonly string[]).includes(style)) throw new Error(`unknown SSD style '${style}' (expected ${SSD_STYLES.join(' or ')})`);
  return style as SsdStyle;
}

/** Scores of [A, C+1] logits: elementwise sigmoid (tf) or a softmax per anchor (torchvision). */
export function scoresOf(logits: ArrayLike<number>, columns: number, style: SsdStyle): Float32Array {
  const out = new Float32Array(logits.length);
  if (style === 'tf') {
    // A plain loop: Float32Array.from with a map function goes through the iterator protocol, ~20× slower here.
    for (let k = 0; k < logits.length; k++) out[k] = 1 / (1 + Math.exp(-logits[k]!));
    return out;
  }
  for (let row = 0; row < logits.length; row += columns) {
    let max = -Infinity;
    for (let c = 0; c < columns; c++) max = Math.max(max, logits[row + c]!);
    let z = 0;
    for (let c = 0; c < columns; c++) z += Math.exp(logits[row + c]! - max);
    for (let c = 0; c < columns; c++) out[row + c] = Math.exp(logits[row + c]! - max) / z;
  }
  return out;
}

/** One image: codes [A, 4] and logits [A, C+1] against corner anchors [A, 4] → detections in the anchors' coordinates. */
export function postprocessSsd(codes: ArrayLike<number>, logits: ArrayLike<number>, anchors: ArrayLike<number>, style: SsdStyle, o: PostprocessOptions = {}): Detections {
  const coder = { ...STYLE_CODER[style], ...(o.scales ? { scales: o.scales } : {}) };
  const boxes = decodeBoxes(codes, anchors, coder);
  const base = STYLE_NMS[style];
  return multiclassNms(boxes, scoresOf(logits, logits.length / (anchors.length / 4), style), {
    ...base,
    scoreThreshold: o.scoreThreshold ?? base.scoreThreshold,
    iouThreshold: o.iouThreshold ?? base.iouThreshold,
    maxTotal: o.maxDetections ?? base.maxTotal,
    clipTo: o.clipTo ?? { width: 1, height: 1 },
  });
}
