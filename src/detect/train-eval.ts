/**
 * Detection's side of a run's evaluation: a NativeModel (eval mode) over a decoded split, the task's decoding
 * (100 detections per image, its family's NMS), COCOeval's 12 numbers and the mean task loss; the per-epoch
 * metrics (val_loss, val_AP — the best key —, val_AP50, val_AP75) and the report files of the test evaluation.
 */
import { join } from 'node:path';
import { NativeModel } from '../engine/native/model.js';
import type { StateDict } from '../model/weights.js';
import type { DetectionTask } from '../task/detection.js';
import type { Evaluation } from '../train/epochs.js';
import type { RunFolder } from '../train/artifacts.js';
import { progressBar, speed } from '../train/progress.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { COCO_STAT_NAMES, cocoEvaluate, formatCocoStats, type CocoDetection, type CocoEvalResult } from './coco-eval.js';
import { toCocoGroundTruth } from './dataset.js';
import { writePrPng } from './evaluate.js';
import { evalBatches, type DetectionSplit } from './train-data.js';

export interface DetectionEvalResult {
  coco: CocoEvalResult;
  /** Mean task loss per image (the training loss, on unaugmented images). */
  loss: number;
  /** COCO results format (pixels), for --coco-json style re-scoring. */
  detections: CocoDetection[];
  images: number;
}

export interface DetectionEvaluation extends Evaluation {
  result: DetectionEvalResult;
}

/** Detections per image, as COCOeval counts them (maxDets 100). */
const MAX_DETECTIONS = 100;

/** The split's images through the model: detections in pixels (category ids of the dataset) and the loss. */
export async function evaluateDetection(model: NativeModel, task: DetectionTask, split: DetectionSplit, o: { batch: number; progress: boolean; what?: string }): Promise<DetectionEvalResult> {
  const { resolution } = model.graph.config;
  const { images, categories } = split.dataset;
  const detections: CocoDetection[] = [];
  let lossSum = 0;
  const pb = progressBar(o.progress, `  ${o.what ?? 'evaluating'} |{bar}| {value}/{total} images | {speed} img/s`);
  pb?.start(images.length, 0, { speed: '-' });
  const t0 = performance.now();
  try {
    for await (const b of evalBatches(split, o.batch, resolution)) {
      const outputs = await model.forwardOutputs(b.input, b.size);
      const scratch = new Map([...outputs].map(([k, v]) => [k, new Float32Array(v.length)] as const));
      lossSum += task.loss(outputs, b.target, b.size, scratch).loss * b.size;
      task.decode(outputs, b.size, { maxDetections: MAX_DETECTIONS }).forEach((d, k) => {
        const im = images[b.start + k]!;
        for (let i = 0; i < d.count; i++) {
          const [x1, y1, x2, y2] = d.boxes.subarray(4 * i, 4 * i + 4) as unknown as number[];
          const category = categories[d.classes[i]! - 1];
          // The background column is never a detection; a model with more classes than the dataset is refused up front.
          if (!category) continue;
          const [px1, py1] = [x1! * im.width, y1! * im.height];
          detections.push({ image_id: im.id, category_id: category.id, bbox: [px1, py1, x2! * im.width - px1, y2! * im.height - py1], score: d.scores[i]! });
        }
      });
      pb?.update(b.start + b.size, { speed: speed(b.start + b.size, t0) });
    }
  } finally {
    pb?.stop();
  }
  return { coco: cocoEvaluate(toCocoGroundTruth(split.dataset), detections), loss: lossSum / images.length, detections, images: images.length };
}

/** The loop's view of a detection evaluation (prefix `val` per epoch; `test` for the final report). */
export function detectionEvaluation(r: DetectionEvalResult, prefix = 'val'): DetectionEvaluation {
  const [ap, ap50, ap75] = r.coco.stats as [number, number, number];
  return {
    result: r,
    metrics: { [`${prefix}_loss`]: r.loss, [`${prefix}_AP`]: ap, [`${prefix}_AP50`]: ap50, [`${prefix}_AP75`]: ap75 },
    summary: `${prefix} loss ${r.loss.toFixed(4)} AP ${ap.toFixed(4)} AP50 ${ap50.toFixed(4)} AP75 ${ap75.toFixed(4)}`,
    metadata: { [`mnv2.${prefix}_AP`]: String(ap), [`mnv2.${prefix}_AP50`]: String(ap50) },
  };
}

/**
 * An evaluator of weights on a split: the training model itself, or other weights (the EMA's, the best
 * checkpoint's) in a second model, so the training weights stay untouched.
 */
export function detectionEvaluator(model: NativeModel, task: DetectionTask, split: DetectionSplit, o: { batch: number; threads?: number; progress: boolean }): (weights: StateDict, what?: string) => Promise<DetectionEvalResult> {
  let other: NativeModel | null = null;
  return async (weights, what) => {
    let m = model;
    if (weights !== model.weights) {
      other ??= new NativeModel(model.graph, weights, { threads: o.threads });
      other.loadStateDict(weights, 'evaluated weights');
      m = other;
    }
    return evaluateDetection(m, task, split, { ...o, what });
  };
}

/** test-eval.txt (the 12 COCO numbers), test-eval.json, test-detections.json and (with plots) test-pr.png. */
export async function writeDetectionReport(r: DetectionEvalResult, datasetName: string, epoch: number, folder: RunFolder, plots: boolean): Promise<string> {
  const { files, runDir } = folder;
  const text = `${datasetName} (${r.images} images), the val-chosen checkpoint of epoch ${epoch}:\n${formatCocoStats(r.coco.stats, r.coco.params)}\n`;
  files.report = join(runDir, 'test-eval.txt');
  writeFileAtomic(files.report, text);
  files.eval = join(runDir, 'test-eval.json');
  const coco = Object.fromEntries(COCO_STAT_NAMES.map((k, i) => [k, r.coco.stats[i]!]));
  writeFileAtomic(files.eval, `${JSON.stringify({ dataset: datasetName, images: r.images, epoch, loss: r.loss, coco })}\n`);
  files.detections = join(runDir, 'test-detections.json');
  writeFileAtomic(files.detections, `${JSON.stringify(r.detections)}\n`);
  if (plots) {
    files.pr = join(runDir, 'test-pr.png');
    await writePrPng(r.coco, files.pr, `${datasetName}, epoch ${epoch}`);
  }
  return text;
}
