/**
 * A detection training run: an SSDLite model (src/model/ssdlite.ts) trained on the native engine on a
 * COCO-format dataset (the embedded `fashion-detect` set, made into the data folder when absent), through the one
 * epoch loop (src/train/epochs.ts) driven by the detection task (src/task/detection.ts) and the batches of
 * train-data.ts. Per epoch the val split's COCO AP picks the best checkpoint; at the end that val-chosen
 * checkpoint — and only it — is evaluated once on the test split. Checkpoints, exact resume, progress bars,
 * metrics.jsonl and curves are the classification run's (src/train/loop.ts).
 *
 * Files: the run folder's usual ones, where model.safetensors / model.onnx are the val-chosen (best) weights with
 * the test numbers in their metadata, plus test-eval.txt / .json (COCOeval's 12 numbers), test-detections.json
 * (COCO results format) and test-pr.png.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { NativeModel, type StepOptions } from '../engine/native/model.js';
import type { Graph } from '../model/graph.js';
import type { SsdliteConfig } from '../model/ssdlite.js';
import { archConfig, buildModel, familyOf } from '../model/registry.js';
import { initWeights, type StateDict } from '../model/weights.js';
import { encodeModelInfo } from '../io/metadata.js';
import { loadModelFile } from '../io/weights.js';
import { deriveSeed } from '../data/loader.js';
import { fail } from '../util/errors.js';
import { detection } from '../task/detection.js';
import type { Task } from '../task/task.js';
import { RunFolder } from '../train/artifacts.js';
import { trainEpochs, type BatchSource } from '../train/epochs.js';
import { optimizerState, sessionPosition, stopOnSignals, type TrainOptions } from '../train/loop.js';
import { paramRefs } from '../train/optim.js';
import { FROZEN_BN_BATCHES, frozenBnStart, type DetectAugment, type DetectionRecipe, type TrainRecipe } from '../train/presets.js';
import { progressBar, formatDuration } from '../train/progress.js';
import { openRun } from '../train/run-state.js';
import { ssdAnchors } from './anchors.js';
import { detectorInit } from './backbone.js';
import type { SsdAugmentOptions } from './augment.js';
import { FASHION_DETECT_DEFAULTS, makeFashionDetect } from './fashion-detect.js';
import { detectionBatches, limitImages, openDetectionSplit, type DetectionSplit } from './train-data.js';
import { detectionEvaluation, detectionEvaluator, writeDetectionReport, type DetectionEvalResult, type DetectionEvaluation } from './train-eval.js';

export interface DetectTrainResult {
  runDir: string;
  stopped: boolean;
  epochs: number;
  globalStep: number;
  /** The last epoch's val evaluation of this session. */
  val: DetectionEvalResult | null;
  /** The val-chosen checkpoint on the test split (null when stopped early). */
  test: DetectionEvalResult | null;
  bestAP: number;
  bestEpoch: number;
  files: Record<string, string>;
  graph: Graph;
  /** The val-chosen weights when the run finished, else the training weights. */
  weights: StateDict;
}

/** The augmentation options of a recipe's policy (false: none). */
export function augmentOptions(a: DetectAugment): SsdAugmentOptions | false {
  if (a === 'none') return false;
  return a === 'ssd' ? {} : { photometric: false, zoomOut: false };
}

/**
 * Where the recipe's dataset is: a folder with <split>.json (or a COCO JSON). `fashion-detect` is made into its
 * data folder (default data/fashion-detect) the first time.
 */
