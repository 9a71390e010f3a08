/**
 * The training loop: model (fresh, or fine-tuned from a weights file with an optionally replaced classifier and
 * an optionally frozen backbone), data, optimizer, schedule, EMA; per step trainStep → optimizer.step →
 * weightsChanged; per epoch evaluation, a metrics.jsonl line and atomic checkpoints (last and best); at the end
 * the final model (safetensors + ONNX), an evaluation report, a confusion-matrix PNG and training curves.
 *
 * Exact resume: the loader's order and augmentation depend only on (seed, epoch, batch); the checkpoint holds the
 * weights (BN running statistics included), the optimizer state, the dropout RNG state and the position (epoch,
 * batch, partial epoch sums), so a run stopped at a checkpoint and resumed ends with bitwise the same weights as an
 * uninterrupted one (EMA shadows are float64 in memory and float32 in the checkpoint: with EMA the averaged copy
 * resumes to float32 precision; the trained weights stay exact).
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-write.js';
import { dirname, join, resolve } from 'node:path';
import os from 'node:os';
import cliProgress from 'cli-progress';
import { NativeModel } from '../engine/native/model.js';
import { softmaxCrossEntropy } from '../task/classification.js';
import { assertConverging } from './divergence.js';
import { exportOnnx } from '../engine/onnx/export.js';
import { LOGITS, type Graph, type LinearNode } from '../model/graph.js';
import { archConfig, buildModel, familyOf, reconfigure } from '../model/registry.js';
import { descriptiveInfo, encodeModelInfo, type ModelInfoInput } from '../io/metadata.js';
import { initWeights, type StateDict } from '../model/weights.js';
import { loadModelFile, saveWeights } from '../io/weights.js';
import { BatchLoader, deriveSeed, epochOrder } from '../data/loader.js';
import type { Dataset, InputConvention } from '../data/dataset.js';
import { Rng } from '../util/rng.js';
import { makeOptimizer, paramRefs } from './optim.js';
import { makeSchedule, type ScheduleSpec } from './schedule.js';
import { EMA } from './ema.js';
import type { Optimizer, ParamRef, Schedule } from './types.js';
import { loadCheckpoint, resolveCheckpointPath, saveCheckpoint, type TrainPosition } from './checkpoint.js';
import { EvalAccumulator, evaluate, formatEvalReport, writeConfusionPng, type EvalResult } from './metrics.js';
import type { TrainRecipe } from './presets.js';
import { limitDataset, openDataset, type DataSource } from '../data/open.js';
import { METRICS_FILE, plotRun, type EpochMetrics } from './plot.js';

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
  bestTop1: number;
  bestEpoch: number;
  files: Record<string, string>;
  /** The trained weights (EMA weights when EMA is on). */
  weights: StateDict;
  graph: Graph;
}

