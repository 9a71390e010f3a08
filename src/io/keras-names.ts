/**
 * Keras MobileNetV2 and MobileNet (V1) (keras.applications) -> this project's torchvision-style models: layer
 * names, TF -> PyTorch weight layouts, and the config Keras implies (TF 'same'/correct_pad padding, BN eps 1e-3,
 * ReLU6, no dropout). Shared by the .h5 and TF.js importers, which differ only in how they read tensors.
 */
import { makeConfig, type ModelConfig } from '../model/config.js';
import type { Graph } from '../model/graph.js';
import { TABLE1_PAIRS, makeV1Config, mobilenetV1Graph, type MobileNetV1Config } from '../model/mobilenetv1.js';
import { buildGraph } from '../model/mobilenetv2.js';
import { checkStateDict, initWeights, type StateDict } from '../model/weights.js';
import { stridedOffsets } from '../util/strided.js';
import { fail } from '../util/errors.js';

export interface KerasTensor {
  shape: number[];
  data: Float32Array;
}

/** Tensors by Keras layer name, then by weight kind (`kernel`, `depthwise_kernel`, `gamma`, `moving_mean`, ...). */
export type KerasWeights = Map<string, Map<string, KerasTensor>>;

/** What the caller knows beyond the tensors (from the file name, the topology or the command line). */
export interface KerasImportOptions {
  alpha?: number;
  /** Input size; default 224 (Keras weights run at any multiple of 32). */
  resolution?: number;
  /** Classes of a fresh head for a file without a top; must match the head when there is one. */
  numClasses?: number;
  /** Seed of the fresh head's init (torchvision's: N(0, 0.01) weights, zero bias). */
  seed?: number;
  /** Dropout before the classifier (Keras's own top has none). */
  dropout?: number;
}

/** The configs a Keras import builds: MobileNetV2's `imagenet` or MobileNetV1's `mobilenetv1`. */
export type KerasModelConfig = ModelConfig | MobileNetV1Config;
/** What Keras's files imply for the config, the same fields in both families. */
type KerasOverrides = Pick<KerasModelConfig, 'alpha' | 'resolution' | 'numClasses' | 'padding' | 'bnEps' | 'dropout'>;

export interface ImportedModel {
  graph: Graph<KerasModelConfig>;
  weights: StateDict;
  /** 'imported': the file's classifier; 'initialized': the file had no top, the head is freshly initialized. */
  head: 'imported' | 'initialized';
  /** Keras layer name of the imported classifier. */
  headLayer?: string;
}

type Kind = 'conv' | 'depthwise' | 'bn' | 'dense' | 'convHead';

interface LayerMapping {
  keras: string;
  /** State-dict prefix. */
  torch: string;
  kind: Kind;
}

interface WeightSpec {
  name: string;
  suffix: string;
  perm?: readonly number[];
  optional?: boolean;
  /** The PyTorch tensor is the 2-D [out, in] of a 1x1 conv kernel (a Conv2D classifier into our linear one). */
  linearOf1x1?: boolean;
}

/**
 * Each Keras weight of a layer kind: its state-dict suffix and the permutation taking the TF layout to
 * PyTorch's (torch dim j = TF dim perm[j]): conv HWIO -> OIHW, depthwise (kh, kw, C, 1) -> (C, 1, kh, kw),
 * dense (in, out) -> (out, in); a 1x1 Conv2D classifier (1, 1, in, out) -> (out, in, 1, 1), which is (out, in).
 */
const KIND_WEIGHTS: Record<Kind, readonly WeightSpec[]> = {
  conv: [{ name: 'kernel', suffix: 'weight', perm: [3, 2, 0, 1] }],
  depthwise: [{ name: 'depthwise_kernel', suffix: 'weight', perm: [2, 3, 0, 1] }],
  bn: [
    { name: 'gamma', suffix: 'weight' },
    { name: 'beta', suffix: 'bias' },
    { name: 'moving_mean', suffix: 'running_mean' },
    { name: 'moving_variance', suffix: 'running_var' },
  ],
  // A head built with use_bias: false has no bias; it is zero then.
  dense: [
    { name: 'kernel', suffix: 'weight', perm: [1, 0] },
    { name: 'bias', suffix: 'bias', optional: true },
  ],
  convHead: [
    { name: 'kernel', suffix: 'weight', perm: [3, 2, 0, 1], linearOf1x1: true },
    { name: 'bias', suffix: 'bias', optional: true },
  ],
};

