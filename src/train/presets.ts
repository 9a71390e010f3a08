/**
 * Training recipes ("presets"); the data sources they train on are in src/data/open.ts.
 *
 *  - `fashion-mnist`: the seed's CIFAR-10 MobileNetV2 on Fashion-MNIST with the project's input convention (zero-pad
 *    28→32, replicate to 3 channels, mean 0.2860 / std 0.3530). SGD lr 0.1, momentum 0.9, wd 5e-4, cosine, batch
 *    128, crop(pad 4) + flip. The DEFAULT is a quick run sized for ~10 minutes on 2 cores (a 40,960-image subset of
 *    the training set, one epoch, cosine per step), then the full 10k test set; `full: true` (`--full`) is the
 *    full-length recipe (all 60k images, 40 epochs, cosine per epoch).
 *  - `seed-cifar10`: the seed's recipe: SGD lr 0.1, momentum 0.9, wd 5e-4, CosineAnnealingLR(T_max = epochs)
 *    stepped per epoch, batch 128, 200 epochs, RandomCrop(32, padding 4) + RandomHorizontalFlip.
 *  - `paper-imagenet`: the paper's (TF-slim's) recipe for image folders: the ImageNet architecture, RMSProp in
 *    TensorFlow's formulation with decay (alpha) 0.9, momentum 0.9 and epsilon 1.0 — TF-slim's
 *    `train_image_classifier.py` default `--opt_epsilon=1.0`; the paper does not state epsilon — lr 0.045 decayed by
 *    0.98 per epoch, weight decay 4e-5, batch 96, label smoothing 0.1, EMA of weights with decay 0.9999.
 *  - `fashion-detect`: SSDLite on the embedded detection set (`mnv2 data make fashion-detect`, 96 px canvases
 *    resized to the model's 160 px) the TF OD API way, as ssdlite_mobilenet_v2_coco.config: sigmoid loss with
 *    the hard example miner, RMSProp (TF formulation) lr 0.004, momentum 0.9, decay 0.9, epsilon 1.0, L2 4e-5,
 *    exponential decay (0.95 per epoch here: the config's 0.95 every 800720 steps never applies in a short
 *    run), batch 24, ssd_random_crop + horizontal flip. From scratch, so BN statistics move faster than the
 *    config's decay 0.9997 (a fine-tuning value): momentum 0.01.
 *  - `fashion-detect-torchvision`: the same model as torchvision's ssdlite320_mobilenet_v3_large recipe trains
 *    it: softmax loss with 3:1 hard negatives, SGD momentum 0.9, weight decay 4e-5 (none on BN and biases),
 *    cosine with a linear warm-up, RandomIoUCrop + flip; lr 0.15 at batch 192 scaled linearly to batch 24.
 *
 * Every field can be overridden (see `resolvePreset`).
 */
import { SHORTCUTS, type ActivationKind, type ShortcutKind } from '../model/config.js';
import { ACTIVATIONS } from '../model/graph.js';
import { AUGMENT_KINDS, type AugmentKind } from '../data/augment.js';
import type { SsdStyle } from '../detect/postprocess.js';
import { failFor } from '../util/errors.js';

export type PresetName = 'fashion-mnist' | 'seed-cifar10' | 'paper-imagenet' | 'fashion-detect' | 'fashion-detect-torchvision';
export const PRESET_NAMES: readonly PresetName[] = ['fashion-mnist', 'seed-cifar10', 'paper-imagenet', 'fashion-detect', 'fashion-detect-torchvision'];

/** Box-aware augmentation of detection runs: torchvision's full `ssd` policy, the IoU crop + flip of `ssdlite` and the TF config, or none. */
export type DetectAugment = 'ssd' | 'crop-flip' | 'none';
export const DETECT_AUGMENTS: readonly DetectAugment[] = ['ssd', 'crop-flip', 'none'];