export async function ensureDetectionDataset(recipe: Pick<TrainRecipe, 'dataset' | 'dataDir'>, bar: boolean, log: (m: string) => void): Promise<string> {
  if (recipe.dataset !== 'fashion-detect') return recipe.dataset;
  const dir = recipe.dataDir ?? 'data/fashion-detect';
  if (existsSync(join(dir, 'train.json'))) return dir;
  if (existsSync(dir) && readdirSync(dir).length > 0) fail(dir, `not a fashion-detect set (no train.json) and not empty; remake it with mnv2 data make fashion-detect --out ${dir} --force`);
  log(`making fashion-detect into ${dir} (once; mnv2 data make fashion-detect does the same)`);
  const pb = progressBar(bar, 'fashion-detect {split} |{bar}| {value}/{total} canvases');
  let split = '';
  try {
    await makeFashionDetect(dir, FASHION_DETECT_DEFAULTS, {
      onProgress: (s, d, t) => {
        if (s !== split) {
          if (split) pb?.stop();
          split = s;
          pb?.start(t, 0, { split: s });
        }
        pb?.update(d);
      },
    });
  } finally {
    if (split) pb?.stop();
  }
  return dir;
}

async function openSplit(dataset: string, split: string, limit: number, seed: number, bar: boolean): Promise<DetectionSplit> {
  const pb = progressBar(bar, `decoding ${split.padEnd(5)} images |{bar}| {value}/{total} images`);
  let started = false;
  try {
    const s = await openDetectionSplit(dataset, split, (d, t) => {
      if (!started) pb?.start(t, 0);
      started = true;
      pb?.update(d);
    }, (ds) => limitImages(ds, limit, seed));
    return s;
  } finally {
    if (started) pb?.stop();
  }
}

