/**
 * MobileNetV1 (Howard et al. 2017) as a layer graph, line by line after Table 1: a full 3x3 conv, 13
 * depthwise-separable pairs (3x3 depthwise conv + BN + ReLU6, 1x1 pointwise conv + BN + ReLU6, no shortcuts),
 * global average pool, fully connected. State-dict keys in torchvision's style (tools/mobilenet_v1.py):
 * `features.0.{0,1}` the stem conv/BN, `features.N.0.{0,1}` pair N's depthwise conv/BN, `features.N.1.{0,1}` its
 * pointwise conv/BN, `classifier.1` the linear layer.
 *  - `mobilenetv1`: the ImageNet network (stride 32 in all).
 *  - `mobilenetv1-cifar`: the same layers for 32x32 input, with the strides the seed's CIFAR MobileNetV2
 *    changes set to 1 (the stem and the first stride-2 pair), so 32x32 ends at 4x4 like the seed's.
 */
import { GraphBuilder, type HeadLayer, type LayerStyle } from './builder.js';
import { definedOnly, fitAlpha, type BaseConfig, type ModelFamily } from './family.js';
import type { Graph } from './graph.js';
import { checkSharedFields, invalidConfig } from './validate.js';

export const MOBILENETV1 = 'mobilenetv1';
export const V1_VARIANTS = ['mobilenetv1', 'mobilenetv1-cifar'] as const;
export type V1Variant = (typeof V1_VARIANTS)[number];

export interface MobileNetV1Config extends BaseConfig, LayerStyle {
  family: typeof MOBILENETV1;
  variant: V1Variant;
  /** Width multiplier α: every layer has int(c * α) channels. */
  alpha: number;
  /** Dropout before the classifier (the paper: none). */
  dropout: number;
  /** Hidden layers between the pool and the final linear (a Keras/TF.js Dense stack); absent: one linear. */
  head?: readonly HeadLayer[];
}

/** One Table-1 pair after the stem: depthwise stride s, pointwise output channels c. */
export type PairSetting = readonly [s: number, c: number];

/**
 * Table 1's 13 depthwise-separable pairs. The table prints the last depthwise conv as s2, but its input and
 * output are both 7x7; it is stride 1, as in the paper's own 569M multiply-adds and every implementation.
 */
export const TABLE1_PAIRS: readonly PairSetting[] = [
  [1, 64],
  [2, 128],
  [1, 128],
  [2, 256],
  [1, 256],
  [2, 512],
  [1, 512], [1, 512], [1, 512], [1, 512], [1, 512],
  [2, 1024],
  [1, 1024],
];

export function mobilenetV1Graph(cfg: MobileNetV1Config): Graph<MobileNetV1Config> {
  const b = new GraphBuilder(cfg);
  const cifar = cfg.variant === 'mobilenetv1-cifar';
  // Width α: αM channels, truncated (the paper's αM, keras.applications.MobileNet's int(c * α)).
  const width = (c: number): number => Math.trunc(c * cfg.alpha);
  let inC = width(32);
  const stemStride = cifar ? 1 : 2;

  b.beginRow('features.0', 'conv2d 3x3', b.g.input, { c: inC, n: 1, s: stemStride });
  let x = b.convBnAct('features.0.0', 'features.0.1', b.g.input, inC, 3, stemStride);

  const firstS2 = TABLE1_PAIRS.findIndex(([s]) => s === 2);
  TABLE1_PAIRS.forEach(([s, c], i) => {
    const stride = cifar && i === firstS2 ? 1 : s;
    const outC = width(c);
    const p = `features.${i + 1}`;
    b.beginRow(p, 'conv dw 3x3 + conv 1x1', x, { c: outC, n: 1, s: stride });
    x = b.convBnAct(`${p}.0.0`, `${p}.0.1`, x, inC, 3, stride, inC);
    x = b.convBnAct(`${p}.1.0`, `${p}.1.1`, x, outC, 1, 1);
    inC = outC;
  });

  b.torchvisionHead(x, cfg.dropout, cfg.head);
  return b.g;
}