/** What a detection recipe adds: the loss family (matching, loss, decoding) and the augmentation. */
export interface DetectionRecipe {
  style: SsdStyle;
  augment: DetectAugment;
  /**
   * PreciseBN: before each evaluation, the BN running statistics are recomputed as the mean over this many
   * training batches (augmented, as training sees them) with the current weights; absent or 0 (the
   * default): the running averages of training. It makes evaluation reproducible; on fashion-detect it does not
   * make it better (det-d's epoch 15: 0.211 with the running averages and with 50 batches; 10-batch estimates
   * scatter 0.228–0.352): see freezeBnEpochs.
   */
  preciseBn?: number;
  /**
   * The last this many epochs train with BN frozen: at the start of the first of them the statistics become a
   * PreciseBN estimate (`preciseBn` batches, FROZEN_BN_BATCHES when that is 0) and stay fixed, so those epochs
   * train the very function evaluation computes (γ and β still learn). Absent or 0: no freezing.
   */
  freezeBnEpochs?: number;
}

/** Batches of the PreciseBN estimate that frozen-BN epochs start from when the recipe sets no `preciseBn`. */
export const FROZEN_BN_BATCHES = 50;

/** The (0-based) epoch a run of `epochs` epochs freezes its BN statistics at, for `freezeBnEpochs`; Infinity: never. */
export const frozenBnStart = (epochs: number, freezeBnEpochs = 0): number => (freezeBnEpochs > 0 ? epochs - freezeBnEpochs : Infinity);

export type OptimizerName = 'sgd' | 'rmsprop';
export type ScheduleKind = 'cosine' | 'exponential' | 'step' | 'constant';

/** Everything that defines a training run (a preset after overrides). JSON-serializable. */
export interface TrainRecipe {
  preset: PresetName;
  /** 'fashion-mnist', 'cifar10', or a folder of class subfolders. */
  dataset: string;
  /** Dataset location (Fashion-MNIST: /usr/share/datasets/fashion-mnist by default; CIFAR-10: data/cifar10). */
  dataDir?: string;
  /** An `--arch` name: a model family or one of its variants (src/model/registry.ts). */
  arch: string;
  alpha: number;
  /** Input resolution (imagenet arch; image folders are resized to it). */
  resolution: number;
  /** Dropout before the classifier (undefined: the architecture's default). */
  dropout?: number;
  /** MobileNetV2's shortcut placement (Fig. 6b; undefined: the paper's, between bottlenecks). */
  shortcut?: ShortcutKind;
  /** MobileNetV2/V1 activation (undefined: the family's, ReLU6). */
  activation?: ActivationKind;
  /** MobileNetV2's Fig. 6a switch (undefined: linear bottlenecks, the paper's). */
  linearBottleneck?: boolean;
  epochs: number;
  batch: number;
  optimizer: OptimizerName;
  lr: number;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  /** Exclude BN parameters and biases from weight decay. */
  noDecayBnBias: boolean;
  /** RMSProp: squared-gradient decay (TF `decay`, PyTorch `alpha`). */
  rmsDecay: number;
  rmsEps: number;
  /** RMSProp in TensorFlow's formulation (eps inside the sqrt, accumulator initialised to 1). */
  rmsTf: boolean;
  schedule: ScheduleKind;
  /** Schedule granularity: the lr changes per epoch (the seed's CosineAnnealingLR) or per step. */
  schedulePer: 'epoch' | 'step';
  /** exponential: factor per epoch; step: factor every `stepEpochs`. */
  gamma: number;
  stepEpochs: number;
  /** Linear warm-up length in epochs (0: none). */
  warmupEpochs: number;
  labelSmoothing: number;
  /** EMA decay of the weights (0: no EMA). Evaluation and the saved model use the EMA weights when enabled. */
  ema: number;
  bnMomentum: number;
  augment: AugmentKind;
  /** Use only the first N training images (a fixed, seeded subset) per epoch; 0 = all. */
  trainLimit: number;
  /** Evaluate on only N validation images (a fixed, seeded subset); 0 = all. */
  evalLimit: number;
  /**
   * Classification: validate on the last N images of the training split, held out from training, instead of on
   * the test split; the test split is then scored once, at the end, with the val-chosen weights. 0 or absent: off.
   */
  valSplit?: number;
  seed: number;
  /** Set for detection recipes (arch ssdlite); the classification fields `augment` and `labelSmoothing` do not apply. */
  detection?: DetectionRecipe;
  /** Quantization-aware training for the last epochs (src/quant/qat.ts); the run then also writes the int8 model. */
  qat?: QatRecipe;
}

