/**
 * COCO box evaluation exactly as pycocotools' COCOeval (iouType 'bbox', useCats 1 or 0): `evaluateImg` (per image and
 * category, detections by decreasing score (stable), each matched to the best still-free gt with IoU ≥ t, regular
 * gts before ignored ones, crowd gts matchable many times with IoU = intersection / detection area),
 * `accumulate` (precision at 101 recall points after making it monotone; −1 where a category has no
 * non-ignored gt) and `summarize` (the 12 numbers). Boxes are COCO's [x, y, w, h] here.
 *
 * Differences, all on malformed input pycocotools does not guard: pycocotools marks a match by storing the gt's
 * id, so a gt with id 0 never counts as matched; here matches are flags. Detections on images absent from the
 * ground truth are an error (pycocotools' loadRes asserts the same).
 */

export interface CocoGtAnnotation {
  id: number;
  image_id: number;
  category_id: number;
  bbox: readonly number[];
  /** Used for the area ranges (COCO's segmentation area); defaults to w·h. IoU always uses the box. */
  area?: number;
  iscrowd?: number | boolean;
}

export interface CocoGroundTruth {
  images: readonly { id: number }[];
  categories: readonly { id: number; name?: string }[];
  annotations: readonly CocoGtAnnotation[];
}

export interface CocoDetection {
  image_id: number;
  category_id: number;
  bbox: readonly number[];
  score: number;
}

export interface CocoParams {
  iouThrs: number[];
  recThrs: number[];
  maxDets: number[];
  areaRng: [number, number][];
  areaRngLbl: string[];
  /**
   * Params.useCats (default true). false: categories are ignored, a detection can match a box of any category
   * (COCOeval's class-agnostic mode: one pseudo-category -1, each image's boxes and detections taken in category order).
   */
  useCats?: boolean;
}

/** np.linspace(a, b, n) as numpy computes it (step·i + a), so thresholds compare exactly as in pycocotools. */
function linspace(a: number, b: number, n: number): number[] {
  const step = (b - a) / (n - 1);
  return Array.from({ length: n }, (_, i) => (i === n - 1 ? b : i * step + a));
}

/** Params.setDetParams. */
export function defaultCocoParams(): CocoParams {
  return {
    iouThrs: linspace(0.5, 0.95, Math.round((0.95 - 0.5) / 0.05) + 1),
    recThrs: linspace(0, 1, Math.round(1 / 0.01) + 1),
    maxDets: [1, 10, 100],
    areaRng: [[0, 1e5 ** 2], [0, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]],
    areaRngLbl: ['all', 'small', 'medium', 'large'],
  };
}

interface Gt {
  id: number;
  box: readonly number[];
  area: number;
  crowd: boolean;
}

interface Det {
  id: number;
  box: readonly number[];
  area: number;
  score: number;
}

/** maskUtils.iou for boxes (bbIou): intersection / union, or / detection area for crowd gts. */
function bboxIou(d: readonly number[], g: readonly number[], crowd: boolean): number {
  const w = Math.min(d[0]! + d[2]!, g[0]! + g[2]!) - Math.max(d[0]!, g[0]!);
  if (w <= 0) return 0;
  const h = Math.min(d[1]! + d[3]!, g[1]! + g[3]!) - Math.max(d[1]!, g[1]!);
  if (h <= 0) return 0;
  const i = w * h;
  const da = d[2]! * d[3]!;
  return i / (crowd ? da : da + g[2]! * g[3]! - i);
}

/** Stable sort of indices by key ascending (numpy argsort kind='mergesort'). */
function argsortStable(keys: readonly number[]): number[] {
  return keys.map((_, i) => i).sort((a, b) => keys[a]! - keys[b]! || a - b);
}

interface EvalImg {
  /** [T][D] matched flags, in score order. */
  dtMatched: boolean[][];
  dtIgnore: boolean[][];
  dtScores: number[];
  gtIgnore: boolean[];
}