/** Trains an SSDLite detector with a detection recipe (`recipe.detection`). See TrainOptions. */
export async function trainDetector(opts: TrainOptions): Promise<DetectTrainResult> {
  const log = opts.log ?? ((m: string) => console.error(m));
  const bar = opts.progress ?? true;
  if (opts.freezeBackbone || opts.replaceClassifier !== undefined) {
    throw new Error('--freeze-backbone and --replace-classifier are for classifiers; a detector starts from scratch, from a classifier\'s backbone (--weights) or resumes (--resume)');
  }
  // --weights seeds the detector below (a classifier's backbone, or a detector at another resolution), not openRun's fine-tuning.
  const state = openRun({ ...opts, weights: undefined }, log);
  const { recipe, runDir } = state;
  const det = recipe.detection;
  if (!det) throw new Error(`recipe ${recipe.preset} is not a detection recipe`);

  const dataset = await ensureDetectionDataset(recipe, bar, log);
  const train = await openSplit(dataset, 'train', recipe.trainLimit, deriveSeed(recipe.seed, 0x7a11), bar);
  const val = await openSplit(dataset, 'val', recipe.evalLimit, deriveSeed(recipe.seed, 0xe7a1), bar);
  const classes = train.dataset.categories.map((c) => c.name);
  const same = (a: DetectionSplit, b: DetectionSplit): boolean => JSON.stringify(a.dataset.categories) === JSON.stringify(b.dataset.categories);
  if (!same(train, val)) fail(dataset, "the val split's categories differ from the train split's");
  if (!state.resumed) {
    state.graph = buildModel(archConfig(recipe.arch, { alpha: recipe.alpha, resolution: recipe.resolution, numClasses: classes.length, ssdStyle: det.style }));
    state.weights = initWeights(state.graph, recipe.seed);
    if (opts.weights !== undefined) {
      const init = detectorInit(state.graph, state.weights, opts.weights);
      state.weights = init.weights;
      log(init.whole ? `starting from the detector ${opts.weights} (${init.copied} tensors)` : `backbone from ${opts.weights} (${init.copied} tensors); extras and heads freshly initialised`);
    }
    state.baseInfo = { preprocess: familyOf(state.graph.config).defaultPreprocess(state.graph.config), classes };
  }
  const graph = state.graph;
  const style = (graph.config as Partial<SsdliteConfig>).ssdStyle;
  if (style !== det.style) throw new Error(`the model's SSD style is ${String(style)}, the recipe's loss ${det.style}`);
  if (graph.config.numClasses !== classes.length) throw new Error(`the model has ${graph.config.numClasses} classes but ${train.dataset.name} has ${classes.length}`);
  const R = graph.config.resolution;
  const task = detection({ style: det.style, numClasses: classes.length, anchors: ssdAnchors({ height: R, width: R }).corners });
  const metadata = (): Record<string, string> => ({ ...encodeModelInfo({ config: graph.config, ...state.baseInfo }), 'mnv2.preset': recipe.preset });
  const folder = new RunFolder(runDir, graph, metadata);

  const model = new NativeModel(graph, state.weights, { threads: opts.threads });
  const batches = detectionBatches(train, { batchSize: recipe.batch, resolution: R, seed: recipe.seed, augment: augmentOptions(det.augment) });
  const bn = bnPolicy(det, recipe.epochs, model, task, batches, () => pos.epoch);
  const trainable = {
    params: paramRefs(model, { noDecayOnBnAndBias: recipe.noDecayBnBias }), weights: model.weights, weightsChanged: () => model.weightsChanged(),
    step: <T>(x: Float32Array, n: number, t: Task<T>, y: T, o: StepOptions) => model.step(x, n, t, y, bn.frozen() ? { ...o, frozenBn: true } : o),
  };
  const source = bn.source;
  const resumed = state.resumed;
  const { optimizer, schedule, ema, rng, evalWeights } = optimizerState(state, model.weights, opts.resume);
  const evaluator = detectionEvaluator(model, task, val, { batch: opts.evalBatch ?? 50, threads: opts.threads, progress: bar });
  const evaluate = async (): Promise<DetectionEvaluation> => {
    await bn.beforeEvaluation();
    return detectionEvaluation(await evaluator(evalWeights()));
  };

  const pos = sessionPosition(resumed, recipe, false, opts.threads, log);
  folder.trimMetrics(pos.epoch);
  folder.writeRecipe({ ...recipe, model: graph.config, headOnly: false, weights: null });
  const signals = stopOnSignals(opts.handleSignals ?? false, log);

  log(`run folder ${runDir}`);
  log(`${recipe.preset}: ${familyOf(graph.config).describe(graph.config)}; ${det.style} loss, ${det.augment} augmentation; ` +
    `${train.dataset.images.length} training images (${train.dataset.name}), ${val.dataset.images.length} validation images; ${recipe.epochs} epoch(s) × ${source.batchesPerEpoch} steps of ${recipe.batch}; ` +
    `${recipe.optimizer} lr ${recipe.lr} (${recipe.schedule} per ${recipe.schedulePer})${bn.describe}`);
  let run: { stopped: boolean; final: DetectionEvaluation | null };
  try {
    run = await trainEpochs({
      task, source, trainable, optimizer, schedule, ema, rng, epochs: recipe.epochs, bnMomentum: recipe.bnMomentum, evaluate, pos, folder,
      progress: bar, log, saveEvery: opts.saveEvery, stopAfterSteps: opts.stopAfterSteps, stopRequested: signals.requested,
    });
  } finally {
    signals.dispose();
    await source.close();
  }
  const { files } = folder;
  const result: DetectTrainResult = {
    runDir, stopped: run.stopped, epochs: pos.epoch, globalStep: pos.globalStep, val: run.final?.result ?? null, test: null,
    bestAP: pos.bestTop1, bestEpoch: pos.bestEpoch, files, graph, weights: evalWeights(),
  };
  if (run.stopped) {
    log(`stopped at epoch ${pos.epoch + 1}, batch ${pos.step} (step ${pos.globalStep}); checkpoint ${files.last}`);
    log(`resume with: mnv2 train --resume ${runDir}`);
    return result;
  }

  // ---- the end: the val-chosen checkpoint, evaluated once on the test split ----------------------------------------
  const best = loadModelFile(join(runDir, 'best.safetensors')).weights;
  const testSplit = await openSplit(dataset, 'test', 0, 0, bar);
  if (!same(train, testSplit)) fail(dataset, "the test split's categories differ from the train split's");
  const evaluateTest = detectionEvaluator(model, task, testSplit, { batch: opts.evalBatch ?? 50, threads: opts.threads, progress: bar });
  const test = await evaluateTest(best, 'testing');
  result.test = test;
  result.weights = best;
  const t = detectionEvaluation(test, 'test');
  folder.saveModel('model', best, pos.bestEpoch, { ...t.metadata, 'mnv2.val_AP': String(pos.bestTop1) });
  const report = await writeDetectionReport(test, testSplit.dataset.name, pos.bestEpoch, folder, opts.plots ?? true);
  if (opts.onnx ?? true) folder.exportOnnx(best, state.baseInfo);
  if (opts.plots ?? true) await folder.plotCurves();
  log('');
  log(report);
  log(`done: ${pos.epoch} epoch(s), ${pos.globalStep} steps in ${formatDuration(pos.elapsed)}; best val AP ${pos.bestTop1.toFixed(4)} at epoch ${pos.bestEpoch}; ` +
    `its ${t.summary}`);
  log(`  model       ${files.model}  (the val-chosen weights of epoch ${pos.bestEpoch})`);
  if (files.onnx) log(`  onnx        ${files.onnx}`);
  log(`  checkpoint  ${files.last}  (resume / extend: mnv2 train --resume ${runDir} --epochs N)`);
  log(`  metrics     ${files.metrics}`);
  log(`  report      ${files.report}`);
  if (files.curvesPng) log(`  curves      ${files.curvesSvg}, ${files.curvesPng}`);
  if (files.pr) log(`  pr curves   ${files.pr}`);
  return result;
}