/** `--qat-freeze-bn`'s default: BN frozen for the last half of the QAT epochs, rounded up (all of a 1-epoch run). */
export const defaultFreezeBnEpochs = (qatEpochs: number): number => Math.ceil(qatEpochs / 2);

/** Quantization-aware training of a classification run (`--qat`, `--qat-epochs`, `--qat-freeze-bn`, `--weight-bits`). */
export interface QatRecipe {
  /** The last `epochs` epochs of the run train with fake quantization (the run's epochs: the whole run). */
  epochs: number;
  /** Of those, the last `freezeBnEpochs` use frozen BN statistics (BN folded, as the int8 model computes). */
  freezeBnEpochs: number;
  /** Weight bits of the int8 model (7: no saturation in AVX2's u8·s8 kernels; 8: VNNI / ARM), as `mnv2 quantize --weight-bits`. */
  weightBits: 7 | 8;
}

const SEED_SGD = {
  optimizer: 'sgd' as const, lr: 0.1, momentum: 0.9, nesterov: false, weightDecay: 5e-4, noDecayBnBias: false,
  rmsDecay: 0.9, rmsEps: 1.0, rmsTf: true,
  schedule: 'cosine' as const, gamma: 0.98, stepEpochs: 30, warmupEpochs: 0, labelSmoothing: 0, ema: 0, bnMomentum: 0.1,
};

/** Quick default of `fashion-mnist`: images and epochs sized for ~10 minutes on 2 cores. */
export const FASHION_MNIST_QUICK = { trainLimit: 40960, epochs: 1, schedulePer: 'step' as const };
/** The full-length Fashion-MNIST recipe (`--full`). */
export const FASHION_MNIST_FULL = { trainLimit: 0, epochs: 40, schedulePer: 'epoch' as const };

export function presetRecipe(name: PresetName, full = false): TrainRecipe {
  switch (name) {
    case 'fashion-mnist':
      return {
        preset: name, dataset: 'fashion-mnist', arch: 'seed-cifar', alpha: 1, resolution: 32, batch: 128,
        ...SEED_SGD, augment: 'seed', evalLimit: 0, seed: 0,
        ...(full ? FASHION_MNIST_FULL : FASHION_MNIST_QUICK),
      };
    case 'seed-cifar10':
      return {
        preset: name, dataset: 'cifar10', dataDir: 'data/cifar10', arch: 'seed-cifar', alpha: 1, resolution: 32, batch: 128,
        ...SEED_SGD, schedulePer: 'epoch', epochs: 200, augment: 'seed', trainLimit: 0, evalLimit: 0, seed: 0,
      };
    case 'paper-imagenet':
      return {
        preset: name, dataset: '', arch: 'imagenet', alpha: 1, resolution: 224, batch: 96, epochs: 300,
        optimizer: 'rmsprop', lr: 0.045, momentum: 0.9, nesterov: false, weightDecay: 4e-5, noDecayBnBias: false,
        rmsDecay: 0.9, rmsEps: 1.0, rmsTf: true,
        schedule: 'exponential', schedulePer: 'epoch', gamma: 0.98, stepEpochs: 30, warmupEpochs: 0,
        labelSmoothing: 0.1, ema: 0.9999, bnMomentum: 0.1, augment: 'seed', trainLimit: 0, evalLimit: 0, seed: 0,
      };
    case 'fashion-detect':
      return {
        preset: name, dataset: 'fashion-detect', dataDir: 'data/fashion-detect', arch: 'ssdlite', alpha: 0.5, resolution: 160, batch: 24, epochs: 10,
        optimizer: 'rmsprop', lr: 0.004, momentum: 0.9, nesterov: false, weightDecay: 4e-5, noDecayBnBias: false,
        rmsDecay: 0.9, rmsEps: 1.0, rmsTf: true,
        schedule: 'exponential', schedulePer: 'epoch', gamma: 0.95, stepEpochs: 30, warmupEpochs: 0,
        labelSmoothing: 0, ema: 0, bnMomentum: 0.01, augment: 'none', trainLimit: 0, evalLimit: 0, seed: 0,
        detection: { style: 'tf', augment: 'crop-flip' },
      };
    case 'fashion-detect-torchvision':
      return {
        ...presetRecipe('fashion-detect'), preset: name,
        optimizer: 'sgd', lr: 0.15 * (24 / 192), momentum: 0.9, weightDecay: 4e-5, noDecayBnBias: true,
        schedule: 'cosine', schedulePer: 'step', warmupEpochs: 1, bnMomentum: 0.1,
        detection: { style: 'torchvision', augment: 'crop-flip' },
      };
    default:
      throw new Error(`unknown preset '${String(name)}' (known: ${PRESET_NAMES.join(', ')})`);
  }
}

