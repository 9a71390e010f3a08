/**
 * `mnv2 train | eval | plot | data fetch`: thin wrappers over src/train and src/data. What only an action uses is
 * imported inside it, so registering the commands loads no engine, image or network library.
 */
import { Command, Option } from 'commander';
import { archNames } from '../model/registry.js';
import { createClassifier, onnxFileClassifier, type Classifier, type EngineName } from '../engine/classifier.js';
import type { LoadedWeights } from '../io/weights.js';
import type { ModelInfo } from '../io/metadata.js';
import { PRESET_NAMES as IMAGE_PRESETS } from '../data/preprocess.js';
import { LABEL_SET_NAMES, labelsFor, type LabelSetName } from '../data/labels.js';
import { archOptions, engineOption, loadModel, type ArchOpts } from './model-commands.js';
import type { DatasetName } from '../data/fetch.js';
import { BATCH, COUNT_OR_ALL, deprecatedAlias, int, num, SEED, THREADS, type Range } from './args.js';
import { ALPHA, RESOLUTION } from './model-commands.js';
import { ablationFlags, ablationOptions, type AblationOpts } from './arch-options.js';
import { refuseInputAsOutput } from '../util/outputs.js';
import { AUGMENT_KINDS, type AugmentKind } from '../data/augment.js';
import { DETECT_AUGMENTS, PRESET_NAMES, defaultFreezeBnEpochs, FROZEN_BN_BATCHES, resolvePreset, type DetectAugment, type PresetName, type QatRecipe, type TrainRecipe } from '../train/presets.js';
import { loadCheckpoint } from '../train/checkpoint.js';
import { SSD_STYLES, type SsdStyle } from '../detect/postprocess.js';
import type { TrainOptions } from '../train/loop.js';
import { detectEvalOptions, evalDetect, type EvalDetectOpts } from './eval-detect.js';


interface TrainFlags extends AblationOpts {
  recipe: PresetName;
  full?: boolean;
  dataset?: string;
  data?: string;
  arch?: string;
  alpha?: string;
  resolution?: string;
  dropout?: string;
  epochs?: string;
  batch?: string;
  optimizer?: 'sgd' | 'rmsprop';
  lr?: string;
  momentum?: string;
  nesterov?: boolean;
  wd?: string;
  /** --decay-bn-bias / --no-decay-bn-bias (undefined: the recipe's). */
  decayBnBias?: boolean;
  rmsDecay?: string;
  rmsEps?: string;
  rmsTorch?: boolean;
  schedule?: TrainRecipe['schedule'];
  schedulePer?: 'epoch' | 'step';
  gamma?: string;
  stepEpochs?: string;
  warmup?: string;
  labelSmoothing?: string;
  ema?: string;
  bnMomentum?: string;
  augment?: AugmentKind;
  ssdStyle?: SsdStyle;
  detectAugment?: DetectAugment;
  preciseBn?: string;
  freezeBn?: string;
  trainLimit?: string;
  evalLimit?: string;
  valSplit?: string;
  seed?: string;
  out?: string;
  resume?: string;
  force?: boolean;
  weights?: string;
  replaceClassifier?: string;
  freezeBackbone?: boolean;
  threads?: string;
  evalBatch?: string;
  saveEvery?: string;
  stopAfter?: string;
  onnx: boolean;
  progress: boolean;
  qat?: boolean;
  qatEpochs?: string;
  qatFreezeBn?: string;
  weightBits?: '7' | '8';
}

const EPOCHS: Range = { min: 1, max: 100_000 };
const PRECISE_BN: Range = { min: 0, max: 100_000 };
const FREEZE_BN: Range = { min: 0, max: EPOCHS.max };

/** What `--resume` may change: the run's length, its evaluation's BN statistics, and how this session runs. */
const RESUME_FLAGS = new Set(['resume', 'epochs', 'preciseBn', 'freezeBn', 'out', 'force', 'threads', 'evalBatch', 'saveEvery', 'stopAfter', 'onnx', 'progress']);

