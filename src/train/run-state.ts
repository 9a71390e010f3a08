/**
 * The state a run starts from: fresh (a new model, or weights to fine-tune with an optionally replaced
 * classifier) or resumed from a checkpoint (weights, optimizer, EMA, RNG, position and recipe); then its data,
 * and the model fitted to the data's classes and input shape.
 */
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { LOGITS, type Graph, type LinearNode } from '../model/graph.js';
import { archConfig, buildModel, familyOf, reconfigure, resolveArch } from '../model/registry.js';
import { ablationOverrides } from '../model/config.js';
import type { BaseConfig } from '../model/family.js';
import { descriptiveInfo, type ModelInfoInput } from '../io/metadata.js';
import { initWeights, type StateDict } from '../model/weights.js';
import { loadModelFile } from '../io/weights.js';
import { deriveSeed } from '../data/loader.js';
import type { Dataset, InputConvention } from '../data/dataset.js';
import { holdOut, limitDataset, openDataset, type DataSource } from '../data/open.js';
import { loadCheckpoint, resolveCheckpointPath, type TrainPosition } from './checkpoint.js';
import { frozenBnStart, validateRecipe, type DetectionRecipe, type TrainRecipe } from './presets.js';
import { progressBar } from './progress.js';
import { refuseRunFolder } from './artifacts.js';
import type { TrainOptions } from './loop.js';
import { fail } from '../util/errors.js';
import { readQatRanges, type QatRanges } from '../quant/qat-ranges.js';

export interface RunState {
  recipe: TrainRecipe;
  graph: Graph;
  /** Empty for a fresh model until `fitToData` knows the class count. */
  weights: StateDict;
  runDir: string;
  /** Head-only fine-tuning (frozen backbone). */
  headOnly: boolean;
  /** What the model files of the run say about the model besides its config. */
  baseInfo: Omit<ModelInfoInput, 'config'>;
  /** Set when resuming. */
  resumed: {
    position: TrainPosition;
    optim: Map<string, Float32Array>;
    ema: Map<string, Float32Array> | null;
    rng: Uint32Array | null;
    /** The QAT observers' ranges when the checkpoint was taken during quantization-aware training. */
    qat: QatRanges | null;
  } | null;
}

