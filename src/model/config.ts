/**
 * The MobileNetV2 family's configuration: everything needed to rebuild a MobileNetV2 from data.
 * Stored as JSON in checkpoint and ONNX metadata (src/io/metadata.ts), so a weights file alone rebuilds its model.
 */
import { definedOnly, type BaseConfig } from './family.js';
import type { PaddingMode } from './builder.js';
import type { ActivationKind } from './graph.js';

export type { ActivationKind } from './graph.js';

/** One Table-2 row: expansion t, output channels c, repeats n, first stride s. */
export type StageSetting = readonly [t: number, c: number, n: number, s: number];

export const MOBILENETV2 = 'mobilenetv2';
/** The family's two variants: torchvision's ImageNet model and the seed document's CIFAR-10 model. */
export const ARCHS = ['imagenet', 'seed-cifar'] as const;
export type Arch = (typeof ARCHS)[number];
/** 'symmetric': PyTorch padding (k-1)/2. 'keras': TF 'same' padding, asymmetric for stride 2. */
export type { PaddingMode } from './builder.js';

export interface ModelConfig extends BaseConfig {
  family: typeof MOBILENETV2;
  arch: Arch;
  /** Width multiplier α. */
  alpha: number;
  /** Input height = width. ImageNet: any multiple of 32. */
  resolution: number;
  /** Paper ablation (Fig. 6a): ReLU6 (paper) or ReLU (seed). */
  activation: ActivationKind;
  /** Paper ablation (Fig. 6a): false puts an activation after the project conv. */
  linearBottleneck: boolean;
  /** Paper ablation (Fig. 6b): false drops every shortcut. */
  residual: boolean;
  bnEps: number;
  /** Dropout before the classifier (torchvision: 0.2; seed: none). */
  dropout: number;
  padding: PaddingMode;
}

/** Table 2 of the paper (and torchvision's inverted_residual_setting). */
export const IMAGENET_SETTINGS: readonly StageSetting[] = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];

/** The seed's CIFAR-10 cfg: stage 2 stride 2 -> 1. */
export const SEED_SETTINGS: readonly StageSetting[] = [
  [1, 16, 1, 1],
  [6, 24, 2, 1],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];

const DEFAULTS: Record<Arch, ModelConfig> = {
  imagenet: {
    family: MOBILENETV2, arch: 'imagenet', alpha: 1, resolution: 224, inChannels: 3, numClasses: 1000,
    activation: 'relu6', linearBottleneck: true, residual: true, bnEps: 1e-5, dropout: 0.2, padding: 'symmetric',
  },
  'seed-cifar': {
    family: MOBILENETV2, arch: 'seed-cifar', alpha: 1, resolution: 32, inChannels: 3, numClasses: 10,
    activation: 'relu', linearBottleneck: true, residual: true, bnEps: 1e-5, dropout: 0, padding: 'symmetric',
  },
};

/** A full config from an arch name and overrides; validates every field. */
export function makeConfig(arch: Arch, overrides: Partial<ModelConfig> = {}): ModelConfig {
  if (!(arch in DEFAULTS)) throw new Error(`unknown arch '${arch}' (expected imagenet or seed-cifar)`);
  const cfg: ModelConfig = { ...DEFAULTS[arch], ...definedOnly(overrides), family: MOBILENETV2, arch };
  validateConfig(cfg);
  return cfg;
}

export function validateConfig(cfg: ModelConfig): void {
  const bad = (msg: string): never => {
    throw new Error(`invalid model config: ${msg}`);
  };
  if (!(cfg.alpha > 0) || !Number.isFinite(cfg.alpha)) bad(`alpha must be a positive number, got ${cfg.alpha}`);
  if (!Number.isInteger(cfg.resolution) || cfg.resolution <= 0) bad(`resolution must be a positive integer, got ${cfg.resolution}`);
  if (cfg.arch === 'imagenet' && cfg.resolution % 32 !== 0) bad(`imagenet resolution must be a multiple of 32, got ${cfg.resolution}`);
  if (cfg.arch === 'seed-cifar' && cfg.resolution !== 32) bad(`seed-cifar resolution must be 32 (avg-pool 4 on the 4x4 map), got ${cfg.resolution}`);
  if (!Number.isInteger(cfg.inChannels) || cfg.inChannels <= 0) bad(`inChannels must be a positive integer, got ${cfg.inChannels}`);
  if (!Number.isInteger(cfg.numClasses) || cfg.numClasses <= 0) bad(`numClasses must be a positive integer, got ${cfg.numClasses}`);
  if (cfg.activation !== 'relu' && cfg.activation !== 'relu6') bad(`activation must be relu or relu6, got ${cfg.activation}`);
  if (!(cfg.bnEps > 0)) bad(`bnEps must be positive, got ${cfg.bnEps}`);
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) bad(`dropout must be in [0, 1), got ${cfg.dropout}`);
  if (cfg.padding !== 'symmetric' && cfg.padding !== 'keras') bad(`padding must be symmetric or keras, got ${cfg.padding}`);
  if (typeof cfg.linearBottleneck !== 'boolean' || typeof cfg.residual !== 'boolean') bad('linearBottleneck and residual must be booleans');
}

/** A config from a plain object (a file's metadata, or an existing config with changes); files before the
 * family registry stored `{ arch, ... }` without `family`. */
export function parseModelConfig(raw: Record<string, unknown>): ModelConfig {
  const r = raw as Partial<ModelConfig>;
  if (r.family !== undefined && r.family !== MOBILENETV2) throw new Error(`model config of family '${String(r.family)}' is not a ${MOBILENETV2} config`);
  if (!ARCHS.includes(r.arch as Arch)) throw new Error(`model config has unknown arch '${String(r.arch)}'`);
  return makeConfig(r.arch as Arch, r);
}
