/**
 * The MobileNetV2 family's configuration: everything needed to rebuild a MobileNetV2 from data.
 * Stored as JSON in checkpoint and ONNX metadata (src/io/metadata.ts), so a weights file alone rebuilds its model.
 */
import { definedOnly, type BaseConfig } from './family.js';
import type { HeadLayer, PaddingMode } from './builder.js';
import type { ActivationKind } from './graph.js';
import { checkSharedFields, invalidConfig } from './validate.js';

export type { ActivationKind } from './graph.js';

/** One Table-2 row: expansion t, output channels c, repeats n, first stride s. */
export type StageSetting = readonly [t: number, c: number, n: number, s: number];

export const MOBILENETV2 = 'mobilenetv2';
/** The family's two variants: torchvision's ImageNet model and the seed document's CIFAR-10 model. */
export const ARCHS = ['imagenet', 'seed-cifar'] as const;
export type Arch = (typeof ARCHS)[number];
/** 'symmetric': PyTorch padding (k-1)/2. 'keras': TF 'same' padding, asymmetric for stride 2. */
export type { HeadLayer, PaddingMode } from './builder.js';

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
  /** Hidden layers between the pool and the final linear (a Keras/TF.js Dense stack); absent: one linear. */
  head?: readonly HeadLayer[];
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
  checkSharedFields(cfg);
  if (cfg.arch === 'imagenet' && cfg.resolution % 32 !== 0) invalidConfig(`imagenet resolution must be a multiple of 32, got ${cfg.resolution}`);
  if (cfg.arch === 'seed-cifar' && cfg.resolution !== 32) invalidConfig(`seed-cifar resolution must be 32 (avg-pool 4 on the 4x4 map), got ${cfg.resolution}`);
  if (typeof cfg.linearBottleneck !== 'boolean' || typeof cfg.residual !== 'boolean') invalidConfig('linearBottleneck and residual must be booleans');
}

/** A config from a plain object (a file's metadata, or an existing config with changes); files before the
 * family registry stored `{ arch, ... }` without `family`. */
export function parseModelConfig(raw: Record<string, unknown>): ModelConfig {
  const r = raw as Partial<ModelConfig>;
  if (r.family !== undefined && r.family !== MOBILENETV2) throw new Error(`model config of family '${String(r.family)}' is not a ${MOBILENETV2} config`);
  if (!ARCHS.includes(r.arch as Arch)) throw new Error(`model config has unknown arch '${String(r.arch)}'`);
  return makeConfig(r.arch as Arch, r);
}