/** The linear layer computing the logits (the last of a multi-layer head). */
export function classifierNode(graph: Graph): LinearNode {
  const logits = graph.outputs.find((o) => o.name === LOGITS)?.value;
  const n = graph.nodes.find((x): x is LinearNode => x.op === 'linear' && x.output === logits);
  if (!n) throw new Error('model has no linear classifier');
  return n;
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

/** The model config a recipe asks for. */
function recipeConfig(recipe: TrainRecipe, numClasses?: number): BaseConfig {
  const { alpha, resolution, dropout } = recipe;
  return archConfig(recipe.arch, { alpha, resolution, dropout, numClasses, ...ablationOverrides(resolveArch(recipe.arch).family.name, recipe.arch, { shortcut: recipe.shortcut, activation: recipe.activation, linearBottleneck: recipe.linearBottleneck }) });
}

/**
 * Fine-tuning keeps the architecture of the weights: an ablation flag (--shortcut, --activation,
 * --nonlinear-bottleneck) that asks for another one is refused rather than silently ignored.
 */
function refuseArchitectureChange(file: string, config: BaseConfig, recipe: TrainRecipe): void {
  const asked = { shortcut: recipe.shortcut, activation: recipe.activation, linearBottleneck: recipe.linearBottleneck };
  const flags = { shortcut: '--shortcut', activation: '--activation', linearBottleneck: '--nonlinear-bottleneck' } as const;
  const have = config as unknown as Record<string, unknown>;
  for (const [k, v] of Object.entries(asked) as [keyof typeof flags, unknown][]) {
    if (v === undefined || have[k] === v) continue;
    fail(file, `was trained with ${k} ${String(have[k] ?? '(none)')}, but ${flags[k]} asks for ${String(v)}: fine-tuning keeps the weights' architecture (train without --weights to change it)`);
  }
}

/** Resumes the checkpoint `opts.resume` or starts a fresh run; creates the run folder. */
export function openRun(opts: TrainOptions, log: (m: string) => void): RunState {
  const state = opts.resume ? resumeRun(opts, opts.resume, log) : freshRun(opts, log);
  mkdirSync(state.runDir, { recursive: true });
  return state;
}

function resumeRun(opts: TrainOptions, resume: string, log: (m: string) => void): RunState {
  const file = resolveCheckpointPath(resume);
  const ck = loadCheckpoint(file);
  if (!ck.position) fail(file, `not a training checkpoint (no mnv2.train metadata); to fine-tune from it use --weights`);
  const position = ck.position;
  const recipe = { ...position.recipe, epochs: opts.resumeEpochs ?? position.recipe.epochs };
  if (recipe.detection) {
    recipe.detection = resumedBn(file, position, recipe.epochs, opts, log);
    validateRecipe(recipe); // e.g. --precise-bn with a run that evaluates its EMA weights
  } else if (opts.resumePreciseBn !== undefined || opts.resumeFreezeBn !== undefined) {
    fail(file, "--precise-bn and --freeze-bn are for detection runs; this checkpoint is a classifier's");
  }
  const runDir = resolve(opts.out ?? dirname(file));
  if (runDir !== resolve(dirname(file))) refuseRunFolder(runDir, opts.force);
  log(`resuming ${file}: epoch ${position.epoch + 1}/${recipe.epochs}, batch ${position.step}, step ${position.globalStep}`);
  return {
    recipe, graph: ck.graph, weights: ck.weights, runDir, headOnly: position.headOnly ?? false, baseInfo: descriptiveInfo(ck.info),
    resumed: { position, optim: ck.optim, ema: ck.ema.size ? ck.ema : null, rng: ck.rng, qat: readQatRanges(ck.metadata, file) },
  };
}

/**
 * A resumed detection run's BN settings: `--precise-bn` / `--freeze-bn` as given. Frozen statistics are fixed when
 * their first epoch starts, so once it has, that epoch stays the start: an extended run (`--epochs`) stays frozen
 * to its end, and a `--freeze-bn` that would move the start is refused.
 */
function resumedBn(file: string, position: TrainPosition, epochs: number, opts: TrainOptions, log: (m: string) => void): DetectionRecipe {
  const det = position.recipe.detection!;
  const was = frozenBnStart(position.recipe.epochs, det.freezeBnEpochs);
  const reached = (start: number): boolean => position.epoch > start || (position.epoch === start && position.step > 0);
  const freeze = opts.resumeFreezeBn ?? (reached(was) ? epochs - was : det.freezeBnEpochs);
  const start = frozenBnStart(epochs, freeze);
  if (start !== was && (reached(was) || reached(start))) {
    fail(file, `--freeze-bn ${freeze ?? 0}: the run is at epoch ${position.epoch + 1}, batch ${position.step}, and its BN statistics ${reached(was) ? `were frozen at the start of epoch ${was + 1}` : 'are live'}; ` +
      `with ${epochs} epochs that start would move to ${Number.isFinite(start) ? `epoch ${start + 1}` : 'never'} (${reached(was) ? `--freeze-bn ${epochs - was} keeps it` : 'freeze fewer epochs'})`);
  }
  const next: DetectionRecipe = { ...det, preciseBn: opts.resumePreciseBn ?? det.preciseBn, freezeBnEpochs: freeze };
  if (next.preciseBn !== det.preciseBn || next.freezeBnEpochs !== det.freezeBnEpochs) {
    log(`BN from here on: --precise-bn ${next.preciseBn ?? 0}, --freeze-bn ${next.freezeBnEpochs ?? 0} (of ${epochs} epochs)`);
  }
  return next;
}

function freshRun(opts: TrainOptions, log: (m: string) => void): RunState {
  const recipe = opts.recipe;
  const runDir = resolve(opts.out ?? join('runs', `${recipe.preset}-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}`));
  refuseRunFolder(runDir, opts.force);
  const base = { recipe, runDir, headOnly: opts.freezeBackbone ?? false, resumed: null };
  // A fresh model is initialised by fitToData, once the class count is known.
  if (!opts.weights) return { ...base, baseInfo: {}, graph: buildModel(recipeConfig(recipe)), weights: new Map() };
  const l = fineTuneSource(opts.weights, opts.resolution ?? (recipe.arch === 'imagenet' ? recipe.resolution : undefined));
  refuseArchitectureChange(opts.weights, l.graph.config, recipe);
  log(`fine-tuning from ${opts.weights} (${familyOf(l.graph.config).describe(l.graph.config)})`);
  // An imported Keras model keeps its own input normalisation when fine-tuned on an image folder.
  return { ...base, graph: l.graph, weights: l.weights, baseInfo: l.info.preprocess !== undefined ? { preprocess: l.info.preprocess } : {} };
}

export interface RunData {
  train: Dataset;
  val: Dataset;
  /** With --val-split: the test split, scored once at the end (`val` is then held out from the training split). */
  test: Dataset | null;
  /** How the datasets' images become model inputs. */
  input: InputConvention;
  /** The training split as opened (its preprocessing and label set go into the model files). */
  source: DataSource;
}

/** Opens (and decodes) the recipe's training and validation splits for the run's model. */
export async function openData(state: RunState, bar: boolean): Promise<RunData> {
  const { recipe } = state;
  const openSplit = async (split: 'train' | 'test'): Promise<DataSource> => {
    const pb = progressBar(bar, `decoding ${split} images |{bar}| {value}/{total} images`);
    let started = false;
    try {
      return await openDataset(recipe.dataset, split, {
        dir: recipe.dataDir, resolution: state.graph.config.resolution,
        preprocess: recipe.augment === 'canvas' ? 'fashion-mnist-canvas' : state.baseInfo.preprocess,
        onProgress: (d, t) => {
          if (!started) pb?.start(t, 0);
          started = true;
          pb?.update(d);
        },
      });
    } finally {
      if (started) pb?.stop();
    }
  };
  const source = await openSplit('train');
  const testSrc = await openSplit('test');
  const split = recipe.valSplit ? holdOut(source.dataset, recipe.valSplit) : { train: source.dataset, val: testSrc.dataset };
  return {
    train: limitDataset(split.train, recipe.trainLimit, deriveSeed(recipe.seed, 0x7a11)),
    val: limitDataset(split.val, recipe.evalLimit, deriveSeed(recipe.seed, 0xe7a1)),
    test: recipe.valSplit ? testSrc.dataset : null,
    input: source.input,
    source,
  };
}

/**
 * A fresh run's model for the data's classes (initialised, or its classifier replaced when asked); then checks
 * that the model takes the data's classes and input shape.
 */
export function fitToData(state: RunState, data: RunData, opts: Pick<TrainOptions, 'weights' | 'replaceClassifier'>): void {
  const { recipe } = state;
  const classes = data.source.dataset.classes;
  const replace = opts.replaceClassifier;
  if (!state.resumed) {
    if (opts.weights) {
      if (replace !== undefined) ({ graph: state.graph, weights: state.weights } = replaceClassifier(state.graph, state.weights, replace, recipe.seed));
    } else {
      state.graph = buildModel(recipeConfig(recipe, replace ?? classes.length));
      state.weights = initWeights(state.graph, recipe.seed);
    }
  }
  const k = state.graph.config.numClasses;
  if (k !== classes.length) {
    throw new Error(`the model has ${k} classes but ${data.train.name} has ${classes.length} (${classes.slice(0, 5).join(', ')}${classes.length > 5 ? ', ...' : ''}); use --replace-classifier ${classes.length}`);
  }
  const [ic, ih, iw] = state.graph.inputShape as [number, number, number];
  const { input: conv, train } = data;
  if (conv.channels !== ic || train.height + 2 * conv.pad !== ih || train.width + 2 * conv.pad !== iw) {
    throw new Error(`${train.name} gives ${conv.channels}×${train.height + 2 * conv.pad}×${train.width + 2 * conv.pad} inputs, the model takes ${ic}×${ih}×${iw}`);
  }
  if (!state.resumed) {
    state.baseInfo = { preprocess: data.source.preprocess, classes, ...(data.source.labelSet && { labels: data.source.labelSet }) };
  }
}