/** A resumed run continues its checkpoint's recipe: a flag that would change it is an error, not silently ignored. */
function refuseRecipeFlagsOnResume(cmd: Command): void {
  // --x and --no-x share one value: name the spelling that set it.
  const given = cmd.options.filter((opt) => {
    const key = opt.attributeName();
    return cmd.getOptionValueSource(key) === 'cli' && !RESUME_FLAGS.has(key) && opt.negate === (cmd.getOptionValue(key) === false);
  });
  if (given.length === 0) return;
  const names = given.map((opt) => opt.long ?? opt.flags).join(', ');
  throw new Error(`${names}: --resume continues the checkpoint's recipe; only --epochs, --precise-bn and --freeze-bn change it (to train with other settings, start a new run from its weights with --weights)`);
}

/** The recipe of `mnv2 train` flags: the preset's values, each overridable. */
export function recipeFromFlags(o: TrainFlags): TrainRecipe {
  const base = resolvePreset(o.recipe, {}, o.full ?? false);
  let dataset = o.dataset;
  let dataDir = o.data;
  // Presets for image folders take the folder from --data.
  if (dataset === undefined && base.dataset === '' && o.data !== undefined) {
    dataset = o.data;
    dataDir = undefined;
  }
  if (!base.detection && (o.ssdStyle !== undefined || o.detectAugment !== undefined || o.preciseBn !== undefined || o.freezeBn !== undefined)) {
    throw new Error(`--ssd-style, --detect-augment, --precise-bn and --freeze-bn are for detection recipes (fashion-detect, fashion-detect-torchvision), not ${o.recipe}`);
  }
  const detection = base.detection && {
    style: o.ssdStyle ?? base.detection.style, augment: o.detectAugment ?? base.detection.augment,
    preciseBn: int(o.preciseBn, '--precise-bn', PRECISE_BN) ?? base.detection.preciseBn,
    freezeBnEpochs: int(o.freezeBn, '--freeze-bn', FREEZE_BN) ?? base.detection.freezeBnEpochs,
  };
  const unit: Range = { min: 0, max: 1 };
  const positive: Range = { above: 0, max: 1e6 };
  const nonNegative: Range = { min: 0, max: 1e6 };
  return resolvePreset(o.recipe, {
    dataset, dataDir,
    arch: o.arch, alpha: num(o.alpha, '--alpha', ALPHA), resolution: int(o.resolution, '--resolution', RESOLUTION), dropout: num(o.dropout, '--dropout', { min: 0, max: 0.99 }), ...ablationFlags(o),
    epochs: int(o.epochs, '--epochs', EPOCHS), batch: int(o.batch, '--batch', BATCH),
    optimizer: o.optimizer, lr: num(o.lr, '--lr', positive), momentum: num(o.momentum, '--momentum', unit), nesterov: o.nesterov,
    weightDecay: num(o.wd, '--wd', nonNegative), noDecayBnBias: o.decayBnBias === undefined ? undefined : !o.decayBnBias,
    rmsDecay: num(o.rmsDecay, '--rms-decay', { above: 0, max: 0.999999 }), rmsEps: num(o.rmsEps, '--rms-eps', nonNegative), rmsTf: o.rmsTorch ? false : undefined,
    schedule: o.schedule, schedulePer: o.schedulePer, gamma: num(o.gamma, '--gamma', positive), stepEpochs: int(o.stepEpochs, '--step-epochs', EPOCHS),
    warmupEpochs: num(o.warmup, '--warmup', { min: 0, max: 100_000 }), labelSmoothing: num(o.labelSmoothing, '--label-smoothing', { min: 0, max: 0.99 }),
    ema: num(o.ema, '--ema', { min: 0, max: 0.999999999 }), bnMomentum: num(o.bnMomentum, '--bn-momentum', { above: 0, max: 1 }), augment: o.augment,
    trainLimit: int(o.trainLimit, '--train-limit', COUNT_OR_ALL), evalLimit: int(o.evalLimit, '--eval-limit', COUNT_OR_ALL),
    valSplit: int(o.valSplit, '--val-split', COUNT_OR_ALL), seed: int(o.seed, '--seed', SEED),
    detection, qat: qatRecipe(o, int(o.epochs, '--epochs', EPOCHS) ?? base.epochs),
  }, o.full ?? false);
}

