/**
 * Classification's side of a run's evaluation: the per-epoch metrics (val_loss, val_top1 — the best key —,
 * val_top5) of an evaluation result, the evaluation of a NativeModel with the EMA weights swapped in, and the
 * final report files (eval.txt, eval.json, confusion.png).
 */
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.js';
import { NativeModel } from '../engine/native/model.js';
import type { Dataset, InputConvention } from '../data/dataset.js';
import type { StateDict } from '../model/weights.js';
import type { Graph } from '../model/graph.js';
import type { Evaluation } from './epochs.js';
import type { RunFolder } from './artifacts.js';
import { evaluate, formatEvalReport, writeConfusionPng, type EvalResult } from './metrics.js';
import { progressBar, speed } from './progress.js';

export interface ClassificationEvaluation extends Evaluation {
  result: EvalResult;
}

export function classificationEvaluation(r: EvalResult): ClassificationEvaluation {
  return {
    result: r,
    metrics: { val_loss: r.loss, val_top1: r.top1, val_top5: r.top5 },
    summary: `val loss ${r.loss.toFixed(4)} top-1 ${(100 * r.top1).toFixed(2)}% top-5 ${(100 * r.top5).toFixed(2)}%`,
    metadata: { 'mnv2.val_top1': String(r.top1), 'mnv2.val_top5': String(r.top5) },
  };
}

/** The test split scored once with the val-chosen weights (`--val-split`), as the final model's metadata says. */
export async function scoreTestOnce(graph: Graph, best: StateDict, bestTop1: number, ds: Dataset, conv: InputConvention, o: ModelEvalOptions): Promise<{ result: EvalResult; metadata: Record<string, string> }> {
  const model = new NativeModel(graph, best, { threads: o.threads });
  // Its own (copied) weights: other weights would make the evaluator load them into a second model.
  const result = await modelEvaluator(model, ds, conv, o)(model.weights);
  return { result, metadata: { 'mnv2.test_top1': String(result.top1), 'mnv2.test_top5': String(result.top5), 'mnv2.val_top1': String(bestTop1) } };
}

export interface ModelEvalOptions {
  batch: number;
  threads?: number;
  progress: boolean;
  worker: boolean;
}

/**
 * Evaluation on `ds` of `model`, or of other weights for it (the EMA's) loaded into a second model, so the
 * training weights stay untouched bit for bit.
 */
export function modelEvaluator(model: NativeModel, ds: Dataset, conv: InputConvention, o: ModelEvalOptions): (weights: StateDict) => Promise<EvalResult> {
  let evalModel: NativeModel | null = null;
  return async (weights) => {
    let m = model;
    if (weights !== model.weights) {
      evalModel ??= new NativeModel(model.graph, weights, { threads: o.threads });
      evalModel.loadStateDict(weights, 'EMA weights');
      m = evalModel;
    }
    const pb = progressBar(o.progress, `  evaluating |{bar}| {value}/{total} images | {speed} img/s`);
    pb?.start(ds.count, 0, { speed: '-' });
    const t0 = performance.now();
    try {
      return await evaluate(m, ds, conv, o.batch, { worker: o.worker, onProgress: (d) => pb?.update(d, { speed: speed(d, t0) }) });
    } finally {
      pb?.stop();
    }
  };
}

/**
 * eval.txt, eval.json and (with plots) confusion.png of the final evaluation on `datasetName`; with `--val-split`
 * the test split's, named test-eval.txt / test-eval.json.
 */
export async function writeClassificationReport(final: EvalResult, datasetName: string, folder: RunFolder, plots: boolean, stem: 'eval' | 'test-eval' = 'eval'): Promise<void> {
  const { files, runDir } = folder;
  files.report = join(runDir, `${stem}.txt`);
  writeFileAtomic(files.report, `${datasetName}: ${formatEvalReport(final)}\n`);
  files.eval = join(runDir, `${stem}.json`);
  writeFileAtomic(files.eval, `${JSON.stringify({ dataset: datasetName, top1: final.top1, top5: final.top5, correct: final.correct, total: final.total, loss: final.loss, perClass: final.perClass })}\n`);
  if (plots) {
    files.confusion = join(runDir, 'confusion.png');
    await writeConfusionPng(final, files.confusion);
  }
}