/** What tells one Keras family from another and maps it onto ours. */
export interface KerasFamily {
  /** The keras.applications name, for messages. */
  name: 'MobileNetV2' | 'MobileNet';
  /** Our model with Keras's hyperparameters. */
  build(o: KerasOverrides): Graph<KerasModelConfig>;
  /** The widths Keras publishes weights for. */
  alphas: readonly number[];
  /** The conv/BN layers of the backbone, in model order, with our state-dict prefixes. */
  backbone: LayerMapping[];
  /** Some layer names, for the message on a file of neither family. */
  example: string;
  /** The ZeroPadding2D layer that Keras puts before `conv` when it is a stride-2 conv with 'valid' padding. */
  padLayer(conv: string): string | undefined;
}

export const KERAS_FAMILIES: readonly KerasFamily[] = [
  {
    name: 'MobileNetV2', build: (o) => buildGraph(makeConfig('imagenet', o)), alphas: [0.35, 0.5, 0.75, 1, 1.3, 1.4], backbone: mobilenetV2Layers(),
    example: 'Conv1, expanded_conv_depthwise, block_1_expand, ..., Conv_1',
    padLayer: (conv) => {
      if (conv === 'Conv1') return 'Conv1_pad';
      const block = /^(expanded_conv|block_\d+)_depthwise$/.exec(conv)?.[1];
      return block && `${block}_pad`;
    },
  },
  {
    name: 'MobileNet', build: (o) => mobilenetV1Graph(makeV1Config('mobilenetv1', o)), alphas: [0.25, 0.5, 0.75, 1], backbone: mobilenetV1Layers(),
    example: 'conv1, conv_dw_1, conv_pw_1, ..., conv_pw_13',
    padLayer: (conv) => {
      if (conv === 'conv1') return 'conv1_pad';
      const n = /^conv_dw_(\d+)$/.exec(conv)?.[1];
      return n && `conv_pad_${n}`;
    },
  },
];

/** keras.applications.MobileNet: conv1, then conv_dw_N / conv_pw_N (N = 1..13), each with its BN `<name>_bn`. */
function mobilenetV1Layers(): LayerMapping[] {
  const out: LayerMapping[] = [
    { keras: 'conv1', torch: 'features.0.0', kind: 'conv' },
    { keras: 'conv1_bn', torch: 'features.0.1', kind: 'bn' },
  ];
  for (let n = 1; n <= TABLE1_PAIRS.length; n++) {
    out.push(
      { keras: `conv_dw_${n}`, torch: `features.${n}.0.0`, kind: 'depthwise' },
      { keras: `conv_dw_${n}_bn`, torch: `features.${n}.0.1`, kind: 'bn' },
      { keras: `conv_pw_${n}`, torch: `features.${n}.1.0`, kind: 'conv' },
      { keras: `conv_pw_${n}_bn`, torch: `features.${n}.1.1`, kind: 'bn' },
    );
  }
  return out;
}

/** Keras's names of the conv/BN layers of MobileNetV2's backbone, in model order, with our state-dict prefixes. */
function mobilenetV2Layers(): LayerMapping[] {
  const out: LayerMapping[] = [
    { keras: 'Conv1', torch: 'features.0.0', kind: 'conv' },
    { keras: 'bn_Conv1', torch: 'features.0.1', kind: 'bn' },
    // Block 0 (t = 1) has no expand conv; Keras calls it expanded_conv.
    { keras: 'expanded_conv_depthwise', torch: 'features.1.conv.0.0', kind: 'depthwise' },
    { keras: 'expanded_conv_depthwise_BN', torch: 'features.1.conv.0.1', kind: 'bn' },
    { keras: 'expanded_conv_project', torch: 'features.1.conv.1', kind: 'conv' },
    { keras: 'expanded_conv_project_BN', torch: 'features.1.conv.2', kind: 'bn' },
  ];
  for (let b = 1; b <= 16; b++) {
    const k = `block_${b}_`;
    const t = `features.${b + 1}.conv`;
    out.push(
      { keras: `${k}expand`, torch: `${t}.0.0`, kind: 'conv' },
      { keras: `${k}expand_BN`, torch: `${t}.0.1`, kind: 'bn' },
      { keras: `${k}depthwise`, torch: `${t}.1.0`, kind: 'depthwise' },
      { keras: `${k}depthwise_BN`, torch: `${t}.1.1`, kind: 'bn' },
      { keras: `${k}project`, torch: `${t}.2`, kind: 'conv' },
      { keras: `${k}project_BN`, torch: `${t}.3`, kind: 'bn' },
    );
  }
  out.push({ keras: 'Conv_1', torch: 'features.18.0', kind: 'conv' }, { keras: 'Conv_1_bn', torch: 'features.18.1', kind: 'bn' });
  return out;
}

