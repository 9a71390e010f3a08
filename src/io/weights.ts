/**
 * Model files: safetensors with PyTorch state-dict names. The project's own files carry the model's family and
 * config as metadata (src/io/metadata.ts), so a weights file alone rebuilds its model; a plain PyTorch state
 * dict (a .pth read directly, or a .safetensors converted from one) is recognised by its parameter names, with the arch (and
 * alpha) from the caller when the names do not tell.
 */
import { float32View, writeSafetensors, type WritableTensor } from './safetensors.js';
import { readTensorFile } from './tensor-file.js';
import { carriedInfo, decodeModelInfo, encodeModelInfo, CONFIG_KEY, type ModelInfo } from './metadata.js';
import type { BaseConfig } from '../model/family.js';
import type { ModelConfig } from '../model/config.js';
import { isMobileNetV2 } from '../model/mobilenetv2.js';
import { archNames, buildModel, detectFamily, familyOf, resolveArch } from '../model/registry.js';
import type { Graph } from '../model/graph.js';
import { checkStateDict, checkWeightValues, type StateDict } from '../model/weights.js';
import { fail } from '../util/errors.js';

export interface LoadedWeights<C extends BaseConfig = BaseConfig> {
  graph: Graph<C>;
  /** Float32 tensors of a safetensors file are views into the bytes read (one buffer per load, no copy). */
  weights: StateDict;
  /** Tensors in the file that are not model weights (e.g. `optim.*` in training checkpoints). */
  extra: Map<string, Float32Array>;
  metadata: Record<string, string>;
  /** The model as the metadata describes it (schema 0 and the detected config for a file without metadata). */
  info: ModelInfo;
}

/** What the caller knows about a file without metadata (a PyTorch state dict). */
export interface ArchHint {
  /** An `--arch` name: a family or one of its variants (`imagenet`, `seed-cifar`). */
  arch?: string;
  alpha?: number;
  numClasses?: number;
  resolution?: number;
  bnEps?: number;
}

/** Read a model file of any family and rebuild its model; every missing, unexpected or mis-shaped tensor is named. */
export function loadModelFile(path: string, hint: ArchHint = {}): LoadedWeights {
  const file = readTensorFile(path);
  const stored = decodeModelInfo(file.metadata, path);
  let info: ModelInfo;
  if (stored) {
    info = stored;
    // A caller may still override what does not change the weights (e.g. resolution).
    if (hint.resolution !== undefined) info = { ...info, config: familyOf(info.config).parseConfig({ ...info.config, resolution: hint.resolution }) };
  } else {
    info = { config: configFromKeys(path, file.tensors, hint), schema: 0, ...carriedInfo(file.metadata, path) };
  }
  const graph = buildModel(info.config);
  const expected = new Set([...graph.params, ...graph.buffers].map((t) => t.name));
  const weights: StateDict = new Map();
  const extra = new Map<string, Float32Array>();
  for (const [name, t] of file.tensors) {
    const data = float32View(t, name, path);
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
      fail(path, `${t.name} has shape [${got.join(', ')}], the model expects [${want.join(', ')}]`);
    }
  }
  checkWeightValues(graph, weights, path);
  return { graph, weights, extra, metadata: file.metadata, info };
}

/** {@link loadModelFile} for a MobileNetV2 file, typed as one; another family's file is an error. */
export function loadWeights(path: string, hint: ArchHint = {}): LoadedWeights<ModelConfig> {
  const m = loadModelFile(path, hint);
  if (!isMobileNetV2(m.graph)) fail(path, `a ${m.graph.config.family} model, not a MobileNetV2 (read it with loadModelFile)`);
  return m as LoadedWeights<ModelConfig>;
}

/**
 * The config of a state dict without metadata: family and variant from the parameter names, the class count
 * from the classifier, the width from the parameter shapes; the hint overrides each.
 */
function configFromKeys(path: string, tensors: ReadonlyMap<string, { shape: number[] }>, hint: ArchHint): BaseConfig {
  const { family, variant } = hint.arch !== undefined ? resolveArch(hint.arch) : (detectFamily(tensors) ?? {});
  if (!family || !variant) {
    fail(path, `no ${CONFIG_KEY} metadata and the keys match none of torchvision's or the seed's MobileNetV2 or MobileNetV1; pass --arch ${archNames().join('|')}`);
  }
  const classifier = family.detect(tensors)?.classifier;
  const base = { numClasses: hint.numClasses ?? (classifier ? tensors.get(classifier)?.shape[0] : undefined), resolution: hint.resolution, bnEps: hint.bnEps };
  const fitted = hint.alpha === undefined && family.fitShapes ? family.fitShapes(variant, base, tensors) : { alpha: hint.alpha };
  return family.makeConfig(variant, { ...base, ...fitted });
}

/**
 * Write weights (and optional extra tensors and metadata) atomically, with the model's metadata
 * (src/io/metadata.ts: schema, family, config; preprocess, labels, classes, source when `metadata` has them).
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
  writeSafetensors(path, tensors, { ...metadata, ...encodeModelInfo({ config: graph.config, ...carriedInfo(metadata, path) }) });
}
