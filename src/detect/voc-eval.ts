/**
 * Pascal VOC average precision at IoU 0.5, as the VOC devkit and py-faster-rcnn's `voc_eval.py` compute it: per
 * class, detections by decreasing score; a detection is a true positive when its best IoU with the image's gts
 * of that class is **> 0.5** and that gt is not yet taken (a second hit is a false positive); a best gt marked
 * `difficult` makes the detection neither; difficult gts do not count in the recall. Box sizes use the devkit's
 * inclusive pixel convention (w = x2 − x1 + 1) unless `pixelPlusOne: false`.
 * `use07`: VOC2007's 11-point AP (max precision at recall ≥ 0, 0.1, …, 1); otherwise the area under the
 * monotone precision envelope (VOC2010+, "all points").
 */

export interface VocGt {
  imageId: string | number;
  classId: number;
  /** [x1, y1, x2, y2]. */
  box: readonly number[];
  difficult?: boolean;
}

export interface VocDetection {
  imageId: string | number;
  classId: number;
  box: readonly number[];
  score: number;
}

export interface VocOptions {
  iouThreshold?: number;
  use07?: boolean;
  pixelPlusOne?: boolean;
}

/** voc_ap(rec, prec, use_07_metric). */
export function vocAp(rec: readonly number[], prec: readonly number[], use07: boolean): number {
  if (use07) {
    let ap = 0;
    for (let k = 0; k <= 10; k++) {
      const t = k * 0.1; // np.arange(0, 1.1, 0.1): 0.30000000000000004 etc., as in the devkit port
      let p = 0;
      rec.forEach((r, i) => {
        if (r >= t) p = Math.max(p, prec[i]!);
      });
      ap += p / 11;
    }
    return ap;
  }
  const mrec = [0, ...rec, 1];
  const mpre = [0, ...prec, 0];
  for (let i = mpre.length - 1; i > 0; i--) mpre[i - 1] = Math.max(mpre[i - 1]!, mpre[i]!);
  let ap = 0;
  for (let i = 0; i + 1 < mrec.length; i++) if (mrec[i + 1] !== mrec[i]) ap += (mrec[i + 1]! - mrec[i]!) * mpre[i + 1]!;
  return ap;
}

function overlap(a: readonly number[], b: readonly number[], one: number): number {
  const iw = Math.max(Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!) + one, 0);
  const ih = Math.max(Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!) + one, 0);
  const inter = iw * ih;
  const area = (x: readonly number[]): number => (x[2]! - x[0]! + one) * (x[3]! - x[1]! + one);
  return inter / (area(a) + area(b) - inter);
}

/** AP of one class (voc_eval); NaN when the class has no non-difficult gt (0/0 recall, as voc_eval gives). */
export function vocClassAp(gts: readonly VocGt[], dets: readonly VocDetection[], classId: number, o: VocOptions = {}): number {
  const thr = o.iouThreshold ?? 0.5;
  const one = (o.pixelPlusOne ?? true) ? 1 : 0;
  const byImage = new Map<string | number, { gt: VocGt; taken: boolean }[]>();
  let npos = 0;
  for (const g of gts) {
    if (g.classId !== classId) continue;
    if (!g.difficult) npos++;
    const list = byImage.get(g.imageId) ?? [];
    list.push({ gt: g, taken: false });
    byImage.set(g.imageId, list);
  }
  const ds = dets.filter((d) => d.classId === classId).map((d, i) => ({ d, i })).sort((p, q) => q.d.score - p.d.score || p.i - q.i);
  let tp = 0;
  let fp = 0;
  const rec: number[] = [];
  const prec: number[] = [];
  for (const { d } of ds) {
    let best = -Infinity;
    let hit: { gt: VocGt; taken: boolean } | undefined;
    for (const r of byImage.get(d.imageId) ?? []) {
      const ov = overlap(d.box, r.gt.box, one);
      if (ov > best) {
        best = ov;
        hit = r;
      }
    }
    if (hit && best > thr) {
      if (hit.gt.difficult) {
        // neither
      } else if (!hit.taken) {
        tp++;
        hit.taken = true;
      } else fp++;
    } else fp++;
    rec.push(tp / npos);
    prec.push(tp / Math.max(tp + fp, Number.EPSILON));
  }
  return vocAp(rec, prec, o.use07 ?? false);
}

/** Per-class AP and their mean over the classes with gts (mAP). */
export function vocEvaluate(gts: readonly VocGt[], dets: readonly VocDetection[], classIds: readonly number[], o: VocOptions = {}): { ap: Map<number, number>; mAP: number } {
  const ap = new Map<number, number>();
  for (const c of classIds) ap.set(c, vocClassAp(gts, dets, c, o));
  const valid = [...ap.values()].filter((v) => !Number.isNaN(v));
  return { ap, mAP: valid.length ? valid.reduce((s, v) => s + v, 0) / valid.length : NaN };
}
