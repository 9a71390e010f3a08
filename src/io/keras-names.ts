/**
 * Keras MobileNetV2 (keras.applications.MobileNetV2) -> this project's torchvision-style model: layer names,
 * TF -> PyTorch weight layouts, and the config Keras implies (TF 'same'/correct_pad padding, BN eps 1e-3,
 * ReLU6, no dropout). Shared by the .h5 and TF.js importers, which differ only in how they read tensors.
 */
import { makeConfig, type ModelConfig } from '../model/config.js';
import type { Graph } from '../model/graph.js';
import { buildGraph } from '../model/mobilenetv2.js';
import { checkStateDict, initWeights, type StateDict } from '../model/weights.js';

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

export interface ImportedModel {
  graph: Graph<ModelConfig>;
  weights: StateDict;
  /** 'imported': the file's classifier; 'initialized': the file had no top, the head is freshly initialized. */
  head: 'imported' | 'initialized';
  /** Keras layer name of the imported classifier. */
  headLayer?: string;
}

/** The widths Keras publishes weights for. */
export const KERAS_ALPHAS = [0.35, 0.5, 0.75, 1, 1.3, 1.4];

type Kind = 'conv' | 'depthwise' | 'bn' | 'dense';

interface LayerMapping {
  keras: string;
  /** State-dict prefix. */
  torch: string;
  kind: Kind;
}

/**
 * Each Keras weight of a layer kind: its state-dict suffix and the permutation taking the TF layout to
 * PyTorch's (torch dim j = TF dim perm[j]): conv HWIO -> OIHW, depthwise (kh, kw, C, 1) -> (C, 1, kh, kw),
 * dense (in, out) -> (out, in).
 */
const KIND_WEIGHTS: Record<Kind, readonly { name: string; suffix: string; perm?: readonly number[]; optional?: boolean }[]> = {
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
};

/** Keras's names of the conv/BN layers of MobileNetV2's backbone, in model order, with our state-dict prefixes. */
export function backboneLayers(): LayerMapping[] {
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

/** The classifier's name in keras.applications (`predictions`) and in the published .h5 files (`Logits`). */
const HEAD_NAMES = ['Logits', 'predictions'];

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
  const n = shape.length;
  const inStrides = new Array<number>(n);
  for (let i = n - 1, s = 1; i >= 0; i--) {
    inStrides[i] = s;
    s *= shape[i]!;
  }
  const outShape = perm.map((p) => shape[p]!);
  const strides = perm.map((p) => inStrides[p]!);
  const out = new Float32Array(data.length);
  const idx = new Array<number>(n).fill(0);
  let src = 0;
  for (let o = 0; o < out.length; o++) {
    out[o] = data[src]!;
    // Odometer over the output index, tracking the source offset.
    for (let j = n - 1; j >= 0; j--) {
      idx[j]!++;
      src += strides[j]!;
      if (idx[j]! < outShape[j]!) break;
      src -= strides[j]! * outShape[j]!;
      idx[j] = 0;
    }
  }
  return out;
}

/** TF shape of a tensor whose PyTorch shape is `torchShape` under `perm`. */
function tfShape(torchShape: readonly number[], perm: readonly number[] | undefined): number[] {
  if (!perm) return [...torchShape];
  const s = new Array<number>(torchShape.length);
  perm.forEach((p, j) => (s[p] = torchShape[j]!));
  return s;
}

const fmt = (s: readonly number[]): string => `[${s.join(', ')}]`;

function listProblems(source: string, what: string, problems: string[]): Error {
  const more = problems.length > 12 ? `\n  ... and ${problems.length - 12} more` : '';
  return new Error(`${source}: ${what}:\n  ${problems.slice(0, 12).join('\n  ')}${more}`);
}

/**
 * Build our model from Keras MobileNetV2 weights: infers α (unless given) and the class count from the
 * tensors, checks every layer and shape (naming each problem), converts layouts. A file without a top
 * needs `numClasses` and gets a freshly initialized classifier.
 */
