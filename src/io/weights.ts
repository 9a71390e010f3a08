/**
 * Model files: safetensors with PyTorch state-dict names. The project's own files carry the architecture
 * config as JSON metadata (`mnv2.config`), so a weights file alone rebuilds its model; a plain PyTorch state
 * dict (converted with tools/pth-to-safetensors.py) needs the arch (and alpha) from the caller.
 */
import { readSafetensors, toFloat32, writeSafetensors, type WritableTensor } from './safetensors.js';
import { ARCHS, CONFIG_KEY, configFromJSON, familyName, makeConfig, type Arch, type ModelConfig } from '../model/config.js';
import { buildGraph } from '../model/mobilenetv2.js';
import type { Graph } from '../model/graph.js';
import { checkStateDict, type StateDict } from '../model/weights.js';

export interface LoadedWeights {
  graph: Graph;
  weights: StateDict;
  /** Tensors in the file that are not model weights (e.g. `optim.*` in training checkpoints). */
  extra: Map<string, Float32Array>;
  metadata: Record<string, string>;
}

/** What the caller knows about a file without metadata (a PyTorch state dict). */
export interface ArchHint {
  arch?: Arch;
  alpha?: number;
  numClasses?: number;
  resolution?: number;
  bnEps?: number;
}

const CLASSIFIER: Record<Arch, string> = {
  imagenet: 'classifier.1.weight', 'seed-cifar': 'linear.weight', mobilenetv1: 'classifier.1.weight', 'mobilenetv1-cifar': 'classifier.1.weight',
};

/** Read a weights file and rebuild its model; every missing, unexpected or mis-shaped tensor is named. */
export function loadWeights(path: string, hint: ArchHint = {}): LoadedWeights {
  const file = readSafetensors(path);
  let config: ModelConfig;
  const stored = file.metadata[CONFIG_KEY];
  if (stored !== undefined) {
    config = configFromJSON(stored, path);
    // A caller may still override what does not change the weights (e.g. resolution).
    if (hint.resolution !== undefined) config = makeConfig(config.arch, { ...config, resolution: hint.resolution });
  } else {
    const arch = hint.arch ?? guessArch(file.tensors);
    if (!arch) throw new Error(`${path}: no ${CONFIG_KEY} metadata and the keys match neither torchvision's nor the seed's MobileNetV2 nor MobileNetV1; pass --arch ${ARCHS.join('|')}`);
    const cls = file.tensors.get(CLASSIFIER[arch]);
    const numClasses = hint.numClasses ?? cls?.shape[0];
    const base = { numClasses, resolution: hint.resolution, bnEps: hint.bnEps };
    config = makeConfig(arch, { ...base, alpha: hint.alpha ?? detectAlpha(arch, base, file.tensors) });
  }
  const graph = buildGraph(config);
  const expected = new Set([...graph.params, ...graph.buffers].map((t) => t.name));
  const weights: StateDict = new Map();
  const extra = new Map<string, Float32Array>();
  for (const [name, t] of file.tensors) {
    const data = toFloat32(t, name, path);
    (expected.has(name) ? weights : extra).set(name, data);
  }
  // Unknown non-weight tensors are allowed only under the checkpoint prefixes.
  const stray = [...extra.keys()].filter((k) => !k.startsWith('optim.') && !k.startsWith('ema.') && !k.startsWith('train.'));
  checkStateDict(graph, new Map([...weights, ...stray.map((k) => [k, extra.get(k)!] as const)]), path, true);
  for (const t of [...graph.params, ...graph.buffers]) {
    const w = weights.get(t.name);
    const want = t.shape.length ? t.shape : [1];
    const got = file.tensors.get(t.name)?.shape ?? [];
    if (w && t.shape.length && got.join() !== want.join()) {
      throw new Error(`${path}: ${t.name} has shape [${got.join(', ')}], the model expects [${want.join(', ')}]`);
    }
  }
  return { graph, weights, extra, metadata: file.metadata };
}

/** The standard width multiplier whose parameter shapes all match the file (PyTorch files carry no config). */
function detectAlpha(arch: Arch, base: Partial<ModelConfig>, tensors: ReadonlyMap<string, { shape: number[] }>): number | undefined {
  const fits = (familyName(arch) === 'MobileNetV1' ? V1_ALPHAS : STANDARD_ALPHAS).filter((alpha) =>
    buildGraph(makeConfig(arch, { ...base, alpha })).params.every((p) => tensors.get(p.name)?.shape.join() === p.shape.join()),
  );
  return fits.length === 1 ? fits[0] : undefined;
}

const STANDARD_ALPHAS = [0.35, 0.5, 0.75, 1, 1.3, 1.4];
/** The widths of the MobileNetV1 paper (and of Keras's published weights). */
const V1_ALPHAS = [0.25, 0.5, 0.75, 1];

function guessArch(tensors: ReadonlyMap<string, unknown>): Arch | undefined {
  // MobileNetV1's pair 1 starts with its depthwise conv; torchvision's V2 block 1 is `features.1.conv...`.
  // Its CIFAR variant has the same tensors (only strides differ), so it needs --arch mobilenetv1-cifar.
  if (tensors.has('features.1.0.0.weight')) return 'mobilenetv1';
  if (tensors.has('features.0.0.weight')) return 'imagenet';
  if (tensors.has('conv1.weight') && tensors.has('layers.0.conv1.weight')) return 'seed-cifar';
  return undefined;
}

/**
 * Write weights (and optional extra tensors and metadata) atomically, with the config as metadata.
 * num_batches_tracked is stored as int64, like PyTorch.
 */
export function saveWeights(
  path: string,
  graph: Graph,
  weights: StateDict,
  extra: ReadonlyMap<string, Float32Array> = new Map(),
  metadata: Record<string, string> = {},
): void {
  const tensors = new Map<string, WritableTensor>();
  for (const t of [...graph.params, ...graph.buffers]) {
    const w = weights.get(t.name);
    if (!w) throw new Error(`saveWeights: missing ${t.name}`);
    if (t.role === 'bn.num_batches_tracked') {
      tensors.set(t.name, { dtype: 'I64', shape: [], data: BigInt64Array.of(BigInt(Math.round(w[0]!))) });
    } else {
      tensors.set(t.name, { dtype: 'F32', shape: [...t.shape], data: w });
    }
  }
  for (const [k, v] of extra) tensors.set(k, { dtype: 'F32', shape: [v.length], data: v });
  writeSafetensors(path, tensors, { ...metadata, [CONFIG_KEY]: JSON.stringify(graph.config) });
}