/**
 * How a detection run sets the BN statistics it evaluates with. `--precise-bn N`: recomputed before each
 * evaluation. `--freeze-bn E`: for the last E epochs, recomputed once as the first of them starts (its first
 * batches, before any is trained on), then fixed — those steps normalize with them — and evaluated as they are.
 */
function bnPolicy<T>(det: DetectionRecipe, epochs: number, model: NativeModel, task: Task<T>, batches: BatchSource<T>, epoch: () => number): {
  frozen: () => boolean; source: BatchSource<T>; beforeEvaluation: () => Promise<void>; describe: string;
} {
  const preciseBn = det.preciseBn ?? 0;
  const freeze = det.freezeBnEpochs ?? 0;
  const firstFrozen = frozenBnStart(epochs, freeze);
  const frozen = (): boolean => epoch() >= firstFrozen;
  const statsBatches = preciseBn > 0 ? preciseBn : FROZEN_BN_BATCHES;
  const source: BatchSource<T> = freeze === 0 ? batches : {
    ...batches,
    async *epoch(e, at) {
      // A run resumed inside the frozen epochs has its fixed statistics in the checkpoint already.
      if (e === firstFrozen && at.startBatch === 0) await recomputeBnStatistics(model, task, batches, e, statsBatches);
      yield* batches.epoch(e, at);
    },
  };
  const describe = (preciseBn > 0 ? `; BN statistics from ${preciseBn} batches before each evaluation` : '') +
    (freeze > 0 ? `; BN frozen for the last ${freeze} epoch(s), statistics from ${statsBatches} batches` : '');
  return {
    frozen, source, describe,
    beforeEvaluation: async () => {
      if (preciseBn > 0 && !frozen()) await recomputeBnStatistics(model, task, batches, epoch(), preciseBn);
    },
  };
}

/**
 * PreciseBN: the BN running statistics become the mean of the batch statistics of the first `batches` training
 * batches of a fixed order (epoch `epoch`'s, augmented as training sees them), computed with the current weights:
 * train-mode steps whose gradients are never applied (the next training step overwrites them).
 */
async function recomputeBnStatistics<T>(model: NativeModel, task: Task<T>, source: BatchSource<T>, epoch: number, batches: number): Promise<void> {
  let k = 0;
  for await (const b of source.epoch(epoch, { startBatch: 0 })) {
    model.step(b.input, b.size, task, b.target, { bnMomentum: 1 / (k + 1) }); // running = mean over the k + 1 batches
    if (++k >= batches) break;
  }
  model.weightsChanged(); // the statistics changed in place: inference re-folds them
}