export function kerasToModel(layers: KerasWeights, source: string, opts: KerasImportOptions = {}): ImportedModel {
  const backbone = backboneLayers();
  const known = new Set(backbone.map((l) => l.keras));
  const present = backbone.filter((l) => layers.has(l.keras));
  if (present.length === 0) {
    const names = [...layers.keys()];
    throw new Error(
      `${source}: not a Keras MobileNetV2: none of its layers has a MobileNetV2 name (Conv1, expanded_conv_depthwise, block_1_expand, ..., Conv_1)` +
        `; its layers with weights: ${names.slice(0, 8).join(', ') || 'none'}${names.length > 8 ? ', ...' : ''}`,
    );
  }
  const missing = backbone.filter((l) => !layers.has(l.keras)).map((l) => l.keras);
  if (missing.length) throw listProblems(source, `not a complete Keras MobileNetV2, ${missing.length} layers missing`, missing);

  const extra = [...layers.keys()].filter((n) => !known.has(n));
  const heads = extra.filter((n) => HEAD_NAMES.includes(n) || layers.get(n)!.get('kernel')?.shape.length === 2);
  const strays = extra.filter((n) => !heads.includes(n));
  if (strays.length || heads.length > 1) {
    const why = heads.length > 1 ? `more than one dense head (${heads.join(', ')}); MobileNetV2 has a single linear classifier` : 'layers with weights that are not part of MobileNetV2';
    throw listProblems(source, why, strays.length ? strays : heads);
  }
  const headLayer = heads[0];
  const headKernel = headLayer ? layers.get(headLayer)!.get('kernel') : undefined;
  if (headLayer && headKernel?.shape.length !== 2) {
    throw new Error(`${source}: classifier layer ${headLayer} has no 2-D kernel (got ${headKernel ? fmt(headKernel.shape) : 'none'})`);
  }
  let numClasses: number;
  if (headKernel) {
    numClasses = headKernel.shape[1]!;
    if (opts.numClasses !== undefined && opts.numClasses !== numClasses) {
      throw new Error(
        `${source}: has a ${numClasses}-class head (${headLayer}); --classes ${opts.numClasses} only applies to files without a top ` +
          '(for another class count, fine-tune with mnv2 train --replace-classifier)',
      );
    }
  } else {
    if (opts.numClasses === undefined) {
      throw new Error(`${source}: has no classifier (a no-top file); pass --classes N to add a freshly initialized N-class head (seeded by --seed) for fine-tuning`);
    }
    numClasses = opts.numClasses;
  }

  const configFor = (alpha: number) =>
    makeConfig('imagenet', { alpha, resolution: opts.resolution ?? 224, numClasses, padding: 'keras', bnEps: 1e-3, dropout: opts.dropout ?? 0 });
  const alpha = opts.alpha ?? inferAlpha(layers, backbone, (a) => buildGraph(configFor(a)));
  const graph = buildGraph(configFor(alpha));

  const shapes = new Map([...graph.params, ...graph.buffers].map((t) => [t.name, t.shape]));
  const mappings: LayerMapping[] = headLayer ? [...backbone, { keras: headLayer, torch: 'classifier.1', kind: 'dense' }] : backbone;
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
      const want = tfShape(shapes.get(name)!, s.perm);
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
    throw listProblems(source, `weights do not fit Keras MobileNetV2 α ${alpha}${which} with ${numClasses} classes`, problems);
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
function inferAlpha(layers: KerasWeights, backbone: LayerMapping[], graphFor: (alpha: number) => Graph): number {
  let best = KERAS_ALPHAS[0]!;
  let bestScore = -1;
  for (const alpha of KERAS_ALPHAS) {
    const shapes = new Map(graphFor(alpha).params.map((p) => [p.name, p.shape]));
    let score = 0;
    for (const m of backbone) {
      for (const s of KIND_WEIGHTS[m.kind]) {
        const want = shapes.get(`${m.torch}.${s.suffix}`);
        if (want && layers.get(m.keras)!.get(s.name)?.shape.join() === tfShape(want, s.perm).join()) score++;
      }
    }
    if (score > bestScore) [best, bestScore] = [alpha, score];
  }
  return best;
}