/** The QAT part of the recipe: `--qat` (every epoch) or `--qat-epochs N` (the last N); BN frozen for the last half by default. */
function qatRecipe(o: TrainFlags, epochs: number): QatRecipe | undefined {
  const qatEpochs = int(o.qatEpochs, '--qat-epochs', { min: 1, max: epochs }) ?? (o.qat ? epochs : undefined);
  if (qatEpochs === undefined) {
    if (o.qatFreezeBn !== undefined || o.weightBits !== undefined) throw new Error('--qat-freeze-bn and --weight-bits are for quantization-aware training: add --qat or --qat-epochs N');
    return undefined;
  }
  const freezeBnEpochs = int(o.qatFreezeBn, '--qat-freeze-bn', { min: 0, max: qatEpochs }) ?? defaultFreezeBnEpochs(qatEpochs);
  return { epochs: qatEpochs, freezeBnEpochs, weightBits: o.weightBits === '8' ? 8 : 7 };
}

/** The numeric flags of `mnv2 train` that are not part of the recipe, range-checked. */
function sessionFlags(o: TrainFlags): Pick<TrainOptions, 'resumeEpochs' | 'resumePreciseBn' | 'resumeFreezeBn' | 'replaceClassifier' | 'threads' | 'evalBatch' | 'saveEvery' | 'stopAfterSteps'> {
  const steps: Range = { min: 1, max: Number.MAX_SAFE_INTEGER };
  return {
    resumeEpochs: int(o.epochs, '--epochs', EPOCHS),
    resumePreciseBn: o.resume ? int(o.preciseBn, '--precise-bn', PRECISE_BN) : undefined,
    resumeFreezeBn: o.resume ? int(o.freezeBn, '--freeze-bn', FREEZE_BN) : undefined,
    replaceClassifier: int(o.replaceClassifier, '--replace-classifier', { min: 1, max: 1_000_000 }),
    threads: int(o.threads, '--threads', THREADS),
    evalBatch: int(o.evalBatch, '--eval-batch', BATCH),
    saveEvery: int(o.saveEvery, '--save-every', steps),
    stopAfterSteps: int(o.stopAfter, '--stop-after', steps),
  };
}

const DEFAULT_FETCH_DIR: Record<DatasetName, string> = { 'fashion-mnist': 'data/fashion-mnist', cifar10: 'data/cifar10' };