/** A progress bar on stderr; in a non-terminal a status line every 30 s. */
export function progressBar(enabled: boolean, format: string): cliProgress.SingleBar | null {
  if (!enabled) return null;
  const tty = Boolean(process.stderr.isTTY);
  return new cliProgress.SingleBar({
    format, stream: process.stderr, hideCursor: tty, clearOnComplete: false, etaBuffer: 50, fps: 5,
    noTTYOutput: !tty, notTTYSchedule: 30000, etaAsynchronousUpdate: true,
  }, cliProgress.Presets.shades_classic);
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  s = Math.round(s);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
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

/** The linear layer computing the logits (the last of a multi-layer head). */
function classifierNode(graph: Graph): LinearNode {
  const logits = graph.outputs.find((o) => o.name === LOGITS)?.value;
  const n = graph.nodes.find((x): x is LinearNode => x.op === 'linear' && x.output === logits);
  if (!n) throw new Error('model has no linear classifier');
  return n;
}

/** Weights for `newGraph`: everything from `weights` except the classifier, which is freshly initialised. */
export function replaceClassifier(graph: Graph, weights: StateDict, numClasses: number, seed: number): { graph: Graph; weights: StateDict } {
  if (!Number.isInteger(numClasses) || numClasses < 1) throw new Error(`--replace-classifier needs a positive class count, got ${numClasses}`);
  const g2 = buildModel(reconfigure(graph.config, { numClasses }));
  const fresh = initWeights(g2, seed);
  const cls = classifierNode(g2).name;
  const out: StateDict = new Map();
  for (const [k, v] of fresh) out.set(k, k.startsWith(`${cls}.`) ? v : (weights.get(k) ?? v));
  return { graph: g2, weights: out };
}

/** Yield to the event loop (queued batches resolve as microtasks, which would starve timers and signals). */
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

function appendLine(file: string, line: string): void {
  appendFileSync(file, `${line}\n`);
  const fd = openSync(file, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Keep only the metrics lines of completed epochs ≤ `epochs` (after a resume). */
function trimMetrics(file: string, epochs: number): void {
  if (!existsSync(file)) return;
  const keep = readFileSync(file, 'utf8').split('\n').filter((l) => {
    if (!l.trim()) return false;
    try {
      return (JSON.parse(l) as EpochMetrics).epoch <= epochs;
    } catch {
      return false;
    }
  });
  writeFileAtomic(file, keep.map((l) => `${l}\n`).join(''));
}

/** Pooled features of every image of `ds` (eval mode), [count, F], computed by a copy of the model whose classifier is the identity. */
async function extractFeatures(
  graph: Graph, weights: StateDict, ds: Dataset, conv: InputConvention, batch: number, threads: number | undefined, bar: boolean, what: string, worker: boolean,
): Promise<Float32Array> {
  const lin = classifierNode(graph);
  const F = lin.inF;
  const fg = buildModel(reconfigure(graph.config, { numClasses: F, dropout: 0 }));
  const fw: StateDict = new Map();
  for (const t of [...fg.params, ...fg.buffers]) {
    if (t.name === `${lin.name}.weight`) {
      const id = new Float32Array(F * F);
      for (let i = 0; i < F; i++) id[i * F + i] = 1;
      fw.set(t.name, id);
    } else if (t.name === `${lin.name}.bias`) fw.set(t.name, new Float32Array(F));
    else fw.set(t.name, weights.get(t.name)!);
  }
  const fm = new NativeModel(fg, fw, { threads });
  const out = new Float32Array(ds.count * F);
  const pb = progressBar(bar, `${what} |{bar}| {value}/{total} images | {speed} img/s | ETA {eta_formatted}`);
  pb?.start(ds.count, 0, { speed: '-' });
  const t0 = performance.now();
  const loader = new BatchLoader({ dataset: ds, batchSize: batch, shuffle: false, augment: 'none', input: conv, worker });
  let done = 0;
  try {
    for await (const b of loader.epoch(0)) {
      out.set(fm.predict(b.input, b.size), done * F);
      done += b.size;
      pb?.update(done, { speed: (done / ((performance.now() - t0) / 1000)).toFixed(1) });
    }
  } finally {
    pb?.stop();
    await loader.close();
  }
  return out;
}

/** Logits of the linear head on features: out[n, k] = f·Wᵀ + b (float64 accumulation). */
function headForward(feat: Float32Array, rows: ArrayLike<number>, F: number, W: Float32Array, b: Float32Array, k: number, out: Float32Array, mask?: Float32Array): void {
  for (let i = 0; i < rows.length; i++) {
    const fo = rows[i]! * F;
    for (let c = 0; c < k; c++) {
      let s = b[c]!;
      const wo = c * F;
      if (mask) for (let j = 0; j < F; j++) s += feat[fo + j]! * mask[i * F + j]! * W[wo + j]!;
      else for (let j = 0; j < F; j++) s += feat[fo + j]! * W[wo + j]!;
      out[i * k + c] = s;
    }
  }
}

/** The files a run writes into its folder (and that another run there would overwrite). */
const RUN_FILES = ['last.safetensors', 'best.safetensors', 'model.safetensors', 'model.onnx', METRICS_FILE];

function refuseRunFolder(runDir: string, force = false): void {
  const found = RUN_FILES.filter((f) => existsSync(join(runDir, f)));
  if (found.length && !force) {
    throw new Error(`${runDir} already holds a run (${found.join(', ')}); resume it with --resume ${runDir}, replace it with --force, or choose another --out`);
  }
}

/** The model to fine-tune from `weights`, at `resolution` when given; a resolution the model cannot take is refused, naming both. */
function fineTuneSource(weights: string, resolution: number | undefined): ReturnType<typeof loadModelFile> {
  try {
    return loadModelFile(weights, { resolution });
  } catch (e) {
    if (resolution === undefined || !/invalid model config: .*resolution/.test((e as Error).message)) throw e;
    throw new Error(`--resolution ${resolution} does not fit ${weights}: ${(e as Error).message}`);
  }
}

/** Trains a MobileNetV2. See TrainOptions. */
export async function train(opts: TrainOptions): Promise<TrainResult> {
  const log = opts.log ?? ((m: string) => console.error(m));
  const bar = opts.progress ?? true;
  const worker = opts.worker ?? true;

  // ---- model and state ----------------------------------------------------------------------------------------
  let recipe: TrainRecipe;
  let graph: Graph;
  let weights: StateDict;
  let position: TrainPosition | null = null;
  let optimState: Map<string, Float32Array> | null = null;
  let emaState: Map<string, Float32Array> | null = null;
  let rngState: Uint32Array | null = null;
  let runDir: string;
  let headOnly = opts.freezeBackbone ?? false;
  /** What the model files of the run say about the model besides its config. */
  let baseInfo: Omit<ModelInfoInput, 'config'> = {};

  if (opts.resume) {
    const file = resolveCheckpointPath(opts.resume);
    const ck = loadCheckpoint(file);
    if (!ck.position) throw new Error(`${file}: not a training checkpoint (no mnv2.train metadata); to fine-tune from it use --weights`);
    position = ck.position;
    recipe = { ...ck.position.recipe, epochs: opts.resumeEpochs ?? ck.position.recipe.epochs };
    graph = ck.graph;
    weights = ck.weights;
    optimState = ck.optim;
    emaState = ck.ema.size ? ck.ema : null;
    rngState = ck.rng;
    headOnly = ck.position.headOnly ?? false;
    runDir = resolve(opts.out ?? dirname(file));
    if (runDir !== resolve(dirname(file))) refuseRunFolder(runDir, opts.force);
    baseInfo = descriptiveInfo(ck.info);
    log(`resuming ${file}: epoch ${position.epoch + 1}/${recipe.epochs}, batch ${position.step}, step ${position.globalStep}`);
  } else {
    recipe = opts.recipe;
    runDir = resolve(opts.out ?? join('runs', `${recipe.preset}-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}`));
    refuseRunFolder(runDir, opts.force);
    if (opts.weights) {
      const l = fineTuneSource(opts.weights, opts.resolution ?? (recipe.arch === 'imagenet' ? recipe.resolution : undefined));
      graph = l.graph;
      weights = l.weights;
      // An imported Keras model keeps its own input normalisation when fine-tuned on an image folder.
      if (l.info.preprocess !== undefined) baseInfo.preprocess = l.info.preprocess;
      log(`fine-tuning from ${opts.weights} (${familyOf(graph.config).describe(graph.config)})`);
    } else {
      graph = buildModel(archConfig(recipe.arch, { alpha: recipe.alpha, resolution: recipe.resolution, dropout: recipe.dropout }));
      weights = new Map(); // initialised below, once the class count is known
    }
  }
  mkdirSync(runDir, { recursive: true });

  // ---- data -----------------------------------------------------------------------------------------------------
  const decodeBar = (what: string) => {
    const pb = progressBar(bar, `${what} |{bar}| {value}/{total} images`);
    let started = false;
    return {
      cb: (d: number, t: number) => {
        if (!started) {
          pb?.start(t, 0);
          started = true;
        }
        pb?.update(d);
      },
      stop: () => {
        if (started) pb?.stop();
      },
    };
  };
  const openSplit = async (split: 'train' | 'test'): Promise<DataSource> => {
    const p = decodeBar(`decoding ${split} images`);
    try {
      return await openDataset(recipe.dataset, split, {
        dir: recipe.dataDir, resolution: graph.config.resolution, onProgress: p.cb, preprocess: baseInfo.preprocess,
      });
    } finally {
      p.stop();
    }
  };
  const trainSrc = await openSplit('train');
  const valSrc = await openSplit('test');
  const trainDs = limitDataset(trainSrc.dataset, recipe.trainLimit, deriveSeed(recipe.seed, 0x7a11));
  const valDs = limitDataset(valSrc.dataset, recipe.evalLimit, deriveSeed(recipe.seed, 0xe7a1));
  const conv = trainSrc.input;
  const classes = trainSrc.dataset.classes;

  if (!opts.resume) {
    if (opts.weights) {
      if (opts.replaceClassifier !== undefined) ({ graph, weights } = replaceClassifier(graph, weights, opts.replaceClassifier, recipe.seed));
    } else {
      graph = buildModel(archConfig(recipe.arch, { alpha: recipe.alpha, resolution: recipe.resolution, dropout: recipe.dropout, numClasses: opts.replaceClassifier ?? classes.length }));
      weights = initWeights(graph, recipe.seed);
    }
  }
  const k = graph.config.numClasses;
  if (k !== classes.length) {
    throw new Error(`the model has ${k} classes but ${trainDs.name} has ${classes.length} (${classes.slice(0, 5).join(', ')}${classes.length > 5 ? ', ...' : ''}); use --replace-classifier ${classes.length}`);
  }
  const [ic, ih, iw] = graph.inputShape as [number, number, number];
  if (conv.channels !== ic || trainDs.height + 2 * conv.pad !== ih || trainDs.width + 2 * conv.pad !== iw) {
    throw new Error(`${trainDs.name} gives ${conv.channels}×${trainDs.height + 2 * conv.pad}×${trainDs.width + 2 * conv.pad} inputs, the model takes ${ic}×${ih}×${iw}`);
  }
  if (!opts.resume) {
    baseInfo = { preprocess: trainSrc.preprocess, classes, ...(trainSrc.labelSet && { labels: trainSrc.labelSet }) };
  }
  const metadata = (): Record<string, string> => ({ ...encodeModelInfo({ config: graph.config, ...baseInfo }), 'mnv2.preset': recipe.preset });

  // ---- engine, optimizer, schedule, EMA, RNG ------------------------------------------------------------------
  const model = headOnly ? null : new NativeModel(graph, weights, { threads: opts.threads });
  // The live weights: the engine's (full training) or the plain map (head-only; its classifier arrays are trained).
  const live: StateDict = model ? model.weights : weights;
  const optimizer = optimizerFor(recipe);
  if (optimState && optimState.size) optimizer.loadStateDict(optimState, `${opts.resume} (optimizer state)`);
  const schedule: Schedule = makeSchedule(scheduleSpec(recipe), 'training schedule');
  const ema = recipe.ema > 0 ? new EMA(graph, live, { decay: recipe.ema }) : null;
  if (ema && emaState) ema.loadStateDict(emaState, `${opts.resume} (EMA state)`);
  const rng = rngState ? new Rng(rngState) : new Rng(deriveSeed(recipe.seed, 0xd0));

  const lin = classifierNode(graph);
  const F = lin.inF;
  let params: ParamRef[];
  let trainFeat: Float32Array | null = null;
  let valFeat: Float32Array | null = null;
  if (model) {
    params = paramRefs(model, { noDecayOnBnAndBias: recipe.noDecayBnBias });
  } else {
    const W = live.get(`${lin.name}.weight`)!;
    const B = live.get(`${lin.name}.bias`)!;
    params = [
      { name: `${lin.name}.weight`, value: W, grad: new Float32Array(W.length), decay: true },
      { name: `${lin.name}.bias`, value: B, grad: new Float32Array(B.length), decay: !recipe.noDecayBnBias },
    ];
    log(`frozen backbone: computing ${F}-d features once per image (eval mode)`);
    trainFeat = await extractFeatures(graph, live, trainDs, conv, opts.evalBatch ?? 256, opts.threads, bar, 'train features', worker);
    valFeat = await extractFeatures(graph, live, valDs, conv, opts.evalBatch ?? 256, opts.threads, bar, 'val features  ', worker);
  }

  const batch = recipe.batch;
  // A last batch of 1 image breaks batch statistics at 1×1 feature maps: drop it then.
  const dropLast = trainDs.count % batch === 1;
  const loader = model
    ? new BatchLoader({ dataset: trainDs, batchSize: batch, shuffle: true, augment: recipe.augment, seed: recipe.seed, dropLast, input: conv, worker })
    : null;
  const stepsPerEpoch = model ? loader!.batchesPerEpoch : Math.ceil(trainDs.count / batch);

  const pos: TrainPosition = position ?? {
    epoch: 0, step: 0, globalStep: 0, epochLoss: 0, epochCorrect: 0, epochSeen: 0, elapsed: 0, bestTop1: -1, bestEpoch: 0, recipe, headOnly,
  };
  pos.recipe = recipe;
  const threads = opts.threads ?? os.availableParallelism();
  if (pos.threads !== undefined && pos.threads !== threads) {
    log(`warning: this run was trained with ${pos.threads} threads and resumes with ${threads}: the results will differ from an uninterrupted run's (pass --threads ${pos.threads} to match)`);
  }
  pos.threads = threads;
  const metricsFile = join(runDir, METRICS_FILE);
  trimMetrics(metricsFile, pos.epoch);
  const files: Record<string, string> = { runDir, metrics: metricsFile, last: join(runDir, 'last.safetensors'), best: join(runDir, 'best.safetensors') };
  writeFileAtomic(join(runDir, 'recipe.json'), `${JSON.stringify({ ...recipe, model: graph.config, headOnly, weights: opts.weights ?? null }, null, 2)}\n`);

  const evalWeights = (): StateDict => (ema ? ema.weights() : live);
  const saveLast = (): void => {
    saveCheckpoint(files.last!, graph, live, {
      optim: optimizer.stateDict(), ema: ema?.stateDict(), rng: rng.state(), position: pos, metadata: metadata(),
    });
  };

  // Evaluation with the EMA weights when EMA is on (swapped in, then the training weights restored bit for bit).
  let evalModel: NativeModel | null = null;
  const runEval = async (): Promise<EvalResult> => {
    if (!model) {
      const acc = new EvalAccumulator(classes);
      const w = evalWeights();
      const W = w.get(`${lin.name}.weight`)!;
      const B = w.get(`${lin.name}.bias`)!;
      const chunk = 256;
      const logits = new Float32Array(chunk * k);
      for (let s = 0; s < valDs.count; s += chunk) {
        const n = Math.min(chunk, valDs.count - s);
        const rows = Int32Array.from({ length: n }, (_, i) => s + i);
        headForward(valFeat!, rows, F, W, B, k, logits);
        acc.add(logits, valDs.labels.subarray(s, s + n), n);
      }
      return acc.result();
    }
    let m = model;
    if (ema) {
      evalModel ??= new NativeModel(graph, ema.weights(), { threads: opts.threads });
      evalModel.loadStateDict(ema.weights(), 'EMA weights');
      m = evalModel;
    }
    const pb = progressBar(bar, `  evaluating |{bar}| {value}/{total} images | {speed} img/s`);
    pb?.start(valDs.count, 0, { speed: '-' });
    const t0 = performance.now();
    try {
      return await evaluate(m, valDs, conv, opts.evalBatch ?? 256, {
        worker, onProgress: (d) => pb?.update(d, { speed: (d / ((performance.now() - t0) / 1000)).toFixed(1) }),
      });
    } finally {
      pb?.stop();
    }
  };

  // ---- signals --------------------------------------------------------------------------------------------------
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
  if (opts.handleSignals) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }

  log(`run folder ${runDir}`);
  log(`${recipe.preset}: ${familyOf(graph.config).describe(graph.config)}; ` +
    `${trainDs.count} training images (${trainDs.name}), ${valDs.count} validation images; ${recipe.epochs} epoch(s) × ${stepsPerEpoch} steps of ${batch}; ` +
    `${recipe.optimizer} lr ${recipe.lr} (${recipe.schedule} per ${recipe.schedulePer})${headOnly ? '; head only (frozen backbone)' : ''}`);

  let final: EvalResult | null = null;
  let sessionSteps = 0;
  let stopped = false;
  const sessionStart = performance.now();
  const elapsedAtStart = pos.elapsed;
  const logits = new Float32Array(batch * k);
  const dlogits = new Float32Array(batch * k);
  // Head-only steps apply the model's dropout before the classifier themselves, on the cached features.
  const dropoutP = graph.nodes.find((n) => n.op === 'dropout')?.p ?? 0;
  const featMask = dropoutP > 0 ? new Float32Array(batch * F) : undefined;
  try {
    while (pos.epoch < recipe.epochs && !stopped) {
      const epoch = pos.epoch;
      const epochStart = performance.now();
      let epochImages = 0;
      const pb = progressBar(bar, `epoch ${epoch + 1}/${recipe.epochs} |{bar}| {value}/{total} | loss {loss} | acc {acc} | {speed} img/s | lr {lr} | ETA {eta_formatted}`);
      pb?.start(stepsPerEpoch, pos.step, { loss: '-', acc: '-', speed: '-', lr: '-' });
      const stepDone = (size: number, loss: number, correct: number, lr: number): void => {
        pos.epochLoss += loss * size;
        pos.epochCorrect += correct;
        pos.epochSeen += size;
        pos.globalStep++;
        pos.step++;
        epochImages += size;
        sessionSteps++;
        const secs = (performance.now() - epochStart) / 1000;
        pb?.update(pos.step, {
          loss: (pos.epochLoss / pos.epochSeen).toFixed(4),
          acc: `${((100 * pos.epochCorrect) / pos.epochSeen).toFixed(1)}%`,
          speed: (epochImages / secs).toFixed(1),
          lr: lr.toPrecision(3),
        });
        if (stopRequested || (opts.stopAfterSteps !== undefined && sessionSteps >= opts.stopAfterSteps)) stopped = true;
        if (stopped || (opts.saveEvery && pos.globalStep % opts.saveEvery === 0)) {
          pos.elapsed = elapsedAtStart + (performance.now() - sessionStart) / 1000;
          saveLast();
        }
      };
      try {
        if (model) {
          for await (const b of loader!.epoch(epoch, { startBatch: pos.step })) {
            const lr = schedule(epoch, b.index, stepsPerEpoch);
            const r = model.trainStep(b.input, b.labels, b.size, { bnMomentum: recipe.bnMomentum, labelSmoothing: recipe.labelSmoothing, rng });
            optimizer.step(params, lr);
            assertConverging(r.loss, params, epoch, b.index);
            model.weightsChanged();
            ema?.update(live);
            stepDone(b.size, r.loss, r.correct, lr);
            if (stopped) break;
            await tick(); // let timers (progress output) and signal handlers run
          }
        } else {
          const order = epochOrder({ count: trainDs.count, shuffle: true, seed: recipe.seed }, epoch);
          for (let s = pos.step; s < stepsPerEpoch; s++) {
            const rows = order.subarray(s * batch, Math.min((s + 1) * batch, trainDs.count));
            const n = rows.length;
            const lr = schedule(epoch, s, stepsPerEpoch);
            const [W, B] = [params[0]!, params[1]!];
            if (featMask) {
              const p = dropoutP;
              for (let i = 0; i < n * F; i++) featMask[i] = rng.uniform() < p ? 0 : 1 / (1 - p);
            }
            headForward(trainFeat!, rows, F, W.value, B.value, k, logits, featMask);
            const labels = Int32Array.from(rows, (r) => trainDs.labels[r]!);
            const { loss, correct } = softmaxCrossEntropy(logits, labels, n, k, dlogits, recipe.labelSmoothing);
            W.grad.fill(0);
            B.grad.fill(0);
            for (let i = 0; i < n; i++) {
              const fo = rows[i]! * F;
              for (let c = 0; c < k; c++) {
                const d = dlogits[i * k + c]!;
                B.grad[c]! += d;
                const wo = c * F;
                if (featMask) for (let j = 0; j < F; j++) W.grad[wo + j]! += d * trainFeat![fo + j]! * featMask[i * F + j]!;
                else for (let j = 0; j < F; j++) W.grad[wo + j]! += d * trainFeat![fo + j]!;
              }
            }
            optimizer.step(params, lr);
            assertConverging(loss, params, epoch, s);
            ema?.update(live);
            stepDone(n, loss, correct, lr);
            if (stopped) break;
            await tick();
          }
        }
      } finally {
        pb?.stop();
      }
      if (stopped && pos.step < stepsPerEpoch) break;
      // ---- end of epoch: evaluate, log, checkpoint ----
      const trainTime = (performance.now() - epochStart) / 1000;
      const ev = await runEval();
      final = ev;
      pos.elapsed = elapsedAtStart + (performance.now() - sessionStart) / 1000;
      const row: EpochMetrics = {
        epoch: epoch + 1,
        lr: schedule(epoch, Math.max(0, stepsPerEpoch - 1), stepsPerEpoch),
        train_loss: pos.epochLoss / Math.max(1, pos.epochSeen),
        train_acc: pos.epochCorrect / Math.max(1, pos.epochSeen),
        val_loss: ev.loss, val_top1: ev.top1, val_top5: ev.top5,
        img_per_s: epochImages / Math.max(1e-9, trainTime),
        time: (performance.now() - epochStart) / 1000,
        elapsed: pos.elapsed,
        steps: stepsPerEpoch,
        images: pos.epochSeen,
      };
      appendLine(metricsFile, JSON.stringify(row));
      log(`epoch ${epoch + 1}/${recipe.epochs}: train loss ${row.train_loss.toFixed(4)} acc ${(100 * row.train_acc).toFixed(2)}% | ` +
        `val loss ${ev.loss.toFixed(4)} top-1 ${(100 * ev.top1).toFixed(2)}% top-5 ${(100 * ev.top5).toFixed(2)}% | ` +
        `${row.img_per_s.toFixed(1)} img/s, ${formatDuration(row.time)}`);
      pos.epoch++;
      pos.step = 0;
      pos.epochLoss = 0;
      pos.epochCorrect = 0;
      pos.epochSeen = 0;
      if (ev.top1 > pos.bestTop1) {
        pos.bestTop1 = ev.top1;
        pos.bestEpoch = epoch + 1;
        saveWeights(files.best!, graph, evalWeights(), new Map(), {
          ...metadata(), 'mnv2.epoch': String(epoch + 1), 'mnv2.val_top1': String(ev.top1), 'mnv2.val_top5': String(ev.top5),
        });
      }
      saveLast();
      if (stopped) break;
    }
  } finally {
    if (opts.handleSignals) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    await loader?.close();
  }

  const result: TrainResult = {
    runDir, stopped, epochs: pos.epoch, globalStep: pos.globalStep, final, bestTop1: pos.bestTop1, bestEpoch: pos.bestEpoch,
    files, weights: evalWeights(), graph,
  };
  if (stopped) {
    log(`stopped at epoch ${pos.epoch + 1}, batch ${pos.step} (step ${pos.globalStep}); checkpoint ${files.last}`);
    log(`resume with: mnv2 train --resume ${runDir}`);
    return result;
  }

  // ---- the end: final model, report, exports ------------------------------------------------------------------
  final ??= await runEval();
  const fw = evalWeights();
  files.model = join(runDir, 'model.safetensors');
  saveWeights(files.model, graph, fw, new Map(), {
    ...metadata(), 'mnv2.epoch': String(pos.epoch), 'mnv2.val_top1': String(final.top1), 'mnv2.val_top5': String(final.top5),
  });
  files.report = join(runDir, 'eval.txt');
  writeFileAtomic(files.report, `${valDs.name}: ${formatEvalReport(final)}\n`);
  files.eval = join(runDir, 'eval.json');
  writeFileAtomic(files.eval, `${JSON.stringify({ dataset: valDs.name, top1: final.top1, top5: final.top5, correct: final.correct, total: final.total, loss: final.loss, perClass: final.perClass })}\n`);
  if (opts.onnx ?? true) {
    files.onnx = join(runDir, 'model.onnx');
    writeFileAtomic(files.onnx, exportOnnx(graph, fw, { info: baseInfo }));
  }
  if (opts.plots ?? true) {
    files.confusion = join(runDir, 'confusion.png');
    await writeConfusionPng(final, files.confusion);
    const p = await plotRun(runDir);
    files.curvesSvg = p.svg;
    files.curvesPng = p.png;
  }
  log('');
  log(formatEvalReport(final));
  log('');
  log(`done: ${pos.epoch} epoch(s), ${pos.globalStep} steps in ${formatDuration(pos.elapsed)}; ` +
    `final val top-1 ${(100 * final.top1).toFixed(2)}% (best ${(100 * pos.bestTop1).toFixed(2)}% at epoch ${pos.bestEpoch})`);
  log(`  model       ${files.model}`);
  if (files.onnx) log(`  onnx        ${files.onnx}`);
  log(`  best        ${files.best}`);
  log(`  checkpoint  ${files.last}  (resume / extend: mnv2 train --resume ${runDir} --epochs N)`);
  log(`  metrics     ${files.metrics}`);
  log(`  report      ${files.report}`);
  if (files.curvesPng) log(`  curves      ${files.curvesSvg}, ${files.curvesPng}`);
  if (files.confusion) log(`  confusion   ${files.confusion}`);
  return result;
}