/** COCOeval.evaluateImg for one image, category and area range; null when it has no gt and no detection. */
function evaluateImg(gts: Gt[], dts: Det[], aRng: [number, number], maxDet: number, p: CocoParams): EvalImg | null {
  if (gts.length === 0 && dts.length === 0) return null;
  const ignoreOf = (g: Gt): boolean => g.crowd || g.area < aRng[0] || g.area > aRng[1];
  const gtOrder = argsortStable(gts.map((g) => (ignoreOf(g) ? 1 : 0)));
  const gt = gtOrder.map((i) => gts[i]!);
  const dt = argsortStable(dts.map((d) => -d.score)).slice(0, maxDet).map((i) => dts[i]!);
  const gtIg = gt.map(ignoreOf);
  const ious = dt.map((d) => gt.map((g) => bboxIou(d.box, g.box, g.crowd)));
  const T = p.iouThrs.length;
  const dtMatched = Array.from({ length: T }, () => new Array<boolean>(dt.length).fill(false));
  const dtIgnore = Array.from({ length: T }, () => new Array<boolean>(dt.length).fill(false));
  p.iouThrs.forEach((t, ti) => {
    const gtTaken = new Array<boolean>(gt.length).fill(false);
    dt.forEach((_, di) => {
      let best = Math.min(t, 1 - 1e-10);
      let m = -1;
      for (let gi = 0; gi < gt.length; gi++) {
        if (gtTaken[gi] && !gt[gi]!.crowd) continue;
        // Already on a regular gt and the rest are ignored ones: stop.
        if (m > -1 && !gtIg[m] && gtIg[gi]) break;
        if (ious[di]![gi]! < best) continue;
        best = ious[di]![gi]!;
        m = gi;
      }
      if (m === -1) return;
      dtIgnore[ti]![di] = gtIg[m]!;
      dtMatched[ti]![di] = true;
      gtTaken[m] = true;
    });
    // Unmatched detections outside the area range are ignored.
    dt.forEach((d, di) => {
      if (!dtMatched[ti]![di] && (d.area < aRng[0] || d.area > aRng[1])) dtIgnore[ti]![di] = true;
    });
  });
  return { dtMatched, dtIgnore, dtScores: dt.map((d) => d.score), gtIgnore: gtIg };
}

/** np.spacing(1): the precision denominator's guard. */
const EPS = 2.220446049250313e-16;