/**
 * The classifier's name in keras.applications: MobileNetV2 `predictions` (`Logits` in the published .h5 files),
 * a Dense layer; MobileNet `conv_preds`, a 1x1 Conv2D with bias on the pooled features.
 */
const HEAD_NAMES = ['Logits', 'predictions', 'conv_preds'];

/** A classifier kernel: a Dense (in, out) or a 1x1 Conv2D (1, 1, in, out). */
const headKind = (kernel: KerasTensor | undefined): Kind | undefined =>
  kernel?.shape.length === 2 ? 'dense' : kernel?.shape.length === 4 && kernel.shape[0] === 1 && kernel.shape[1] === 1 ? 'convHead' : undefined;

/**
 * (layer, weight kind) of a Keras/TF.js weight name: `Conv1/kernel:0`, `model/Conv1/kernel`, or a bare `kernel:0`
 * inside the layer `fallbackLayer`.
 */
export function splitWeightName(name: string, fallbackLayer?: string): [layer: string, kind: string] {
  const parts = name.replace(/:\d+$/, '').split('/');
  const kind = parts.pop()!;
  const layer = parts.pop() ?? fallbackLayer ?? '';
  return [layer, kind];
}

/** Copy of `data` (row-major, `shape`) with its axes permuted: out dim j = in dim perm[j]. */
export function permute(data: Float32Array, shape: readonly number[], perm: readonly number[]): Float32Array {
  const inStrides = new Array<number>(shape.length);
  for (let i = shape.length - 1, s = 1; i >= 0; i--) {
    inStrides[i] = s;
    s *= shape[i]!;
  }
  const src = stridedOffsets(perm.map((p) => shape[p]!), perm.map((p) => inStrides[p]!));
  const out = new Float32Array(data.length);
  for (let o = 0; o < out.length; o++) out[o] = data[src[o]!]!;
  return out;
}

/** TF shape of a tensor whose PyTorch shape is `torchShape` under the spec's permutation. */
function tfShape(torchShape: readonly number[], spec: WeightSpec): number[] {
  const { perm } = spec;
  if (!perm) return [...torchShape];
  if (spec.linearOf1x1) torchShape = [...torchShape, 1, 1];
  const s = new Array<number>(torchShape.length);
  perm.forEach((p, j) => (s[p] = torchShape[j]!));
  return s;
}

const fmt = (s: readonly number[]): string => `[${s.join(', ')}]`;

function listProblems(source: string, what: string, problems: string[]): Error {
  const more = problems.length > 12 ? `\n  ... and ${problems.length - 12} more` : '';
  return new Error(`${source}: ${what}:\n  ${problems.slice(0, 12).join('\n  ')}${more}`);
}

/** The family most of whose backbone layers the file has (none: an error naming both). */
function familyOf(layers: KerasWeights, source: string): KerasFamily {
  const score = (f: KerasFamily): number => f.backbone.filter((l) => layers.has(l.keras)).length;
  const best = KERAS_FAMILIES.reduce((a, b) => (score(b) > score(a) ? b : a));
  if (score(best) === 0) {
    const names = [...layers.keys()];
    throw new Error(
      `${source}: not a Keras MobileNetV2 or MobileNet: none of its layers has a MobileNetV2 name (${KERAS_FAMILIES[0]!.example}) ` +
        `or a MobileNet name (${KERAS_FAMILIES[1]!.example}); its layers with weights: ${names.slice(0, 8).join(', ') || 'none'}${names.length > 8 ? ', ...' : ''}`,
    );
  }
  return best;
}

/**
 * Build our model from Keras MobileNetV2 or MobileNet weights: tells the family from the layer names, infers
 * α (unless given) and the class count from the tensors, checks every layer and shape (naming each problem),
 * converts layouts. A file without a top needs `numClasses` and gets a freshly initialized classifier.
 */
