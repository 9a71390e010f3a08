/**
 * A classification training run: its state (fresh, fine-tuned from a weights file with an optionally replaced
 * classifier, or resumed: run-state.ts), its data, the parameter set to train (the whole model, or the classifier
 * alone on a frozen backbone's features: head.ts), optimizer, schedule and EMA, driven by the classification task
 * through the one epoch loop (epochs.ts), evaluated per epoch (evaluation.ts) and written out (artifacts.ts): at the
 * end the final model (safetensors + ONNX), an evaluation report, a confusion-matrix PNG and training curves.
 *
 * Exact resume: the batches' order and augmentation depend only on (seed, epoch, batch); the checkpoint holds the
 * weights (BN running statistics included), the optimizer state, the dropout RNG state and the position (epoch,
 * batch, partial epoch sums), so a run stopped at a checkpoint and resumed ends with bitwise the same weights as an
 * uninterrupted one (EMA shadows are float64 in memory and float32 in the checkpoint: with EMA the averaged copy
 * resumes to float32 precision; the trained weights stay exact).
 */
import os from 'node:os';
import { NativeModel } from '../engine/native/model.js';
import { classification } from '../task/classification.js';
import type { Graph } from '../model/graph.js';
import { familyOf } from '../model/registry.js';
import { encodeModelInfo } from '../io/metadata.js';
import { loadModelFile } from '../io/weights.js';
import type { StateDict } from '../model/weights.js';
import { BatchLoader, deriveSeed } from '../data/loader.js';
import { Rng } from '../util/rng.js';
import { makeOptimizer, paramRefs } from './optim.js';
import { makeSchedule, type ScheduleSpec } from './schedule.js';
import { EMA } from './ema.js';
import type { Optimizer, Schedule } from './types.js';
import type { TrainPosition } from './checkpoint.js';
import { formatEvalReport, type EvalResult } from './metrics.js';
import type { TrainRecipe } from './presets.js';
import { RunFolder } from './artifacts.js';
import { fitToData, openData, openRun, type RunData, type RunState } from './run-state.js';
import { trainEpochs, type BatchSource, type Trainable } from './epochs.js';
import { extractFeatures, featureBatches, LinearHead } from './head.js';
import { classificationEvaluation, modelEvaluator, scoreTestOnce, writeClassificationReport, type ClassificationEvaluation } from './evaluation.js';
import { formatDuration } from './progress.js';
import { QatModel, type QatPhase } from '../quant/qat.js';
import { QAT_KEY, type QatRanges } from '../quant/qat-ranges.js';

export interface TrainOptions {
  /** The resolved recipe (ignored when resuming: the checkpoint's recipe is used). */
  recipe: TrainRecipe;
  /** Run folder (created). Default when resuming: the checkpoint's folder. */
  out?: string;
  /** Replace a run already in `out` (otherwise refused: its model files would be overwritten). */
  force?: boolean;
  /** Resume from a run folder (its last.safetensors) or a checkpoint file. */
  resume?: string;
  /** When resuming: train to this many epochs in all (extends the run; the schedule is recomputed for it). */
  resumeEpochs?: number;
  /** When resuming a detection run: its `--precise-bn` from the next evaluation on (the training trajectory is unchanged). */
  resumePreciseBn?: number;
  /** When resuming a detection run: its `--freeze-bn` (a frozen start already reached cannot move; by default an extended run keeps it). */
  resumeFreezeBn?: number;
  /** Start from these weights (fine-tuning). */
  weights?: string;
  /** Input size of the model fine-tuned from `weights` (`--resolution`), instead of the one the weights file gives. */
  resolution?: number;
  /** Replace the classifier with a freshly initialised one for this many classes. */
  replaceClassifier?: number;
  /** Train only the classifier on features the frozen backbone computes once per image (eval mode). */
  freezeBackbone?: boolean;
  threads?: number;
  evalBatch?: number;
  /** Also save last.safetensors every N optimizer steps (0: at epoch ends only). */
  saveEvery?: number;
  /** Stop (saving a checkpoint) after this many optimizer steps in this session (tests, time-boxed runs). */
  stopAfterSteps?: number;
  /** Progress bars (default: when stderr is a terminal; otherwise a status line every 30 s). */
  progress?: boolean;
  /** Human-readable messages (default: stderr). */
  log?: (msg: string) => void;
  /** Write model.onnx at the end (default true). */
  onnx?: boolean;
  /** Write curves.svg/png and confusion.png at the end (default true). */
  plots?: boolean;
  /** Stop cleanly (checkpoint, then return) on SIGINT/SIGTERM (default false; the CLI turns it on). */
  handleSignals?: boolean;
  /** Prepare batches in a worker thread (default true). */
  worker?: boolean;
}