/** Leftmost index i with sorted[i] ≥ v (np.searchsorted side='left'). */
function searchLeft(sorted: readonly number[], v: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** COCOeval.accumulate for one (category, area range, maxDet) over its images: precision [T][R], recall [T]. */
function accumulateOne(E: EvalImg[], maxDet: number, p: CocoParams): { precision: number[][]; recall: number[] } | null {
  const npig = E.reduce((s, e) => s + e.gtIgnore.filter((ig) => !ig).length, 0);
  if (E.length === 0 || npig === 0) return null;
  const scores = E.flatMap((e) => e.dtScores.slice(0, maxDet));
  const order = argsortStable(scores.map((s) => -s));
  const precision: number[][] = [];
  const recall: number[] = [];
  p.iouThrs.forEach((_, t) => {
    const matched = E.flatMap((e) => e.dtMatched[t]!.slice(0, maxDet));
    const ignored = E.flatMap((e) => e.dtIgnore[t]!.slice(0, maxDet));
    let tp = 0;
    let fp = 0;
    const rc: number[] = [];
    const pr: number[] = [];
    for (const i of order) {
      if (ignored[i]) {
        // Ignored detections still add a point with unchanged counts (np.cumsum over all detections).
      } else if (matched[i]) tp++;
      else fp++;
      rc.push(tp / npig);
      pr.push(tp / (fp + tp + EPS));
    }
    recall.push(rc.length ? rc[rc.length - 1]! : 0);
    for (let i = pr.length - 1; i > 0; i--) if (pr[i]! > pr[i - 1]!) pr[i - 1] = pr[i]!;
    // q stays 0 from the first recall threshold past the last recall reached (pycocotools' bare except).
    precision.push(p.recThrs.map((r) => {
      const k = searchLeft(rc, r);
      return k < pr.length ? pr[k]! : 0;
    }));
  });
  return { precision, recall };
}

export interface CocoEvalResult {
  /** The 12 numbers of COCOeval.summarize, in its order (see COCO_STAT_NAMES). */
  stats: number[];
  /** precision[t][r][k][a][m], −1 where undefined (as COCOeval.eval['precision']). */
  precision: number[][][][][];
  /** recall[t][k][a][m]. */
  recall: number[][][][];
  catIds: number[];
  imgIds: number[];
  params: CocoParams;
}

export const COCO_STAT_NAMES = [
  'AP', 'AP50', 'AP75', 'AP_small', 'AP_medium', 'AP_large', 'AR1', 'AR10', 'AR100', 'AR_small', 'AR_medium', 'AR_large',
] as const;

function groupKey(img: number, cat: number): string {
  return `${img}/${cat}`;
}

function push<T>(m: Map<string, T[]>, k: string, v: T): void {
  const a = m.get(k);
  if (a) a.push(v);
  else m.set(k, [v]);
}

function checkBox(b: readonly number[], what: string): void {
  if (!Array.isArray(b) || b.length !== 4 || !b.every((v) => Number.isFinite(v))) throw new Error(`${what}: bbox must be 4 finite numbers [x, y, w, h]`);
}

/** COCOeval(gt, loadRes(dets), 'bbox'): evaluate(), accumulate(), summarize(). */
export function cocoEvaluate(gtSet: CocoGroundTruth, detections: readonly CocoDetection[], params: CocoParams = defaultCocoParams()): CocoEvalResult {
  const p = params;
  const imgIds = [...new Set(gtSet.images.map((i) => i.id))].sort((a, b) => a - b);
  const catIds = [...new Set(gtSet.categories.map((c) => c.id))].sort((a, b) => a - b);
  const imgSet = new Set(imgIds);
  const gts = new Map<string, Gt[]>();
  gtSet.annotations.forEach((a, i) => {
    checkBox(a.bbox, `annotation ${i} (id ${a.id})`);
    push(gts, groupKey(a.image_id, a.category_id), { id: a.id, box: a.bbox, area: a.area ?? a.bbox[2]! * a.bbox[3]!, crowd: Boolean(a.iscrowd) });
  });
  const dts = new Map<string, Det[]>();
  detections.forEach((d, i) => {
    checkBox(d.bbox, `detection ${i}`);
    if (!imgSet.has(d.image_id)) throw new Error(`detection ${i}: image_id ${d.image_id} is not in the ground truth`);
    if (!Number.isFinite(d.score)) throw new Error(`detection ${i}: score ${d.score} is not a finite number`);
    push(dts, groupKey(d.image_id, d.category_id), { id: i + 1, box: d.bbox, area: d.bbox[2]! * d.bbox[3]!, score: d.score });
  });
  const maxDetTop = Math.max(...p.maxDets);
  const T = p.iouThrs.length;
  const R = p.recThrs.length;
  // useCats 0: one pseudo-category whose groups are every category's, in category order (COCOeval.evaluateImg)
  const evalCats = p.useCats === false ? [-1] : catIds;
  const K = evalCats.length;
  const A = p.areaRng.length;
  const M = p.maxDets.length;
  const precision = Array.from({ length: T }, () => Array.from({ length: R }, () => Array.from({ length: K }, () => Array.from({ length: A }, () => new Array<number>(M).fill(-1)))));
  const recall = Array.from({ length: T }, () => Array.from({ length: K }, () => Array.from({ length: A }, () => new Array<number>(M).fill(-1))));
  const group = <T>(m: Map<string, T[]>, img: number, cat: number): T[] =>
    cat === -1 ? catIds.flatMap((c) => m.get(groupKey(img, c)) ?? []) : m.get(groupKey(img, cat)) ?? [];
  evalCats.forEach((cat, k) => {
    p.areaRng.forEach((aRng, a) => {
      const E = imgIds
        .map((img) => evaluateImg(group(gts, img, cat), group(dts, img, cat), aRng, maxDetTop, p))
        .filter((e): e is EvalImg => e !== null);
      p.maxDets.forEach((maxDet, m) => {
        const r = accumulateOne(E, maxDet, p);
        if (!r) return;
        for (let t = 0; t < T; t++) {
          recall[t]![k]![a]![m] = r.recall[t]!;
          for (let ri = 0; ri < R; ri++) precision[t]![ri]![k]![a]![m] = r.precision[t]![ri]!;
        }
      });
    });
  });
  return { stats: summarize(precision, recall, p), precision, recall, catIds: evalCats, imgIds, params: p };
}

/** COCOeval.summarize's _summarize: mean over the entries > −1, or −1 when there are none. */
function summarizeOne(ap: boolean, precision: number[][][][][], recall: number[][][][], p: CocoParams, iouThr: number | null, areaLbl: string, maxDets: number): number {
  const a = p.areaRngLbl.indexOf(areaLbl);
  const m = p.maxDets.indexOf(maxDets);
  const ts = p.iouThrs.map((t, i) => ({ t, i })).filter(({ t }) => iouThr === null || t === iouThr).map(({ i }) => i);
  const vals: number[] = [];
  for (const t of ts) {
    if (ap) precision[t]!.forEach((byK) => byK.forEach((byA) => vals.push(byA[a]![m]!)));
    else recall[t]!.forEach((byA) => vals.push(byA[a]![m]!));
  }
  const valid = vals.filter((v) => v > -1);
  return valid.length ? valid.reduce((s, v) => s + v, 0) / valid.length : -1;
}

function summarize(precision: number[][][][][], recall: number[][][][], p: CocoParams): number[] {
  const [m1, m10, m100] = [p.maxDets[0]!, p.maxDets[1]!, p.maxDets[2]!];
  const s = (ap: boolean, iou: number | null, area: string, md: number): number => summarizeOne(ap, precision, recall, p, iou, area, md);
  return [
    s(true, null, 'all', m100), s(true, 0.5, 'all', m100), s(true, 0.75, 'all', m100),
    s(true, null, 'small', m100), s(true, null, 'medium', m100), s(true, null, 'large', m100),
    s(false, null, 'all', m1), s(false, null, 'all', m10), s(false, null, 'all', m100),
    s(false, null, 'small', m100), s(false, null, 'medium', m100), s(false, null, 'large', m100),
  ];
}

/** The 12 lines COCOeval.summarize prints. */
export function formatCocoStats(stats: readonly number[], p: CocoParams = defaultCocoParams()): string {
  const rows: [boolean, string, string, number][] = [
    [true, '0.50:0.95', 'all', p.maxDets[2]!], [true, '0.50', 'all', p.maxDets[2]!], [true, '0.75', 'all', p.maxDets[2]!],
    [true, '0.50:0.95', 'small', p.maxDets[2]!], [true, '0.50:0.95', 'medium', p.maxDets[2]!], [true, '0.50:0.95', 'large', p.maxDets[2]!],
    [false, '0.50:0.95', 'all', p.maxDets[0]!], [false, '0.50:0.95', 'all', p.maxDets[1]!], [false, '0.50:0.95', 'all', p.maxDets[2]!],
    [false, '0.50:0.95', 'small', p.maxDets[2]!], [false, '0.50:0.95', 'medium', p.maxDets[2]!], [false, '0.50:0.95', 'large', p.maxDets[2]!],
  ];
  return rows
    .map(([ap, iou, area, md], i) => {
      const title = ap ? 'Average Precision  (AP)' : 'Average Recall     (AR)';
      return ` ${title} @[ IoU=${iou.padEnd(9)} | area=${area.padStart(6)} | maxDets=${String(md).padStart(3)} ] = ${stats[i]!.toFixed(3)}`;
    })
    .join('\n');
}
