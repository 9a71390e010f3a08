/**
 * Training recipes ("presets") and the data sources they train on.
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
 *
 * Every field can be overridden (see `resolvePreset`).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import sharp from 'sharp';
import { loadCifar10 } from '../data/cifar.js';
import { CIFAR10_INPUT, FASHION_MNIST_INPUT, sharedBytes, subset, type Dataset, type InputConvention } from '../data/dataset.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../data/idx.js';
import { preset as imagePreset } from '../data/preprocess.js';
import type { AugmentKind } from '../data/loader.js';

export type PresetName = 'fashion-mnist' | 'seed-cifar10' | 'paper-imagenet';
export const PRESET_NAMES: readonly PresetName[] = ['fashion-mnist', 'seed-cifar10', 'paper-imagenet'];

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
  seed: number;
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
  const bad = (m: string): never => {
    throw new Error(`invalid training settings: ${m}`);
  };
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
  if (r.augment !== 'seed' && r.augment !== 'rrc' && r.augment !== 'none') bad(`augment must be seed, rrc or none, got ${r.augment}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Data sources

export interface DataSource {
  dataset: Dataset;
  input: InputConvention;
  /** `mnv2.preprocess` metadata for `mnv2 predict` (a preprocessing preset name). */
  preprocess: string;
  /** `mnv2.labels` metadata (a built-in label set) when there is one. */
  labelSet?: 'fashion-mnist' | 'cifar10';
}

export const IMAGENET_NORM = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
const IMAGE_EXT = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.bmp', '.avif']);

/**
 * Opens a split of a dataset: 'fashion-mnist', 'cifar10' or an image folder.
 * Image folders: `DIR/train/<class>/*` and `DIR/val/<class>/*` (or `test`); if DIR has no `train` folder, DIR's
 * own class folders are split deterministically (every 10th image of each class is validation).
 */
export async function openDataset(
  name: string, split: 'train' | 'test',
  opts: {
    dir?: string; resolution?: number; onProgress?: (done: number, total: number) => void;
    /** Image folders: the model's preprocessing preset (torchvision or keras normalisation; default torchvision). */
    preprocess?: string;
  } = {},
): Promise<DataSource> {
  if (name === 'fashion-mnist') {
    // Debian's dataset-fashion-mnist, else what `mnv2 data fetch fashion-mnist` downloads.
    const dir = opts.dir ?? (!existsSync(FASHION_MNIST_DIR) && existsSync('data/fashion-mnist') ? 'data/fashion-mnist' : FASHION_MNIST_DIR);
    return { dataset: loadFashionMnist(dir, split), input: FASHION_MNIST_INPUT, preprocess: 'fashion-mnist', labelSet: 'fashion-mnist' };
  }
  if (name === 'cifar10') {
    return { dataset: loadCifar10(opts.dir ?? 'data/cifar10', split), input: CIFAR10_INPUT, preprocess: 'seed-cifar', labelSet: 'cifar10' };
  }
  const dir = opts.dir ?? name;
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new Error(`dataset '${name}': not fashion-mnist, cifar10 or an existing folder of class subfolders (${dir})`);
  }
  const preprocess = opts.preprocess ?? 'torchvision';
  if (preprocess !== 'torchvision' && preprocess !== 'keras') {
    throw new Error(`dataset '${name}': image folders are normalised like torchvision or keras models, not '${preprocess}'`);
  }
  const { mean, std } = imagePreset(preprocess);
  const ds = await loadImageFolder(dir, split, opts.resolution ?? 224, opts.onProgress);
  return { dataset: ds, input: { channels: 3, pad: 0, mean, std }, preprocess };
}

function listClasses(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort();
}

function listImages(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && IMAGE_EXT.has(extname(e.name).toLowerCase()))
    .map((e) => e.name)
    .sort();
}

/** Decodes an image folder split into memory: each image resized (shorter side) and centre-cropped to size×size. */
export async function loadImageFolder(
  dir: string, split: 'train' | 'test', size: number, onProgress?: (done: number, total: number) => void,
): Promise<Dataset> {
  let root = dir;
  let holdout: 'none' | 'train' | 'test' = 'none';
  if (existsSync(join(dir, 'train'))) {
    if (split === 'train') root = join(dir, 'train');
    else {
      const v = ['val', 'validation', 'test'].map((s) => join(dir, s)).find((p) => existsSync(p));
      if (!v) throw new Error(`${dir}: has a train folder but no val, validation or test folder to evaluate on`);
      root = v;
    }
  } else {
    holdout = split;
  }
  const classes = listClasses(existsSync(join(dir, 'train')) ? join(dir, 'train') : dir);
  if (classes.length < 2) throw new Error(`${root}: an image folder needs at least 2 class subfolders, found ${classes.length}`);
  const files: { path: string; label: number }[] = [];
  classes.forEach((c, label) => {
    const cdir = join(root, c);
    if (!existsSync(cdir)) return;
    listImages(cdir).forEach((f, i) => {
      const isVal = i % 10 === 9;
      if (holdout === 'none' || (holdout === 'test') === isVal) files.push({ path: join(cdir, f), label });
    });
  });
  if (files.length === 0) throw new Error(`${root}: no images (${[...IMAGE_EXT].join(', ')}) in the class folders ${classes.join(', ')}`);
  const per = 3 * size * size;
  const images = sharedBytes(files.length * per);
  const labels = new Uint8Array(files.length);
  if (classes.length > 255) throw new Error(`${root}: ${classes.length} classes; at most 255 are supported`);
  let done = 0;
  let next = 0;
  const work = async (): Promise<void> => {
    while (next < files.length) {
      const i = next++;
      const f = files[i]!;
      let px: Buffer;
      try {
        px = await sharp(f.path).rotate().flatten({ background: '#ffffff' }).toColorspace('srgb')
          .resize(size, size, { fit: 'cover', position: 'centre', kernel: 'linear' }).removeAlpha().raw().toBuffer();
      } catch (e) {
        throw new Error(`${f.path}: cannot decode image (${(e as Error).message})`);
      }
      if (px.length !== size * size * 3) throw new Error(`${f.path}: decoded to ${px.length} bytes, expected ${size}×${size}×3`);
      // HWC -> CHW
      const o = i * per;
      const plane = size * size;
      for (let p = 0; p < plane; p++) {
        images[o + p] = px[3 * p]!;
        images[o + plane + p] = px[3 * p + 1]!;
        images[o + 2 * plane + p] = px[3 * p + 2]!;
      }
      labels[i] = f.label;
      onProgress?.(++done, files.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, files.length) }, work));
  return { name: `folder:${root}${holdout === 'none' ? '' : `[${split}]`}`, count: files.length, channels: 3, height: size, width: size, images, labels, classes };
}

/** A fixed, seeded subset of `limit` images (all of them when limit is 0 or ≥ count). */
export function limitDataset(ds: Dataset, limit: number, seed: number): Dataset {
  if (!limit || limit >= ds.count) return ds;
  // Deterministic Fisher-Yates prefix, then sorted so the subset keeps the dataset's order.
  const idx = new Int32Array(ds.count);
  for (let i = 0; i < ds.count; i++) idx[i] = i;
  let s = (seed ^ 0x9e3779b9) >>> 0;
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = 0; i < limit; i++) {
    const j = i + Math.floor(next() * (ds.count - i));
    const t = idx[i]!;
    idx[i] = idx[j]!;
    idx[j] = t;
  }
  const chosen = idx.slice(0, limit).sort();
  return subset(ds, chosen, `${ds.name}[${limit}]`);
}