export function kerasToModel(layers: KerasWeights, source: string, opts: KerasImportOptions = {}): ImportedModel {
  const family = familyOf(layers, source);
  const { backbone } = family;
  const known = new Set(backbone.map((l) => l.keras));
  const missing = backbone.filter((l) => !layers.has(l.keras)).map((l) => l.keras);
  if (missing.length) throw listProblems(source, `not a complete Keras ${family.name}, ${missing.length} layers missing`, missing);

  const extra = [...layers.keys()].filter((n) => !known.has(n));
  const heads = extra.filter((n) => HEAD_NAMES.includes(n) || headKind(layers.get(n)!.get('kernel')) !== undefined);
  const strays = extra.filter((n) => !heads.includes(n));
  if (strays.length || heads.length > 1) {
    const why = heads.length > 1 ? `more than one classifier (${heads.join(', ')}); ${family.name} has a single linear classifier` : `layers with weights that are not part of ${family.name}`;
    throw listProblems(source, why, strays.length ? strays : heads);
  }
  const headLayer = heads[0];
  const headKernel = headLayer ? layers.get(headLayer)!.get('kernel') : undefined;
  const head = headKind(headKernel);
  if (headLayer && !head) {
    fail(source, `classifier layer ${headLayer} has neither a 2-D (Dense) nor a 1x1 (Conv2D) kernel (got ${headKernel ? fmt(headKernel.shape) : 'none'})`);
  }
  let numClasses: number;
  if (headKernel) {
    numClasses = headKernel.shape.at(-1)!;
    if (opts.numClasses !== undefined && opts.numClasses !== numClasses) {
      throw new Error(
        `${source}: has a ${numClasses}-class head (${headLayer}); --classes ${opts.numClasses} only applies to files without a top ` +
          '(for another class count, fine-tune with mnv2 train --replace-classifier)',
      );
    }
  } else {
    if (opts.numClasses === undefined) {
      fail(source, `has no classifier (a no-top file); pass --classes N to add a freshly initialized N-class head (seeded by --seed) for fine-tuning`);
    }
    numClasses = opts.numClasses;
  }

  const graphFor = (alpha: number) =>
    family.build({ alpha, resolution: opts.resolution ?? 224, numClasses, padding: 'keras', bnEps: 1e-3, dropout: opts.dropout ?? 0 });
  const alpha = opts.alpha ?? inferAlpha(layers, family, graphFor);
  const graph = graphFor(alpha);

  const shapes = new Map([...graph.params, ...graph.buffers].map((t) => [t.name, t.shape]));
  const mappings: LayerMapping[] = headLayer && head ? [...backbone, { keras: headLayer, torch: 'classifier.1', kind: head }] : backbone;
  const weights: StateDict = new Map();
  const problems: string[] = [];
  for (const m of mappings) {
    const tensors = layers.get(m.keras)!;
    const specs = KIND_WEIGHTS[m.kind];
    for (const kind of tensors.keys()) {
      if (!specs.some((s) => s.name === kind)) problems.push(`${m.keras}: unexpected weight '${kind}' (a ${m.kind} layer has ${specs.map((s) => s.name).join(', ')})`);
    }
    for (const s of specs) {
      const name = `${m.torch}.${s.suffix}`;
      const want = tfShape(shapes.get(name)!, s);
      const t = tensors.get(s.name);
      if (!t) {
        if (s.optional) weights.set(name, new Float32Array(want.reduce((a, b) => a * b, 1)));
        else problems.push(`${m.keras}: missing weight '${s.name}' ${fmt(want)}`);
      } else if (t.shape.join() !== want.join()) {
        problems.push(`${m.keras} ${s.name}: expected ${fmt(want)}, got ${fmt(t.shape)}`);
      } else {
        weights.set(name, s.perm ? permute(t.data, t.shape, s.perm) : t.data);
      }
    }
  }
  if (problems.length) {
    const which = opts.alpha === undefined ? ' (the closest Keras width; pass --alpha for another)' : '';
    throw listProblems(source, `weights do not fit Keras ${family.name} α ${alpha}${which} with ${numClasses} classes`, problems);
  }

  if (!headLayer) {
    const init = initWeights(graph, opts.seed ?? 0);
    for (const p of ['classifier.1.weight', 'classifier.1.bias']) weights.set(p, init.get(p)!);
  }
  for (const b of graph.buffers) if (b.role === 'bn.num_batches_tracked') weights.set(b.name, new Float32Array(1));
  checkStateDict(graph, weights, source);
  return { graph, weights, head: headLayer ? 'imported' : 'initialized', headLayer };
}

/**
 * The Keras width whose backbone shapes match best (all of them, for an intact file; the stem alone cannot
 * tell, e.g. 0.35 and 0.5 both give 16 filters). A damaged file then gets its mismatches named under it.
 */
function inferAlpha(layers: KerasWeights, family: KerasFamily, graphFor: (alpha: number) => Graph): number {
  let best = family.alphas[0]!;
  let bestScore = -1;
  for (const alpha of family.alphas) {
    const shapes = new Map(graphFor(alpha).params.map((p) => [p.name, p.shape]));
    let score = 0;
    for (const m of family.backbone) {
      for (const s of KIND_WEIGHTS[m.kind]) {
        const want = shapes.get(`${m.torch}.${s.suffix}`);
        if (want && layers.get(m.keras)!.get(s.name)?.shape.join() === tfShape(want, s).join()) score++;
      }
    }
    if (score > bestScore) [best, bestScore] = [alpha, score];
  }
  return best;
}
