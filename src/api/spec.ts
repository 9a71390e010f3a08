/**
 * What comes with a model file besides its weights: the preprocessing preset and the class names, from the
 * caller's options, else the file's metadata, else the architecture's defaults (1000 torchvision classes →
 * ImageNet, 10 seed classes → CIFAR-10).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ModelConfig } from '../model/config.js';
import { preset as makePreset, type Preset } from '../data/preprocess.js';
import { labelsFor, type LabelSetName } from '../data/labels.js';
import { CLASSES_KEY, LABELS_KEY, PREPROCESS_KEY } from '../train/checkpoint.js';

/** The seed model this project trained on Fashion-MNIST (models/fashion-mnist), shipped in the package. */
export const BUNDLED_MODEL = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'models', 'fashion-mnist', 'model.safetensors');

export interface InputSpec {
  preset: Preset;
  labels?: readonly string[];
  /** The built-in list the labels come from, if any. */
  labelSet?: LabelSetName;
}

export interface SpecOptions {
  preset?: string;
  /** A built-in label list or the class names themselves. */
  labels?: LabelSetName | readonly string[];
}

/** The preprocessing and class names of a model: the options, else the file's metadata, else the arch's defaults. */
export function inputSpec(cfg: ModelConfig, metadata: Record<string, string>, o: SpecOptions): InputSpec {
  const presetName = o.preset ?? metadata[PREPROCESS_KEY] ?? (cfg.arch === 'imagenet' ? 'torchvision' : 'seed-cifar');
  const p = makePreset(presetName, cfg.resolution);
  if (p.channels !== cfg.inChannels) throw new Error(`preset ${presetName} makes ${p.channels}-channel inputs, the model takes ${cfg.inChannels}`);
  const { labels, labelSet } = classNames(cfg, metadata, o.labels);
  if (labels && labels.length !== cfg.numClasses) {
    throw new Error(`label list ${labelSet ?? '(given)'} has ${labels.length} names, the model has ${cfg.numClasses} classes`);
  }
  return { preset: p, labels, labelSet };
}

function classNames(cfg: ModelConfig, metadata: Record<string, string>, given: SpecOptions['labels']): { labels?: readonly string[]; labelSet?: LabelSetName } {
  if (Array.isArray(given)) return { labels: given };
  const name = (given ?? metadata[LABELS_KEY]) as LabelSetName | undefined;
  if (name !== undefined) return { labels: labelsFor(name), labelSet: name };
  // A model fine-tuned on an image folder names its classes after the folders.
  const stored = metadata[CLASSES_KEY];
  if (stored !== undefined) return { labels: parseClasses(stored) };
  const fallback = defaultLabels(cfg);
  return fallback ? { labels: labelsFor(fallback), labelSet: fallback } : {};
}

function parseClasses(json: string): readonly string[] {
  const v: unknown = JSON.parse(json);
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`${CLASSES_KEY} metadata is not a JSON array of class names`);
  return v;
}

function defaultLabels(cfg: ModelConfig): LabelSetName | undefined {
  if (cfg.arch === 'imagenet' && cfg.numClasses === 1000) return 'imagenet';
  if (cfg.arch === 'seed-cifar' && cfg.numClasses === 10) return 'cifar10';
  return undefined;
}