const DEFAULTS: Record<V1Variant, MobileNetV1Config> = {
  mobilenetv1: {
    family: MOBILENETV1, variant: 'mobilenetv1', alpha: 1, resolution: 224, inChannels: 3, numClasses: 1000,
    activation: 'relu6', bnEps: 1e-5, dropout: 0, padding: 'symmetric',
  },
  'mobilenetv1-cifar': {
    family: MOBILENETV1, variant: 'mobilenetv1-cifar', alpha: 1, resolution: 32, inChannels: 3, numClasses: 10,
    activation: 'relu6', bnEps: 1e-5, dropout: 0, padding: 'symmetric',
  },
};

/** A full MobileNetV1 config from a variant and overrides; validates every field. */
export function makeV1Config(variant: V1Variant = 'mobilenetv1', overrides: Partial<MobileNetV1Config> = {}): MobileNetV1Config {
  if (!V1_VARIANTS.includes(variant)) throw new Error(`unknown MobileNetV1 variant '${String(variant)}' (expected ${V1_VARIANTS.join(' or ')})`);
  const cfg: MobileNetV1Config = { ...DEFAULTS[variant], ...definedOnly(overrides), family: MOBILENETV1, variant };
  validate(cfg);
  return cfg;
}

function validate(cfg: MobileNetV1Config): void {
  checkSharedFields(cfg);
  // Widths are int(c * α): the 32-channel stem must keep at least one channel.
  if (Math.trunc(32 * cfg.alpha) < 1) invalidConfig(`mobilenetv1 alpha must be at least 1/32, got ${cfg.alpha}`);
  const stride = cfg.variant === 'mobilenetv1' ? 32 : 8;
  if (cfg.resolution % stride !== 0) invalidConfig(`${cfg.variant} resolution must be a multiple of ${stride}, got ${cfg.resolution}`);
}

/** Convenience: a graph from a variant and overrides. */
export function mobilenetV1(variant: V1Variant = 'mobilenetv1', overrides: Partial<MobileNetV1Config> = {}): Graph<MobileNetV1Config> {
  return mobilenetV1Graph(makeV1Config(variant, overrides));
}

/** The paper's widths (and Keras's published ones), tried in turn on a file without metadata. */
const V1_ALPHAS = [0.25, 0.5, 0.75, 1];

export const mobilenetV1Family: ModelFamily<MobileNetV1Config> = {
  name: MOBILENETV1,
  variants: V1_VARIANTS,
  makeConfig: (variant, overrides) => makeV1Config(variant as V1Variant | undefined, overrides),
  parseConfig: (raw) => {
    if (raw['family'] !== MOBILENETV1) throw new Error(`model config of family '${String(raw['family'])}' is not a ${MOBILENETV1} config`);
    if (!V1_VARIANTS.includes(raw['variant'] as V1Variant)) throw new Error(`model config has unknown ${MOBILENETV1} variant '${String(raw['variant'])}'`);
    return makeV1Config(raw['variant'] as V1Variant, raw as Partial<MobileNetV1Config>);
  },
  build: mobilenetV1Graph,
  defaultPreprocess: (c) => (c.variant === 'mobilenetv1' ? 'torchvision' : 'seed-cifar'),
  defaultLabels: (c) => {
    if (c.variant === 'mobilenetv1' && c.numClasses === 1000) return 'imagenet';
    if (c.variant === 'mobilenetv1-cifar' && c.numClasses === 10) return 'cifar10';
    return undefined;
  },
  describe: (c) => `MobileNetV1 ${c.variant}, alpha ${c.alpha}, ${c.resolution}x${c.resolution}x${c.inChannels}, ${c.numClasses} classes, ${c.activation}`,
  // Pair 1 starts with its depthwise conv. Both variants have the same tensors (only strides differ), so a
  // state dict reads as the ImageNet one; a 32x32 one needs --arch mobilenetv1-cifar.
  detect: (tensors) => (tensors.has('features.1.0.0.weight') ? { variant: 'mobilenetv1', classifier: 'classifier.1.weight' } : undefined),
  paperMemory: (c) => (c.variant === 'mobilenetv1' && c.alpha === 1 && c.resolution === 224 ? '800K' : undefined),
  fitShapes: (variant, base, tensors) => ({ alpha: fitAlpha(V1_ALPHAS, (alpha) => mobilenetV1(variant as V1Variant, { ...base, alpha }), tensors) }),
};
