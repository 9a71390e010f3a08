/**
 * The MobileNetV2 family's configuration: everything needed to rebuild a MobileNetV2 from data.
 * Stored as JSON in checkpoint and ONNX metadata (src/io/metadata.ts), so a weights file alone rebuilds its model.
 */
import { definedOnly, type BaseConfig } from './family.js';
import type { HeadLayer, PaddingMode } from './builder.js';
import type { ActivationKind } from './graph.js';
import { checkSharedFields, invalidConfig } from './validate.js';

export type { ActivationKind } from './graph.js';

/**
 * Shortcut placement, the paper's Figure 6b ablation:
 *  - 'bottleneck' (the paper's): the block's input bottleneck is added to its output bottleneck (after the
 *    linear project conv + BN) when the block has stride 1 and in == out channels.
 *  - 'expansion': the shortcuts connect the expanded layers instead: the expanded tensor that feeds block k's
 *    depthwise conv (the output of its expand conv + BN + activation, plus block k-1's expanded tensor when that
 *    shortcut exists too) is added to the output of block k+1's expand conv + BN + activation whenever the two
 *    have equal shape (block k has stride 1 and in == out, and both blocks the same t), and the sum feeds block
 *    k+1's depthwise conv. The residual stream then runs
 *    through the wide tensors, one block (depthwise, project, next expand) per shortcut, like the paper's runs
 *    through the thin ones (expand, depthwise, project). Identity shortcuts only (no projections, also in
 *    seed-cifar); blocks without an expand conv (t = 1 in imagenet) have no expanded tensor.
 *  - 'none': no shortcut at all.
 */
export const SHORTCUTS = ['bottleneck', 'expansion', 'none'] as const;
export type ShortcutKind = (typeof SHORTCUTS)[number];

/** The paper's ablation switches a recipe or `mnv2 summary` may set (undefined: the family's default). */
export interface Ablation {
  /** Fig. 6b: where MobileNetV2's shortcuts go. */
  shortcut?: ShortcutKind;
  /** ReLU6 (the paper's) or ReLU, after every non-linear layer; MobileNetV1 too. */
  activation?: ActivationKind;
  /** Fig. 6a: false puts the activation after MobileNetV2's project conv too. */
  linearBottleneck?: boolean;
}

/** `ablation` as config overrides for an `--arch` of family `family`; a switch the family lacks is an error. */
export function ablationOverrides(family: string, arch: string, ablation: Ablation): Ablation {
  const { shortcut, activation, linearBottleneck } = ablation;
  if (family !== MOBILENETV2) {
    const v2Only = shortcut !== undefined ? '--shortcut' : linearBottleneck !== undefined ? '--nonlinear-bottleneck' : undefined;
    if (v2Only) throw new Error(`${v2Only} applies to ${MOBILENETV2} (imagenet, seed-cifar), not ${arch}`);
    if (activation !== undefined && family !== 'mobilenetv1') throw new Error(`--activation applies to ${MOBILENETV2} and mobilenetv1, not ${arch}`);
  }
  return definedOnly({ shortcut, activation, linearBottleneck });
}

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
  /** Paper ablation (Fig. 6b): where the shortcuts go (see ShortcutKind). */
  shortcut: ShortcutKind;
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
    activation: 'relu6', linearBottleneck: true, shortcut: 'bottleneck', bnEps: 1e-5, dropout: 0.2, padding: 'symmetric',
  },
  'seed-cifar': {
    family: MOBILENETV2, arch: 'seed-cifar', alpha: 1, resolution: 32, inChannels: 3, numClasses: 10,
    activation: 'relu', linearBottleneck: true, shortcut: 'bottleneck', bnEps: 1e-5, dropout: 0, padding: 'symmetric',
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
  if (typeof cfg.linearBottleneck !== 'boolean') invalidConfig('linearBottleneck must be a boolean');
  if (!SHORTCUTS.includes(cfg.shortcut)) invalidConfig(`shortcut must be ${SHORTCUTS.join(', ')}, got ${String(cfg.shortcut)}`);
}

/** A config from a plain object (a file's metadata, or an existing config with changes); files before the
 * family registry stored `{ arch, ... }` without `family`, files before `shortcut` a boolean `residual`. */
export function parseModelConfig(raw: Record<string, unknown>): ModelConfig {
  const { residual, ...rest } = raw;
  const r = rest as Partial<ModelConfig>;
  if (r.family !== undefined && r.family !== MOBILENETV2) throw new Error(`model config of family '${String(r.family)}' is not a ${MOBILENETV2} config`);
  if (!ARCHS.includes(r.arch as Arch)) throw new Error(`model config has unknown arch '${String(r.arch)}'`);
  if (residual !== undefined && r.shortcut === undefined) {
    if (typeof residual !== 'boolean') invalidConfig(`residual must be a boolean, got ${String(residual)}`);
    r.shortcut = residual ? 'bottleneck' : 'none';
  }
  return makeConfig(r.arch as Arch, r);
}
