/**
 * Architecture configuration: everything needed to rebuild a MobileNetV2 from data.
 * Stored as JSON in checkpoint and ONNX metadata, so a weights file alone rebuilds its model.
 */

/** One Table-2 row: expansion t, output channels c, repeats n, first stride s. */
export type StageSetting = readonly [t: number, c: number, n: number, s: number];

/** Metadata key holding the config as JSON, in safetensors and ONNX files alike. */
export const CONFIG_KEY = 'mnv2.config';

/** MobileNetV2: torchvision's `imagenet`, the seed's `seed-cifar`; MobileNetV1: `mobilenetv1` and its 32x32 variant. */
export type Arch = 'imagenet' | 'seed-cifar' | 'mobilenetv1' | 'mobilenetv1-cifar';
export type ActivationKind = 'relu' | 'relu6';
/** 'symmetric': PyTorch padding (k-1)/2. 'keras': TF 'same' padding, asymmetric for stride 2. */
export type PaddingMode = 'symmetric' | 'keras';

export interface ModelConfig {
  arch: Arch;
  /** Width multiplier α. */
  alpha: number;
  /** Input height = width. ImageNet: any multiple of 32. */
  resolution: number;
  inChannels: number;
  numClasses: number;
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
    arch: 'imagenet', alpha: 1, resolution: 224, inChannels: 3, numClasses: 1000,
    activation: 'relu6', linearBottleneck: true, residual: true, bnEps: 1e-5, dropout: 0.2, padding: 'symmetric',
  },
  'seed-cifar': {
    arch: 'seed-cifar', alpha: 1, resolution: 32, inChannels: 3, numClasses: 10,
    activation: 'relu', linearBottleneck: true, residual: true, bnEps: 1e-5, dropout: 0, padding: 'symmetric',
  },
  // linearBottleneck and residual are MobileNetV2's switches: V1 has neither bottleneck nor shortcut.
  mobilenetv1: {
    arch: 'mobilenetv1', alpha: 1, resolution: 224, inChannels: 3, numClasses: 1000,
    activation: 'relu6', linearBottleneck: true, residual: false, bnEps: 1e-5, dropout: 0, padding: 'symmetric',
  },
  'mobilenetv1-cifar': {
    arch: 'mobilenetv1-cifar', alpha: 1, resolution: 32, inChannels: 3, numClasses: 10,
    activation: 'relu6', linearBottleneck: true, residual: false, bnEps: 1e-5, dropout: 0, padding: 'symmetric',
  },
};

/** The paper an architecture implements, for titles and messages. */
export function familyName(arch: Arch): 'MobileNetV1' | 'MobileNetV2' {
  return arch === 'mobilenetv1' || arch === 'mobilenetv1-cifar' ? 'MobileNetV1' : 'MobileNetV2';
}

/** Every architecture name, for CLI choices and error messages. */
export const ARCHS = Object.keys(DEFAULTS) as Arch[];

/** A full config from an arch name and overrides; validates every field. */
export function makeConfig(arch: Arch, overrides: Partial<ModelConfig> = {}): ModelConfig {
  if (!ARCHS.includes(arch)) throw new Error(`unknown arch '${arch}' (expected ${ARCHS.join(', ')})`);
  const cfg: ModelConfig = { ...DEFAULTS[arch], ...stripUndefined(overrides), arch };
  validateConfig(cfg);
  return cfg;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export function validateConfig(cfg: ModelConfig): void {
  const bad = (msg: string): never => {
    throw new Error(`invalid model config: ${msg}`);
  };
  if (!(cfg.alpha > 0) || !Number.isFinite(cfg.alpha)) bad(`alpha must be a positive number, got ${cfg.alpha}`);
  if (!Number.isInteger(cfg.resolution) || cfg.resolution <= 0) bad(`resolution must be a positive integer, got ${cfg.resolution}`);
  if (cfg.arch === 'imagenet' && cfg.resolution % 32 !== 0) bad(`imagenet resolution must be a multiple of 32, got ${cfg.resolution}`);
  if (cfg.arch === 'seed-cifar' && cfg.resolution !== 32) bad(`seed-cifar resolution must be 32 (avg-pool 4 on the 4x4 map), got ${cfg.resolution}`);
  if (cfg.arch === 'mobilenetv1' && cfg.resolution % 32 !== 0) bad(`mobilenetv1 resolution must be a multiple of 32, got ${cfg.resolution}`);
  if (cfg.arch === 'mobilenetv1-cifar' && cfg.resolution % 8 !== 0) bad(`mobilenetv1-cifar resolution must be a multiple of 8, got ${cfg.resolution}`);
  // V1 widths are int(c * α): the 32-channel stem must keep at least one channel.
  if (familyName(cfg.arch) === 'MobileNetV1' && Math.trunc(32 * cfg.alpha) < 1) bad(`mobilenetv1 alpha must be at least 1/32, got ${cfg.alpha}`);
  if (!Number.isInteger(cfg.inChannels) || cfg.inChannels <= 0) bad(`inChannels must be a positive integer, got ${cfg.inChannels}`);
  if (!Number.isInteger(cfg.numClasses) || cfg.numClasses <= 0) bad(`numClasses must be a positive integer, got ${cfg.numClasses}`);
  if (cfg.activation !== 'relu' && cfg.activation !== 'relu6') bad(`activation must be relu or relu6, got ${cfg.activation}`);
  if (!(cfg.bnEps > 0)) bad(`bnEps must be positive, got ${cfg.bnEps}`);
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) bad(`dropout must be in [0, 1), got ${cfg.dropout}`);
  if (cfg.padding !== 'symmetric' && cfg.padding !== 'keras') bad(`padding must be symmetric or keras, got ${cfg.padding}`);
  if (typeof cfg.linearBottleneck !== 'boolean' || typeof cfg.residual !== 'boolean') bad('linearBottleneck and residual must be booleans');
}

/** Parse a config stored as JSON (checkpoint or ONNX metadata), filling defaults for missing fields. */
export function configFromJSON(json: string, source: string): ModelConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (e) {
    throw new Error(`${source}: model config metadata is not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null) throw new Error(`${source}: model config metadata is not an object`);
  const r = raw as Partial<ModelConfig>;
  if (!ARCHS.includes(r.arch as Arch)) throw new Error(`${source}: model config has unknown arch '${String(r.arch)}'`);
  try {
    return makeConfig(r.arch as Arch, r);
  } catch (e) {
    throw new Error(`${source}: ${(e as Error).message}`);
  }
}
