/**
 * The data sources training, evaluation and calibration read: Fashion-MNIST, CIFAR-10 or an image folder, each
 * with its input convention and the preprocessing metadata a model trained on it gets.
 */
import { existsSync, statSync } from 'node:fs';
import { canvasConvention } from './canvas.js';
import { loadCifar10 } from './cifar.js';
import { CIFAR10_INPUT, FASHION_MNIST_INPUT, subset, type Dataset, type InputConvention } from './dataset.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from './idx.js';
import { loadImageFolder } from './image-folder.js';
import { preset as imagePreset } from './preprocess.js';

export interface DataSource {
  dataset: Dataset;
  input: InputConvention;
  /** `mnv2.preprocess` metadata for `mnv2 predict` (a preprocessing preset name). */
  preprocess: string;
  /** `mnv2.labels` metadata (a built-in label set) when there is one. */
  labelSet?: 'fashion-mnist' | 'cifar10';
}

export const IMAGENET_NORM = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
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
    const dataset = loadFashionMnist(dir, split);
    // fashion-mnist-canvas models (trained with --augment canvas) see the garments drawn on a frame of their resolution
    const canvas = opts.preprocess === 'fashion-mnist-canvas';
    const input = canvas ? canvasConvention(FASHION_MNIST_INPUT, dataset, opts.resolution ?? 32) : FASHION_MNIST_INPUT;
    return { dataset, input, preprocess: canvas ? 'fashion-mnist-canvas' : 'fashion-mnist', labelSet: 'fashion-mnist' };
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
    throw new Error(`dataset '${name}': image folders are normalised like torchvision or keras models, not '${preprocess}'` +
      (preprocess === 'fashion-mnist' ? ' (the Fashion-MNIST model takes 32x32 greyscale garments: fine-tune photos from ImageNet weights, e.g. a torchvision state dict)' : ''));
  }
  const { mean, std } = imagePreset(preprocess);
  const ds = await loadImageFolder(dir, split, opts.resolution ?? 224, opts.onProgress);
  return { dataset: ds, input: { channels: 3, pad: 0, mean, std }, preprocess };
}

/** The first `count - n` images (to train on) and the last `n` (held out for validation), in the dataset's order. */
export function holdOut(ds: Dataset, n: number): { train: Dataset; val: Dataset } {
  if (!(Number.isInteger(n) && n > 0 && n < ds.count)) {
    throw new Error(`--val-split ${n}: ${ds.name} has ${ds.count} training images; hold out between 1 and ${ds.count - 1}`);
  }
  const range = (from: number, to: number): Int32Array => Int32Array.from({ length: to - from }, (_, i) => from + i);
  const cut = ds.count - n;
  return { train: subset(ds, range(0, cut), `${ds.name}[0..${cut - 1}]`), val: subset(ds, range(cut, ds.count), `${ds.name}[${cut}..${ds.count - 1}]`) };
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