export function registerTrainCommands(program: Command): void {
  // ---- train ----
  deprecatedAlias(ablationOptions(program
    .command('train')
    .description('train (or fine-tune) a model with a recipe; every recipe value can be overridden')), 'preset', 'recipe', PRESET_NAMES)
    .addOption(new Option('--recipe <name>', 'training recipe').choices([...PRESET_NAMES]).default('fashion-mnist'))
    .option('--full', 'fashion-mnist: the full-length recipe (all 60k images, 40 epochs) instead of the ~10-minute default')
    .option('--dataset <name|dir>', 'fashion-mnist, cifar10, or an image folder (class subfolders, or train/ + val/)')
    .option('--data <dir>', 'where the dataset is (paper-imagenet: the image folder)')
    .addOption(new Option('--arch <arch>', 'architecture: a model family or one of its variants').choices(archNames()))
    .option('--alpha <a>', 'width multiplier')
    .option('--resolution <px>', 'input resolution (imagenet arch)')
    .option('--dropout <p>', 'dropout before the classifier')
    .option('--epochs <n>', 'epochs (with --resume: extend the run to this many epochs)')
    .option('--batch <n>', 'batch size')
    .addOption(new Option('--optimizer <name>', 'optimizer').choices(['sgd', 'rmsprop']))
    .option('--lr <x>', 'base learning rate')
    .option('--momentum <x>', 'momentum')
    .option('--nesterov', 'Nesterov momentum (SGD)')
    .option('--wd <x>', 'weight decay (L2)')
    .option('--decay-bn-bias', 'weight decay on BN parameters and biases too')
    .option('--no-decay-bn-bias', 'no weight decay on BN parameters and biases (default: the recipe\'s)')
    .option('--rms-decay <x>', 'RMSProp squared-gradient decay (alpha)')
    .option('--rms-eps <x>', 'RMSProp epsilon')
    .option('--rms-torch', "RMSProp in PyTorch's formulation instead of TensorFlow's")
    .addOption(new Option('--schedule <kind>', 'learning-rate schedule').choices(['cosine', 'exponential', 'step', 'constant']))
    .addOption(new Option('--schedule-per <unit>', 'change the lr per epoch or per step').choices(['epoch', 'step']))
    .option('--gamma <x>', 'exponential: factor per epoch; step: factor per --step-epochs')
    .option('--step-epochs <n>', 'step schedule: epochs between decays')
    .option('--warmup <epochs>', 'linear warm-up epochs')
    .option('--label-smoothing <x>', 'label smoothing')
    .option('--ema <decay>', 'EMA of weights (0: off)')
    .option('--bn-momentum <x>', 'BN running-stat momentum (PyTorch convention)')
    .addOption(new Option('--augment <kind>', 'augmentation: seed = crop(pad 4) + flip, rrc = random-resized-crop + flip (image folders), canvas = fashion-mnist garments at fashion-detect\'s sizes and positions on a --resolution frame (a detector backbone)').choices([...AUGMENT_KINDS]))
    .addOption(new Option('--ssd-style <style>', 'detection: loss, matching and decoding of the TF OD API (sigmoid, hard example miner) or torchvision (softmax, 3:1 negatives)').choices([...SSD_STYLES]))
    .option('--precise-bn <batches>', 'detection: before each evaluation, BN statistics from this many training batches with the current weights (default 0: the running averages of training; with --resume: from its next evaluation on)')
    .option('--freeze-bn <epochs>', `detection: the last n epochs train with BN statistics fixed at a PreciseBN estimate made as they start (--precise-bn batches, else ${FROZEN_BN_BATCHES}), so they train the function evaluation computes`)
    .addOption(new Option('--detect-augment <policy>', 'detection: ssd = photometric + zoom-out + IoU crop + flip, crop-flip = IoU crop + flip').choices([...DETECT_AUGMENTS]))
    .option('--train-limit <n>', 'train on a fixed random subset of n images (0: all)')
    .option('--eval-limit <n>', 'evaluate on a fixed random subset of n images (0: all)')
    .option('--val-split <n>', 'classification: choose epochs on the last n training images, held out from training, and score the test split once at the end with the val-chosen weights (test-eval.txt) (0: validate on the test split)')
    .option('--seed <n>', 'seed (init, data order, augmentation, dropout)')
    .option('--out <dir>', 'run folder (default runs/<preset>-<time>); one holding a run needs --resume or --force')
    .option('--force', 'with --out: train anew over the run already in that folder (its files are replaced)')
    .option('--resume <dir|file>', 'continue a run exactly from its last checkpoint')
    .option('--weights <file>', 'start from these weights (fine-tuning)')
    .option('--replace-classifier <n>', 'new classifier for n classes (fine-tuning)')
    .option('--freeze-backbone', 'train the classifier only, on features computed once per image')
    .option('--threads <n>', 'engine threads (default: all cores)')
    .option('--eval-batch <n>', 'evaluation batch size', '250')
    .option('--save-every <steps>', 'also checkpoint every n steps (default: at epoch ends)')
    .option('--stop-after <steps>', 'stop (with a checkpoint to resume) after n steps')
    .option('--qat', 'quantization-aware training (fake-quantized weights and activations) for the whole run; also writes model.int8.onnx')
    .option('--qat-epochs <n>', 'quantization-aware training for the last n epochs only (float before)')
    .option('--qat-freeze-bn <n>', 'QAT: BN statistics frozen (BN folded) for the last n epochs (default: half the QAT epochs, rounded up)')
    .addOption(new Option('--weight-bits <bits>', 'QAT: int8 model weight bits, as mnv2 quantize (default 7)').choices(['7', '8']))
    .option('--no-onnx', 'skip the ONNX export at the end')
    .option('--no-progress', 'no progress bars')
    .action(async (o: TrainFlags, cmd: Command) => {
      if (o.resume) refuseRecipeFlagsOnResume(cmd);
      const session = sessionFlags(o);
      const recipe = o.resume ? resolvePreset(o.recipe) : recipeFromFlags(o);
      if (o.freezeBackbone && !o.weights && !o.resume) throw new Error('--freeze-backbone needs --weights (a trained backbone)');
      const detector = o.resume ? loadCheckpoint(o.resume).position?.recipe.detection !== undefined : recipe.detection !== undefined;
      const run = detector ? (await import('../detect/train.js')).trainDetector : (await import('../train/loop.js')).train;
      const r = await run({
        ...session, recipe, out: o.out, force: o.force, resume: o.resume, weights: o.weights, freezeBackbone: o.freezeBackbone,
        resolution: o.weights ? int(o.resolution, '--resolution', RESOLUTION) : undefined,
        onnx: o.onnx, progress: o.progress, handleSignals: true,
      });
      if (r.stopped) process.exitCode = 0;
    });

  // ---- eval ----
  detectEvalOptions(deprecatedAlias(engineOption(archOptions(program.command('eval'))), 'preset', 'preprocess', IMAGE_PRESETS))
    .description('evaluate weights on a dataset: top-1, top-5, per-class accuracy, confusion matrix; --task detect: COCO AP of a detector')
    .option('--weights <file>', 'weights: .safetensors, .pth or a catalogue name (mnv2 weights list); default: the bundled Fashion-MNIST model')
    .option('--dataset <name|dir>', 'fashion-mnist, cifar10, or an image folder; --task detect: a COCO JSON, or a folder with <split>.json')
    .option('--data <dir>', 'where the dataset is (default: its usual place); --task detect: the dataset folder when --dataset is not given')
    .addOption(new Option('--split <split>', 'split').choices(['test', 'train']).default('test'))
    .addOption(new Option('--preprocess <name>', "image folders: the model's normalisation (default: the file's)").choices([...IMAGE_PRESETS]))
    .addOption(new Option('--labels <name>', 'class names of the report (default: the dataset\'s)').choices([...LABEL_SET_NAMES]))
    .option('--batch <n>', 'batch size', '250')
    .option('--limit <n>', 'evaluate a fixed random subset of n images (0: all)')
    .option('--seed <n>', 'seed of the --limit subset', '0')
    .option('--confusion <png>', 'write the confusion matrix as a PNG heat map')
    .option('--json', 'print {"top1", "top5", "correct", "total"} as JSON on stdout (and nothing else)')
    .option('--full-json', 'print the full result (per-class accuracy, confusion matrix) as JSON')
    .option('--no-progress', 'no progress bar')
    .action(async (o: ArchOpts & {
      weights?: string; dataset?: string; data?: string; split: 'test' | 'train'; batch: string; limit?: string; seed: string;
      engine?: EngineName; threads?: string; preprocess?: string; labels?: LabelSetName; confusion?: string; json?: boolean; fullJson?: boolean; progress: boolean;
    } & Omit<EvalDetectOpts, 'engine' | 'split'> & { task: 'classify' | 'detect' }) => {
      if (o.task === 'detect') return evalDetect(o);
      if (!o.dataset) throw new Error("eval: --dataset is required (fashion-mnist, cifar10 or an image folder)");
      if (o.onnx && o.weights) throw new Error('eval: give either --weights or --onnx, not both');
      if (o.onnx && o.engine === 'native') throw new Error('eval: --onnx runs on ONNX Runtime; use --weights for the native engine');
      const limit = int(o.limit, '--limit', COUNT_OR_ALL) ?? 0;
      const seed = int(o.seed, '--seed', SEED)!;
      const threads = int(o.threads, '--threads', THREADS);
      const batch = int(o.batch, '--batch', BATCH);
      refuseInputAsOutput({ path: o.confusion, flag: '--confusion' }, [{ path: o.weights, flag: '--weights' }]);
      const m = o.onnx ? await onnxFileClassifier(o.onnx, threads, 'evaluate it with --task detect') : await modelClassifier(loadModel(o, true), o.engine, threads);
      const [{ limitDataset, openDataset }, { formatDuration, progressBar }, { evaluate, evalToJSON, formatEvalReport, writeConfusionPng }] =
        await Promise.all([import('../data/open.js'), import('../train/progress.js'), import('../train/metrics.js')]);
      const src = await openDataset(o.dataset, o.split, { dir: o.data, resolution: m.info.config.resolution, preprocess: o.preprocess ?? m.info.preprocess });
      const named = o.labels ? { ...src.dataset, classes: labelsFor(o.labels) } : src.dataset;
      const ds = limitDataset(named, limit, seed);
      const clf = m.classifier;
      const model = { numClasses: m.info.config.numClasses, predict: (x: Float32Array, n: number) => clf.run(x, n) };
      const pb = progressBar(o.progress && Boolean(process.stderr.isTTY), `evaluating |{bar}| {value}/{total} images | {speed} img/s | ETA {eta_formatted}`);
      pb?.start(ds.count, 0, { speed: '-' });
      const t0 = performance.now();
      let r;
      try {
        r = await evaluate(model, ds, src.input, batch, {
          onProgress: (d) => pb?.update(d, { speed: (d / ((performance.now() - t0) / 1000)).toFixed(1) }),
        });
      } finally {
        pb?.stop();
        await clf.release();
      }
      const secs = (performance.now() - t0) / 1000;
      if (o.confusion) await writeConfusionPng(r, o.confusion);
      if (o.json) {
        process.stdout.write(`${JSON.stringify({ top1: r.top1, top5: r.top5, correct: r.correct, total: r.total })}\n`);
      } else if (o.fullJson) {
        process.stdout.write(`${JSON.stringify({ dataset: ds.name, ...evalToJSON(r) }, null, 2)}\n`);
      } else {
        console.log(`${o.onnx ?? o.weights ?? 'the bundled model'} on ${ds.name}, ${clf.engine} engine (${ds.count} images, ${formatDuration(secs)}, ${(ds.count / secs).toFixed(1)} img/s)`);
        console.log(formatEvalReport(r));
        if (o.confusion) console.log(`confusion matrix: ${o.confusion}`);
      }
    });

  // ---- plot ----
  program
    .command('plot')
    .description("render a run's loss / accuracy / learning-rate curves (metrics.jsonl) to SVG and PNG")
    .argument('<run-dir>', 'run folder (or its metrics.jsonl)')
    .option('--out <dir>', 'output folder (default: the run folder)')
    .action(async (dir: string, o: { out?: string }) => {
      const { plotRun } = await import('../train/plot.js');
      const p = await plotRun(dir, o.out);
      console.log(`${p.epochs} epoch(s): wrote ${p.svg} and ${p.png}`);
    });

  // ---- data fetch ----
  const data = program.command('data').description('datasets');
  data
    .command('fetch')
    .description('download a dataset from its official URL (md5-checked, resumable)')
    .addArgument(new Command().createArgument('<dataset>', 'dataset').choices(['cifar10', 'fashion-mnist']))
    .option('--dir <dir>', 'destination folder (default data/<dataset>)')
    .option('--base-url <url>', 'download from this base URL instead of the official one')
    .option('--no-progress', 'no progress bar')
    .action(async (name: DatasetName, o: { dir?: string; baseUrl?: string; progress: boolean }) => {
      const dir = o.dir ?? DEFAULT_FETCH_DIR[name];
      const [{ fetchDataset }, { downloadProgress }] = await Promise.all([import('../data/fetch.js'), import('./download-progress.js')]);
      const bar = downloadProgress(o.progress);
      try {
        const r = await fetchDataset(name, dir, { baseUrl: o.baseUrl, onProgress: bar.onProgress });
        bar.stop();
        for (const f of r.downloaded) console.error(`downloaded ${f}`);
        for (const f of r.skipped) console.error(`already present (md5 ok) ${f}`);
        if (r.extracted) console.error(`unpacked ${r.extracted}`);
        console.log(r.dir);
        console.error(`use it with: mnv2 train --dataset ${name} --data ${r.dir}`);
      } finally {
        bar.stop();
      }
    });
}

/** A classifier from a model file (native engine or ONNX Runtime) with the file's model description. */
async function modelClassifier(m: LoadedWeights, engine: EngineName | undefined, threads: number | undefined): Promise<{ classifier: Classifier; info: ModelInfo }> {
  return { classifier: await createClassifier(m.graph, m.weights, engine, threads), info: m.info };
}
