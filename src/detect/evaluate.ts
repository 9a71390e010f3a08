/**
 * A detector over a detection dataset: every image's detections in COCO results format (what pycocotools'
 * loadRes reads: image_id, category_id, bbox [x, y, w, h] in pixels, score), scored with COCOeval's 12 numbers
 * and, when asked, Pascal VOC AP50 per class; the precision-recall curves drawn as SVG/PNG.
 *
 * A model's class column k (1-based, column 0 background) is a dataset category in one of two ways:
 * - `index`: k = label + 1, the dataset's k-th category (the project's models, trained on that dataset);
 * - `id`: k is the COCO category id itself (the TF OD API's 90-class COCO models, whose label map has gaps).
 * `auto` takes `index` when the model has as many classes as the dataset, else `id` when every category id is a
 * model class, else it is an error.
 */
import sharp from 'sharp';
import { cocoEvaluate, type CocoDetection, type CocoEvalResult, type CocoParams } from './coco-eval.js';
import { toCocoGroundTruth, type DetectionDataset } from './dataset.js';
import { vocEvaluate, type VocDetection, type VocGt } from './voc-eval.js';
import type { Detection } from './ssdlite-detector.js';
import { panel, svgDocument } from '../train/plot.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { mean } from '../util/stats.js';

export type CategoryMapping = 'index' | 'id' | 'auto';

/** What the evaluation needs of a detector: pixel detections of one image file. */
export interface ImageDetector {
  /** Foreground classes of the model. */
  numClasses: number;
  detect(file: string): Promise<readonly Detection[]>;
}

/** Model class column (1-based) → COCO category id, by the mapping (see the file comment). */
export function categoryMap(ds: DetectionDataset, numClasses: number, mapping: CategoryMapping = 'auto'): Map<number, number> {
  const ids = ds.categories.map((c) => c.id);
  let m = mapping;
  if (m === 'auto') {
    if (numClasses === ids.length) m = 'index';
    else if (ids.every((id) => Number.isInteger(id) && id >= 1 && id <= numClasses)) m = 'id';
    else throw new Error(`the model has ${numClasses} classes, the dataset ${ids.length} categories with ids ${Math.min(...ids)}..${Math.max(...ids)}: give --category-map index or id`);
  }
  if (m === 'index') {
    if (numClasses < ids.length) throw new Error(`--category-map index: the model has ${numClasses} classes, fewer than the dataset's ${ids.length} categories`);
    return new Map(ids.map((id, label) => [label + 1, id]));
  }
  return new Map(ids.filter((id) => id <= numClasses).map((id) => [id, id]));
}

export interface DetectionEvalResult {
  /** COCO results format, image by image in dataset order, each image's by decreasing score. */
  detections: CocoDetection[];
  coco: CocoEvalResult;
  /** Detections of model classes that are no dataset category (left out). */
  unmapped: number;
}

/** Runs the detector over every image and scores the detections with COCOeval. */
export async function evaluateDetector(
  det: ImageDetector,
  ds: DetectionDataset,
  o: { mapping?: CategoryMapping; onProgress?: (done: number) => void; params?: CocoParams } = {},
): Promise<DetectionEvalResult> {
  const map = categoryMap(ds, det.numClasses, o.mapping);
  const detections: CocoDetection[] = [];
  let unmapped = 0;
  for (const [i, im] of ds.images.entries()) {
    for (const d of await det.detect(im.file)) {
      const category = map.get(d.classId);
      if (category === undefined) {
        unmapped++;
        continue;
      }
      const [x1, y1, x2, y2] = d.box;
      detections.push({ image_id: im.id, category_id: category, bbox: [x1, y1, x2 - x1, y2 - y1], score: d.score });
    }
    o.onProgress?.(i + 1);
  }
  return { detections, coco: cocoEvaluate(toCocoGroundTruth(ds), detections, o.params), unmapped };
}

/** Pascal VOC AP at IoU 0.5 per category (by category id) and their mean: all-point (VOC2010+) and 11-point (VOC2007). */
export function vocAp50(ds: DetectionDataset, detections: readonly CocoDetection[]): { perCategory: { id: number; name: string; ap: number; ap07: number }[]; mAP: number; mAP07: number } {
  const gts: VocGt[] = ds.images.flatMap((im) => im.boxes.map((b) => ({ imageId: im.id, classId: ds.categories[b.label]!.id, box: b.box, difficult: b.difficult })));
  const dets: VocDetection[] = detections.map((d) => {
    const [x, y, w, h] = d.bbox as [number, number, number, number];
    return { imageId: d.image_id, classId: d.category_id, box: [x, y, x + w, y + h], score: d.score };
  });
  const ids = ds.categories.map((c) => c.id);
  // Pixel-edge boxes (dataset.ts): widths are x2 − x1, which is the devkit's x2 − x1 + 1 on its inclusive pixels.
  const all = vocEvaluate(gts, dets, ids, { pixelPlusOne: false });
  const v07 = vocEvaluate(gts, dets, ids, { pixelPlusOne: false, use07: true });
  // A category without (non-difficult) gt has no AP (NaN) in both, and stays out of both means.
  const perCategory = ds.categories.map((c) => {
    const ap = all.ap.get(c.id)!;
    return { id: c.id, name: c.name, ap, ap07: Number.isNaN(ap) ? NaN : v07.ap.get(c.id)! };
  });
  return { perCategory, mAP: all.mAP, mAP07: mean(perCategory.map((c) => c.ap07).filter((v) => !Number.isNaN(v))) };
}

/**
 * Precision at each of COCOeval's 101 recall points for IoU t (area all, 100 detections), averaged over the
 * categories that have gt (pycocotools' −1 entries left out); null when none has.
 */
export function precisionAtRecall(r: CocoEvalResult, iouThreshold: number): number[] | null {
  const t = r.params.iouThrs.findIndex((v) => Math.abs(v - iouThreshold) < 1e-9);
  if (t < 0) throw new Error(`IoU ${iouThreshold} is not one of the evaluation's thresholds`);
  const m = r.params.maxDets.length - 1;
  const curve = r.precision[t]!.map((byK) => {
    const v = byK.map((byA) => byA[0]![m]!).filter((p) => p > -1);
    return v.length ? v.reduce((s, p) => s + p, 0) / v.length : NaN;
  });
  return curve.every(Number.isNaN) ? null : curve;
}

/** The precision-recall curves at IoU 0.5 and 0.75 (COCO's interpolated precision, mean over categories), as SVG. */
export function renderPrSvg(r: CocoEvalResult, title: string): string {
  const W = 640;
  const H = 480;
  const series = [
    { iou: 0.5, name: 'IoU 0.50', color: '#1f77b4' },
    { iou: 0.75, name: 'IoU 0.75', color: '#d62728' },
  ].map((s) => ({ name: s.name, color: s.color, points: (precisionAtRecall(r, s.iou) ?? []).map((p, i) => [r.params.recThrs[i]!, p] as [number, number]) }));
  const heading = `precision vs recall: AP50 ${r.stats[1]!.toFixed(3)}, AP75 ${r.stats[2]!.toFixed(3)}, AP ${r.stats[0]!.toFixed(3)}`;
  const body = panel(0, 24, W, H - 24, heading, series, 1, (v) => v.toFixed(1), 'recall', [0, 1]);
  return svgDocument(W, H, title, body, { y: 16, size: 13 });
}

/** Writes the precision-recall curves as PNG (rendered by sharp). */
export async function writePrPng(r: CocoEvalResult, file: string, title: string): Promise<void> {
  writeFileAtomic(file, await sharp(Buffer.from(renderPrSvg(r, title))).png().toBuffer());
}