export interface TrainResult {
  runDir: string;
  /** True when the run stopped early (signal or stopAfterSteps) with a checkpoint to resume from. */
  stopped: boolean;
  /** Epochs completed. */
  epochs: number;
  globalStep: number;
  final: EvalResult | null;
  /** With --val-split: the test split's evaluation of the val-chosen weights. */
  test?: EvalResult;
  bestTop1: number;
  bestEpoch: number;
  files: Record<string, string>;
  /** The trained weights (EMA weights when EMA is on; with --val-split the val-chosen ones). */
  weights: StateDict;
  graph: Graph;
}

/** The schedule spec of a recipe. */
export function scheduleSpec(r: TrainRecipe): ScheduleSpec {
  const warm = r.warmupEpochs > 0 ? { warmupEpochs: r.warmupEpochs } : {};
  switch (r.schedule) {
    case 'cosine':
      return { kind: 'cosine', base: r.lr, epochs: r.epochs, perStep: r.schedulePer === 'step', ...warm };
    case 'exponential':
      return { kind: 'exponential', base: r.lr, gamma: r.gamma, every: 1, ...warm };
    case 'step': {
      const milestones: number[] = [];
      for (let e = r.stepEpochs; e < r.epochs; e += r.stepEpochs) milestones.push(e);
      return { kind: 'step', base: r.lr, milestones, gamma: r.gamma, ...warm };
    }
    case 'constant':
      return { kind: 'constant', base: r.lr, ...warm };
  }
}

export function optimizerFor(r: TrainRecipe): Optimizer {
  return r.optimizer === 'sgd'
    ? makeOptimizer('sgd', { momentum: r.momentum, nesterov: r.nesterov, weightDecay: r.weightDecay })
    : makeOptimizer('rmsprop', { alpha: r.rmsDecay, eps: r.rmsEps, momentum: r.momentum, weightDecay: r.weightDecay, tfCompatible: r.rmsTf });
}

/** The image loader's batches, the labels as the classification target. */
function labelledBatches(loader: BatchLoader): BatchSource<Int32Array> {
  return {
    batchesPerEpoch: loader.batchesPerEpoch,
    async *epoch(epoch, opts) {
      for await (const b of loader.epoch(epoch, opts)) yield { index: b.index, size: b.size, input: b.input, target: b.labels };
    },
    close: () => loader.close(),
  };
}

interface ParameterSet {
  trainable: Trainable;
  source: BatchSource<Int32Array>;
  evaluate: (weights: StateDict) => Promise<EvalResult>;
  /** Quantization-aware training: the model and the fake-quantization phase of the epoch `pos` stands at (null: float). */
  qat?: { model: QatModel; phase: () => QatPhase | null };
}

/**
 * Every parameter of the model trained on image batches (batch statistics, augmentation); with the recipe's
 * `qat`, its last epochs quantization-aware (evaluated as the int8 model).
 */