/** A preset with overrides applied (undefined overrides are ignored), validated. */
export function resolvePreset(name: PresetName, overrides: Partial<TrainRecipe> = {}, full = false): TrainRecipe {
  const r: TrainRecipe = { ...presetRecipe(name, full) };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) (r as unknown as Record<string, unknown>)[k] = v;
  // Image folders get RandomResizedCrop unless an augmentation was asked for; the built-in 32x32 sets keep the seed's.
  const folder = r.dataset !== 'fashion-mnist' && r.dataset !== 'cifar10';
  if (folder && overrides.augment === undefined && r.augment === 'seed') r.augment = 'rrc';
  validateRecipe(r);
  return r;
}

export function validateRecipe(r: TrainRecipe): void {
  const bad = failFor('invalid training settings');
  const posInt = (v: number, what: string) => (Number.isInteger(v) && v > 0) || bad(`${what} must be a positive integer, got ${v}`);
  const nonNegInt = (v: number, what: string) => (Number.isInteger(v) && v >= 0) || bad(`${what} must be an integer >= 0, got ${v}`);
  const nonNeg = (v: number, what: string) => (Number.isFinite(v) && v >= 0) || bad(`${what} must be a number >= 0, got ${v}`);
  if (!r.dataset) bad(`preset ${r.preset} trains on an image folder: pass --data DIR (one subfolder per class)`);
  posInt(r.epochs, 'epochs');
  posInt(r.batch, 'batch');
  if (!(r.lr > 0) || !Number.isFinite(r.lr)) bad(`lr must be a positive number, got ${r.lr}`);
  nonNeg(r.momentum, 'momentum');
  nonNeg(r.weightDecay, 'weight decay');
  nonNeg(r.rmsEps, 'rms eps');
  nonNeg(r.warmupEpochs, 'warmup epochs');
  nonNegInt(r.trainLimit, 'train limit');
  nonNegInt(r.evalLimit, 'eval limit');
  if (r.valSplit !== undefined) nonNegInt(r.valSplit, 'val split');
  if (r.valSplit && r.qat) bad('--val-split with --qat: the val-chosen int8 model would be scored in float on the test split; use one of them');
  if (r.valSplit && r.detection) bad(`--val-split is for classification: preset ${r.preset}'s dataset has its own val split`);
  nonNegInt(r.seed, 'seed');
  if (!(r.rmsDecay > 0 && r.rmsDecay < 1)) bad(`rms decay must be in (0, 1), got ${r.rmsDecay}`);
  if (!(r.gamma > 0)) bad(`gamma must be positive, got ${r.gamma}`);
  posInt(r.stepEpochs, 'step epochs');
  if (!(r.labelSmoothing >= 0 && r.labelSmoothing < 1)) bad(`label smoothing must be in [0, 1), got ${r.labelSmoothing}`);
  if (!(r.ema >= 0 && r.ema < 1)) bad(`ema decay must be in [0, 1), got ${r.ema}`);
  if (!(r.bnMomentum > 0 && r.bnMomentum <= 1)) bad(`bn momentum must be in (0, 1], got ${r.bnMomentum}`);
  if (r.optimizer !== 'sgd' && r.optimizer !== 'rmsprop') bad(`optimizer must be sgd or rmsprop, got ${r.optimizer}`);
  if (!['cosine', 'exponential', 'step', 'constant'].includes(r.schedule)) bad(`schedule must be cosine, exponential, step or constant, got ${r.schedule}`);
  if (r.schedulePer !== 'epoch' && r.schedulePer !== 'step') bad(`schedule-per must be epoch or step, got ${r.schedulePer}`);
  if (!AUGMENT_KINDS.includes(r.augment)) bad(`augment must be ${AUGMENT_KINDS.join(', ')}, got ${r.augment}`);
  if (r.augment === 'canvas' && r.dataset !== 'fashion-mnist') bad(`--augment canvas draws Fashion-MNIST garments on a frame; the dataset is ${r.dataset}`);
  if (r.detection) {
    if (r.arch !== 'ssdlite') bad(`preset ${r.preset} trains a detector: --arch must be ssdlite, got ${r.arch}`);
    if (r.detection.style !== 'tf' && r.detection.style !== 'torchvision') bad(`ssd style must be tf or torchvision, got ${String(r.detection.style)}`);
    if (!DETECT_AUGMENTS.includes(r.detection.augment)) bad(`detection augment must be ${DETECT_AUGMENTS.join(', ')}, got ${String(r.detection.augment)}`);
    if (r.detection.preciseBn !== undefined) nonNegInt(r.detection.preciseBn, 'precise BN batches');
    if ((r.detection.preciseBn ?? 0) > 0 && r.ema > 0) bad("--precise-bn recomputes the trained weights' BN statistics; with --ema the EMA weights are evaluated: use one of them");
    const freeze = r.detection.freezeBnEpochs ?? 0;
    nonNegInt(freeze, 'frozen-BN epochs');
    if (freeze > r.epochs) bad(`--freeze-bn ${freeze} is more than the run's ${r.epochs} epoch(s)`);
    if (freeze > 0 && r.ema > 0) bad('--freeze-bn trains with fixed BN statistics of the trained weights; with --ema the EMA weights are evaluated: use one of them');
  } else if (r.arch === 'ssdlite') {
    bad(`--arch ssdlite is a detector: train it with --recipe fashion-detect or fashion-detect-torchvision`);
  }
  if (r.qat) {
    const q = r.qat;
    if (!(Number.isInteger(q.epochs) && q.epochs >= 1 && q.epochs <= r.epochs)) bad(`QAT epochs must be an integer in 1..${r.epochs} (the run's epochs), got ${q.epochs}`);
    if (!(Number.isInteger(q.freezeBnEpochs) && q.freezeBnEpochs >= 0 && q.freezeBnEpochs <= q.epochs)) bad(`QAT frozen-BN epochs must be an integer in 0..${q.epochs} (the QAT epochs), got ${q.freezeBnEpochs}`);
    if (q.weightBits !== 7 && q.weightBits !== 8) bad(`QAT weight bits must be 7 or 8, got ${String(q.weightBits)}`);
    if (r.detection) bad('quantization-aware training is for classification recipes; quantize a detector with mnv2 quantize');
    // The trained ranges belong to the trained weights; an EMA copy would need observers of its own.
    if (r.ema > 0) bad('quantization-aware training does not combine with an EMA of the weights (--ema 0)');
  }
  if (r.shortcut !== undefined && !SHORTCUTS.includes(r.shortcut)) bad(`shortcut must be ${SHORTCUTS.join(', ')}, got ${String(r.shortcut)}`);
  if (r.activation !== undefined && !ACTIVATIONS.includes(r.activation)) bad(`activation must be ${ACTIVATIONS.join(' or ')}, got ${String(r.activation)}`);
  if (r.linearBottleneck !== undefined && typeof r.linearBottleneck !== 'boolean') bad(`linearBottleneck must be a boolean, got ${String(r.linearBottleneck)}`);
}
