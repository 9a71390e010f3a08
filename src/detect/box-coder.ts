/**
 * The Faster R-CNN box coder both frameworks use for SSD, with scales (10, 10, 5, 5): a box relative to its anchor
 * is t_y = 10·(y_c − y_a)/h_a, t_x = 10·(x_c − x_a)/w_a, t_h = 5·log(h/h_a), t_w = 5·log(w/w_a).
 * The two differ only at the edges:
 * - TF OD API (`box_coders/faster_rcnn_box_coder.py`) orders the code (ty, tx, th, tw) — the order of the SSD box
 *   head and of TFLite_Detection_PostProcess — adds 1e-8 to every size before dividing, and never clamps.
 * - torchvision (`models/detection/_utils.BoxCoder(weights=(10, 10, 5, 5))`) orders it (dx, dy, dw, dh), adds
 *   nothing, and clamps dw, dh at log(1000/16) before exp when decoding.
 * Boxes and anchors are [x1, y1, x2, y2] (boxes.ts), paired one to one.
 */
import { boxCount } from './boxes.js';

export interface BoxCoder {
  /** Scales for (y, x, h, w). */
  scales: readonly [number, number, number, number];
  /** 'yxhw': codes are (ty, tx, th, tw) (TF); 'xywh': (dx, dy, dw, dh) (torchvision). */
  order: 'yxhw' | 'xywh';
  /** Added to every height and width before dividing (TF's EPSILON). */
  eps: number;
  /** Clamp of the unscaled log-size codes before exp when decoding (torchvision's bbox_xform_clip). */
  maxLogScale: number;
}

export const TF_BOX_CODER: Readonly<BoxCoder> = Object.freeze({
  scales: [10, 10, 5, 5] as const,
  order: 'yxhw' as const,
  eps: 1e-8,
  maxLogScale: Infinity,
});

export const TORCHVISION_BOX_CODER: Readonly<BoxCoder> = Object.freeze({
  scales: [10, 10, 5, 5] as const,
  order: 'xywh' as const,
  eps: 0,
  maxLogScale: Math.log(1000 / 16),
});

/** Center and size of box i: [yc, xc, h, w]. */
function centerSize(b: ArrayLike<number>, i: number): [number, number, number, number] {
  const h = b[4 * i + 3]! - b[4 * i + 1]!;
  const w = b[4 * i + 2]! - b[4 * i]!;
  return [b[4 * i + 1]! + h / 2, b[4 * i]! + w / 2, h, w];
}

/** Position of (y, x, h, w) component k in a code of the coder's order. */
const SLOT: Record<BoxCoder['order'], readonly number[]> = { yxhw: [0, 1, 2, 3], xywh: [1, 0, 3, 2] };

function checkPaired(a: ArrayLike<number>, b: ArrayLike<number>, what: string): number {
  const n = boxCount(a, what);
  if (boxCount(b, 'anchors') !== n) throw new Error(`${what}: ${n} boxes but ${b.length / 4} anchors`);
  return n;
}

/** Encodes box i relative to anchor i, for every i. */
export function encodeBoxes(boxes: ArrayLike<number>, anchors: ArrayLike<number>, coder: BoxCoder = TF_BOX_CODER): Float32Array {
  const n = checkPaired(boxes, anchors, 'boxes');
  const [sy, sx, sh, sw] = coder.scales;
  const slot = SLOT[coder.order];
  const out = new Float32Array(4 * n);
  for (let i = 0; i < n; i++) {
    const [ya, xa, ha0, wa0] = centerSize(anchors, i);
    const [y, x, h0, w0] = centerSize(boxes, i);
    const [ha, wa, h, w] = [ha0 + coder.eps, wa0 + coder.eps, h0 + coder.eps, w0 + coder.eps];
    const t = [(sy * (y - ya)) / ha, (sx * (x - xa)) / wa, sh * Math.log(h / ha), sw * Math.log(w / wa)];
    for (let k = 0; k < 4; k++) out[4 * i + slot[k]!] = t[k]!;
  }
  return out;
}

/** Decodes code i relative to anchor i into [x1, y1, x2, y2]. */
export function decodeBoxes(codes: ArrayLike<number>, anchors: ArrayLike<number>, coder: BoxCoder = TF_BOX_CODER): Float32Array {
  const n = checkPaired(codes, anchors, 'codes');
  const [sy, sx, sh, sw] = coder.scales;
  const slot = SLOT[coder.order];
  const out = new Float32Array(4 * n);
  for (let i = 0; i < n; i++) {
    const [ya, xa, ha, wa] = centerSize(anchors, i);
    const c = (k: number): number => codes[4 * i + slot[k]!]!;
    const yc = (c(0) / sy) * ha + ya;
    const xc = (c(1) / sx) * wa + xa;
    const h = Math.exp(Math.min(c(2) / sh, coder.maxLogScale)) * ha;
    const w = Math.exp(Math.min(c(3) / sw, coder.maxLogScale)) * wa;
    out.set([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], 4 * i);
  }
  return out;
}