function fullModel(graph: Graph, weights: StateDict, data: RunData, recipe: TrainRecipe, opts: TrainOptions, worker: boolean, pos: TrainPosition, qatRanges: QatRanges | null): ParameterSet {
  const model = new NativeModel(graph, weights, { threads: opts.threads });
  const params = paramRefs(model, { noDecayOnBnAndBias: recipe.noDecayBnBias });
  // A last batch of 1 image breaks batch statistics at 1×1 feature maps: drop it then.
  const dropLast = data.train.count % recipe.batch === 1;
  const loader = new BatchLoader({ dataset: data.train, batchSize: recipe.batch, shuffle: true, augment: recipe.augment, seed: recipe.seed, dropLast, input: data.input, worker });
  const floatEval = modelEvaluator(model, data.val, data.input, { batch: opts.evalBatch ?? 256, threads: opts.threads, progress: opts.progress ?? true, worker });
  const q = recipe.qat;
  const qat = q ? new QatModel(model, { weightBits: q.weightBits, ranges: qatRanges ?? undefined }) : null;
  const phase = (): QatPhase | null => (q && pos.epoch >= recipe.epochs - q.epochs ? { frozenBn: pos.epoch >= recipe.epochs - q.freezeBnEpochs } : null);
  return {
    trainable: {
      params, weights: model.weights, weightsChanged: () => model.weightsChanged(),
      step: (x, n, task, t, o) => {
        const p = phase();
        return p ? qat!.step(x, n, task, t, o, p) : model.step(x, n, task, t, o);
      },
    },
    source: labelledBatches(loader),
    evaluate: async (w) => (qat && phase() ? qat.evaluateInt8(data.val, data.input, opts.threads) : floatEval(w)),
    ...(qat && { qat: { model: qat, phase } }),
  };
}

/** The classifier alone, on the features the frozen backbone computes once per image. */
async function headOnly(graph: Graph, weights: StateDict, data: RunData, recipe: TrainRecipe, opts: TrainOptions, worker: boolean, log: (m: string) => void): Promise<ParameterSet> {
  const head = new LinearHead(graph, weights, recipe.noDecayBnBias);
  const F = head.F;
  log(`frozen backbone: computing ${F}-d features once per image (eval mode)`);
  const fo = { batch: opts.evalBatch ?? 256, threads: opts.threads, progress: opts.progress ?? true, worker };
  const trainFeat = await extractFeatures(graph, weights, data.train, data.input, 'train features', fo);
  const valFeat = await extractFeatures(graph, weights, data.val, data.input, 'val features  ', fo);
  return {
    trainable: head,
    source: featureBatches(trainFeat, F, data.train, recipe.batch, recipe.seed),
    evaluate: async (w) => head.evaluate(valFeat, data.val, w),
  };
}

/**
 * The optimizer, schedule, EMA and dropout RNG of a run's recipe, with a resumed run's states loaded;
 * `evalWeights` are the weights to evaluate and save (the EMA's when EMA is on).
 */
export function optimizerState(state: RunState, weights: StateDict, resume?: string): { optimizer: Optimizer; schedule: Schedule; ema: EMA | null; rng: Rng; evalWeights: () => StateDict } {
  const { recipe, resumed } = state;
  const optimizer = optimizerFor(recipe);
  if (resumed?.optim.size) optimizer.loadStateDict(resumed.optim, `${resume} (optimizer state)`);
  const schedule = makeSchedule(scheduleSpec(recipe), 'training schedule');
  const ema = recipe.ema > 0 ? new EMA(state.graph, weights, { decay: recipe.ema }) : null;
  if (ema && resumed?.ema) ema.loadStateDict(resumed.ema, `${resume} (EMA state)`);
  const rng = resumed?.rng ? new Rng(resumed.rng) : new Rng(deriveSeed(recipe.seed, 0xd0));
  return { optimizer, schedule, ema, rng, evalWeights: () => (ema ? ema.weights() : weights) };
}

/**
 * The position a session starts from (the checkpoint's, or a fresh run's), recording the recipe and the engine
 * threads; warns when they differ from the session that wrote the checkpoint.
 */
