/**
 * The library API: `load()` a model once, then `classify` and `embed` images of any kind (see image-input.ts).
 *
 *   const model = await load({ weights: 'imagenet' });
 *   const top = await model.classify('cat.jpg', { topk: 3 });   // [{ className, index, probability }]
 *   const v = await model.embed('cat.jpg');                     // the 1280 pooled features
 *
 * Both engines run off the event loop: the native one on a libuv worker thread, ONNX Runtime on its own.
 */
import { existsSync } from 'node:fs';
import type { BaseConfig } from '../model/family.js';
import { loadModelFile } from '../io/weights.js';
import { NativeModel } from '../engine/native/model.js';
import { OrtModel } from '../engine/onnx/session.js';
import { exportOnnx } from '../engine/onnx/export.js';
import { resolveEngine, topK, type EngineName } from '../engine/classifier.js';
import type { LoadImageOptions, Preset } from '../data/preprocess.js';
import type { LabelSetName } from '../data/labels.js';
import { BUNDLED_MODEL, inputSpec } from './spec.js';
import { findWeights } from '../weights/catalog.js';
import { fetchWeights, resolveWeights } from '../weights/cache.js';
import { importKerasH5 } from '../io/keras.js';
import type { ModelInfo } from '../io/metadata.js';
import { featureGraph, globalPool, type Pooling } from '../model/features.js';
import { numel, producer, type Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import { imageTensor, type ImageInput } from './image-input.js';

export interface LoadOptions {
  /**
   * A weights file (.safetensors or .pth), or a name: `'fashion-mnist'` (the bundled model, the default),
   * `'imagenet'` (torchvision's ImageNet weights at α 1 @ 224, else Keras's), or any `mnv2 weights list` name
   * (downloaded into the per-user cache once, then offline).
   */
  weights?: string;
  /** For files without the project's metadata (PyTorch state dicts): what the keys and shapes do not tell. */
  /** A family or variant name (`mobilenetv2`, `imagenet`, `seed-cifar`). */
  arch?: string;
  alpha?: number;
  classes?: number;
  /** Input resolution (default: the file's, else 224 / 32). */
  resolution?: number;
  /** Default: native when the oneDNN addon is built, else ONNX Runtime. */
  engine?: EngineName;
  /** Threads of the engine (default: all cores). */
  threads?: number;
  /** Preprocessing preset (default: the file's, else torchvision for the ImageNet layout, seed-cifar for the seed). */
  preprocess?: string;
  /** Class names: a built-in list or the names (default: the file's, else ImageNet for 1000 torchvision classes). */
  labels?: LabelSetName | readonly string[];
  /** Invert pixel values before normalizing (photos of garments on white, for the Fashion-MNIST model). */
  invert?: boolean;
  /**
   * false: a feature extractor, like Keras's `include_top=False` — the model without its classifier (`classify`
   * throws), `embed` returns the `pooling` output. Takes any weights, also a `_no_top` catalogue name or a Keras
   * `.h5` file (imported in memory). Default true.
   */
  includeTop?: boolean;
  /** With `includeTop: false`: 'avg' (default) or 'max' global pooling, or 'none' for the last feature map [C, H, W]. */
  pooling?: Pooling;
}

export interface Classification {
  /** The class name, or the index as a string when the model has no names. */
  className: string;
  index: number;
  probability: number;
}

export interface Model {
  readonly config: BaseConfig;
  readonly engine: EngineName;
  /** Where the weights came from. */
  readonly source: string;
  /** The preprocessing images go through (size, crop, mean, std). */
  readonly preprocess: Preset;
  readonly labels: readonly string[] | undefined;
  /** Width of `embed`'s vectors: the pooled features the classifier reads (1280·max(1, α) for torchvision's layout). */
  readonly embeddingSize: number;
  /** Per-image shape of `embed`'s output: [C] pooled, or [C, H, W] for a feature extractor with `pooling: 'none'`. */
  readonly embeddingShape: readonly number[];
  /** The `topk` most probable classes (default 5), most probable first. */
  classify(image: ImageInput, opts?: { topk?: number }): Promise<Classification[]>;
  /** The pooled feature vector of an image (like tfjs-models' `infer(img, true)`); a feature map (CHW) with `pooling: 'none'`. */
  embed(image: ImageInput): Promise<Float32Array>;
  /** Logits and pooled features of a preprocessed NCHW batch. */
  forward(input: Float32Array, batch: number): Promise<{ logits: Float32Array; features: Float32Array }>;
  dispose(): Promise<void>;
}

/**
 * The catalogue entry (mnv2 weights list) that `weights: 'imagenet'` means at a width and resolution:
 * torchvision's IMAGENET1K_V1 at α 1 @ 224, else keras.applications' MobileNetV2 with its ImageNet top.
 */
export function imagenetWeightsName(alpha = 1, resolution = 224): string {
  if (alpha === 1 && resolution === 224) return 'torchvision/IMAGENET1K_V1';
  const name = `keras/mobilenet_v2_${Number.isInteger(alpha) ? alpha.toFixed(1) : String(alpha)}_${resolution}`;
  if (!findWeights(name)) throw new Error(`no pretrained ImageNet MobileNetV2 at alpha ${alpha}, ${resolution}px (mnv2 weights list shows the published ones)`);
  return name;
}

/**
 * A weights option → a model file: a path as it is, `'fashion-mnist'` the bundled model, `'imagenet'` or a
 * catalogue name the cached import of the published weights (downloaded and imported once, see src/weights).
 */
export async function weightsFile(weights: string, alpha?: number, resolution?: number): Promise<string> {
  if (existsSync(weights)) return weights;
  if (weights === 'fashion-mnist') return BUNDLED_MODEL;
  const name = weights === 'imagenet' ? imagenetWeightsName(alpha, resolution) : weights;
  if (findWeights(name)) return resolveWeights(name);
  throw new Error(`${weights}: no such weights file, and not a name (fashion-mnist, imagenet, or one of mnv2 weights list)`);
}

/**
 * The model a feature extractor is cut from: a `_no_top` catalogue name or a Keras .h5 file imported in memory (a
 * no-top import has no classifier to store in a model file), else any weights file or name as `load` reads it.
 */
async function featureSource(opts: LoadOptions): Promise<{ file: string; graph: Graph; weights: StateDict; info: Omit<ModelInfo, 'schema'> }> {
  const pooling = opts.pooling ?? 'avg';
  const name = opts.weights ?? 'fashion-mnist';
  const entry = findWeights(name);
  if ((entry && !entry.top) || (!entry && name.endsWith('.h5'))) {
    const file = entry ? (await fetchWeights(name)).file : name;
    const m = await importKerasH5(file, { alpha: opts.alpha ?? entry?.alpha, resolution: opts.resolution ?? entry?.resolution, includeTop: false, pooling });
    return { file, graph: m.graph, weights: m.weights, info: { config: m.graph.config, preprocess: 'keras' } };
  }
  const file = await weightsFile(name, opts.alpha, opts.resolution);
  const m = loadModelFile(file, { arch: opts.arch, alpha: opts.alpha, numClasses: opts.classes, resolution: opts.resolution });
  const graph = featureGraph(m.graph, pooling);
  const keep = new Set([...graph.params, ...graph.buffers].map((t) => t.name));
  return { file, graph, weights: new Map([...m.weights].filter(([k]) => keep.has(k))), info: { ...m.info, labels: undefined, classes: undefined } };
}

/** Load a model for classification and embeddings. */
export async function load(opts: LoadOptions = {}): Promise<Model> {
  if (opts.includeTop !== false && opts.pooling !== undefined) throw new Error("load: pooling applies to feature extractors only (includeTop: false)");
  const extractor = opts.includeTop === false;
  let file: string;
  let m: { graph: Graph; weights: StateDict; info: Omit<ModelInfo, 'schema'> };
  if (extractor) {
    ({ file, ...m } = await featureSource(opts));
  } else {
    file = await weightsFile(opts.weights ?? 'fashion-mnist', opts.alpha, opts.resolution);
    m = loadModelFile(file, { arch: opts.arch, alpha: opts.alpha, numClasses: opts.classes, resolution: opts.resolution });
  }
  const cfg = m.graph.config;
  const spec = inputSpec(m.info, extractor ? { preprocess: opts.preprocess } : opts);
  const engine = resolveEngine(opts.engine);
  let forward: Model['forward'];
  let release = async (): Promise<void> => {};
  if (engine === 'native') {
    const nm = new NativeModel(m.graph, m.weights, { threads: opts.threads });
    forward = (x, n) => nm.forward(x, n);
  } else if (engine === 'ort') {
    // A feature extractor's one output is its features.
    const om = await OrtModel.create(exportOnnx(m.graph, m.weights, { features: !extractor }), { threads: opts.threads });
    forward = async (x, n) => {
      const r = await om.forward(x, n);
      return { logits: r.logits, features: r.features ?? r.logits };
    };
    release = () => om.release();
  } else {
    throw new Error(`load: unknown engine '${String(engine)}' (expected native or ort)`);
  }
  const embeddingShape = (extractor ? producer(m.graph, m.graph.outputs[0]!.value) : globalPool(m.graph))!.shape;
  const imageOpts: LoadImageOptions = { invert: opts.invert };
  const run = async (image: ImageInput): Promise<{ logits: Float32Array; features: Float32Array }> =>
    forward(await imageTensor(image, spec.preset, imageOpts), 1);
  return {
    config: cfg,
    engine,
    source: file,
    preprocess: spec.preset,
    labels: extractor ? undefined : spec.labels,
    embeddingSize: numel(embeddingShape),
    embeddingShape,
    forward,
    async classify(image, o = {}) {
      if (extractor) throw new Error(`classify: ${file} was loaded as a feature extractor (includeTop: false), which has no classifier; use embed()`);
      const k = o.topk ?? 5;
      if (!Number.isInteger(k) || k < 1) throw new Error(`classify: topk must be a positive integer, got ${k}`);
      const { logits } = await run(image);
      return topK(logits, cfg.numClasses, 0, k).map((t) => ({ className: spec.labels?.[t.index] ?? String(t.index), index: t.index, probability: t.prob }));
    },
    async embed(image) {
      return (await run(image)).features;
    },
    dispose: () => release(),
  };
}
