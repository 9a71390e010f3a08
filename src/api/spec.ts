/**
 * What comes with a model file besides its weights: the preprocessing preset and the class names, from the
 * caller's options, else the file's metadata (src/io/metadata.ts), else its family's defaults (1000 torchvision
 * classes → ImageNet, 10 seed classes → CIFAR-10).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { preset as makePreset, type Preset } from '../data/preprocess.js';
import { labelsFor, type LabelSetName } from '../data/labels.js';
import { classNamesOf, labelSetOf, preprocessOf, type ModelInfo } from '../io/metadata.js';

/** The seed model this project trained on Fashion-MNIST (models/fashion-mnist), shipped in the package. */
export const BUNDLED_MODEL = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'models', 'fashion-mnist', 'model.safetensors');

export interface InputSpec {
  preset: Preset;
  labels?: readonly string[];
  /** The built-in list the labels come from, if any. */
  labelSet?: LabelSetName;
}

export interface SpecOptions {
  /** Preprocessing preset name (default: the file's, else its family's). */
  preprocess?: string;
  /** A built-in label list or the class names themselves. */
  labels?: LabelSetName | readonly string[];
}

/** The preprocessing and class names of a model: the options, else the file's metadata, else its family's defaults. */
export function inputSpec(info: Pick<ModelInfo, 'config' | 'preprocess' | 'labels' | 'classes'>, o: SpecOptions): InputSpec {
  const cfg = info.config;
  const presetName = o.preprocess ?? preprocessOf(info);
  const given = o.labels;
  const labelSet = (typeof given === 'string' ? given : given ? undefined : labelSetOf(info)) as LabelSetName | undefined;
  const labels = typeof given === 'string' ? labelsFor(given) : (given ?? classNamesOf(info));
  if (labels && labels.length !== cfg.numClasses) {
    throw new Error(`label list ${labelSet ?? '(given)'} has ${labels.length} names, the model has ${cfg.numClasses} classes`);
  }
  const p = makePreset(presetName, cfg.resolution);
  if (p.channels !== cfg.inChannels) throw new Error(`preset ${presetName} makes ${p.channels}-channel inputs, the model takes ${cfg.inChannels}`);
  return { preset: p, labels, labelSet };
}