export function sessionPosition(resumed: RunState['resumed'], recipe: TrainRecipe, headOnly: boolean, threadsOpt: number | undefined, log: (m: string) => void): TrainPosition {
  const pos: TrainPosition = resumed?.position ?? {
    epoch: 0, step: 0, globalStep: 0, epochLoss: 0, epochCorrect: 0, epochSeen: 0, elapsed: 0, bestTop1: -1, bestEpoch: 0, recipe, headOnly,
  };
  pos.recipe = recipe;
  const threads = threadsOpt ?? os.availableParallelism();
  if (pos.threads !== undefined && pos.threads !== threads) {
    log(`warning: this run was trained with ${pos.threads} threads and resumes with ${threads}: the results will differ from an uninterrupted run's (pass --threads ${pos.threads} to match)`);
  }
  pos.threads = threads;
  return pos;
}

/** SIGINT/SIGTERM while `enabled`: the first asks the loop to stop with a checkpoint, the second exits at once. */
export function stopOnSignals(enabled: boolean, log: (m: string) => void): { requested: () => boolean; dispose: () => void } {
  let stopRequested = false;
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      log(`\n${sig} again: exiting without a checkpoint`);
      process.exit(130);
    }
    stopRequested = true;
    log(`\n${sig}: stopping after this step and saving a checkpoint (again to exit at once)`);
  };
  if (enabled) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  return {
    requested: () => stopRequested,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** Trains a classifier. See TrainOptions. */
export async function train(opts: TrainOptions): Promise<TrainResult> {
  const log = opts.log ?? ((m: string) => console.error(m));
  const bar = opts.progress ?? true;
  const worker = opts.worker ?? true;

  const state = openRun(opts, log);
  const data = await openData(state, bar);
  fitToData(state, data, opts);
  const { recipe, graph, runDir, headOnly: frozen, baseInfo } = state;
  if (recipe.qat && frozen) throw new Error('quantization-aware training trains the whole model: it does not combine with --freeze-backbone');
  const resumed = state.resumed;
  const pos = sessionPosition(resumed, recipe, frozen, opts.threads, log);
  const set = frozen
    ? await headOnly(graph, state.weights, data, recipe, opts, worker, log)
    : fullModel(graph, state.weights, data, recipe, opts, worker, pos, resumed?.qat ?? null);
  const { trainable, source, qat } = set;
  // Model files and checkpoints of a QAT run carry its observers' ranges once they have some.
  const metadata = (): Record<string, string> => ({
    ...encodeModelInfo({ config: graph.config, ...baseInfo }), 'mnv2.preset': recipe.preset,
    ...(qat?.model.observed && { [QAT_KEY]: JSON.stringify(qat.model.ranges()) }),
  });
  const folder = new RunFolder(runDir, graph, metadata);
  const { optimizer, schedule, ema, rng, evalWeights } = optimizerState(state, trainable.weights, opts.resume);
  const evaluate = async (): Promise<ClassificationEvaluation> => {
    const e = classificationEvaluation(await set.evaluate(evalWeights()));
    return qat?.phase() ? { ...e, summary: `int8 ${e.summary}`, metadata: { ...e.metadata, 'mnv2.val_int8': 'true' } } : e;
  };

  folder.trimMetrics(pos.epoch);
  folder.writeRecipe({ ...recipe, model: graph.config, headOnly: frozen, weights: opts.weights ?? null });

  const signals = stopOnSignals(opts.handleSignals ?? false, log);

  log(`run folder ${runDir}`);
  log(`${recipe.preset}: ${familyOf(graph.config).describe(graph.config)}; ` +
    `${data.train.count} training images (${data.train.name}), ${data.val.count} validation images; ${recipe.epochs} epoch(s) × ${source.batchesPerEpoch} steps of ${recipe.batch}; ` +
    `${recipe.optimizer} lr ${recipe.lr} (${recipe.schedule} per ${recipe.schedulePer})${frozen ? '; head only (frozen backbone)' : ''}` +
    (recipe.qat ? `; quantization-aware for the last ${recipe.qat.epochs} epoch(s), BN frozen for the last ${recipe.qat.freezeBnEpochs}, ${recipe.qat.weightBits}-bit weights` : ''));

  let run: { stopped: boolean; final: ClassificationEvaluation | null };
  try {
    run = await trainEpochs({
      task: classification(graph.config.numClasses, { labelSmoothing: recipe.labelSmoothing }),
      source, trainable, optimizer, schedule, ema, rng, epochs: recipe.epochs, bnMomentum: recipe.bnMomentum, evaluate, pos, folder,
      progress: bar, log, saveEvery: opts.saveEvery, stopAfterSteps: opts.stopAfterSteps, stopRequested: signals.requested,
    });
  } finally {
    signals.dispose();
    await source.close();
  }

  const { files } = folder;
  const result: TrainResult = {
    runDir, stopped: run.stopped, epochs: pos.epoch, globalStep: pos.globalStep, final: run.final?.result ?? null, bestTop1: pos.bestTop1, bestEpoch: pos.bestEpoch,
    files, weights: evalWeights(), graph,
  };
  if (run.stopped) {
    log(`stopped at epoch ${pos.epoch + 1}, batch ${pos.step} (step ${pos.globalStep}); checkpoint ${files.last}`);
    log(`resume with: mnv2 train --resume ${runDir}`);
    return result;
  }

  // ---- the end: final model, report, exports ------------------------------------------------------------------
  const final = run.final ?? await evaluate();
  result.final = final.result;
  let fw = evalWeights();
  let test: EvalResult | undefined;
  if (data.test) {
    // --val-split: the val-chosen weights are the model, and the test split is scored once, with them.
    fw = loadModelFile(files.best).weights;
    const scored = await scoreTestOnce(graph, fw, pos.bestTop1, data.test, data.input, { batch: opts.evalBatch ?? 256, threads: opts.threads, progress: bar, worker });
    test = result.test = scored.result;
    folder.saveModel('model', fw, pos.bestEpoch, scored.metadata);
    await writeClassificationReport(test, data.test.name, folder, opts.plots ?? true, 'test-eval');
  } else {
    folder.saveModel('model', fw, pos.epoch, final.metadata);
    await writeClassificationReport(final.result, data.val.name, folder, opts.plots ?? true);
  }
  result.weights = fw;
  if (opts.onnx ?? true) folder.exportOnnx(fw, baseInfo);
  if (qat) folder.writeInt8Onnx(qat.model.exportQdq({ info: baseInfo }));
  if (opts.plots ?? true) await folder.plotCurves();
  log('');
  log(formatEvalReport(final.result));
  log('');
  log(`done: ${pos.epoch} epoch(s), ${pos.globalStep} steps in ${formatDuration(pos.elapsed)}; ` +
    `final val top-1 ${(100 * final.result.top1).toFixed(2)}% (best ${(100 * pos.bestTop1).toFixed(2)}% at epoch ${pos.bestEpoch})` +
    (test ? `; test top-1 ${(100 * test.top1).toFixed(2)}% with epoch ${pos.bestEpoch}'s weights (${data.test!.name}, scored once)` : ''));
  log(`  model       ${files.model}`);
  if (files.onnx) log(`  onnx        ${files.onnx}`);
  if (files.int8) log(`  int8 onnx   ${files.int8}  (QDQ with the trained ranges; val top-1 above is the int8 model's)`);
  log(`  best        ${files.best}`);
  log(`  checkpoint  ${files.last}  (resume / extend: mnv2 train --resume ${runDir} --epochs N)`);
  log(`  metrics     ${files.metrics}`);
  log(`  report      ${files.report}`);
  if (files.curvesPng) log(`  curves      ${files.curvesSvg}, ${files.curvesPng}`);
  if (files.confusion) log(`  confusion   ${files.confusion}`);
  return result;
}
