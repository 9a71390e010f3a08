/**
 * An SSDLite-MobileNetV2 frozen graph exported by the TF Object Detection API (`frozen_inference_graph.pb`) →
 * this project's `ssdlite` model. The graph keeps BN unfolded: each conv's variables are Consts named
 * `<scope>/weights` (HWIO) or `<scope>/depthwise_weights` ([kh, kw, C, 1]), `<scope>/BatchNorm/{gamma, beta,
 * moving_mean, moving_variance}`, and `<scope>/biases` on the predictors' 1x1 convs
 * (/work/shared/data/detection/ssdlite-mobilenetv2-coco-layout.md). TF scope ↔ parameter name is
 * tflite-ssdlite.ts's ssdliteNamesOf; the width multiplier is the one whose shapes all match, the class count
 * comes from the class head, the input size from the preprocessor's resize (else a fixed-size input, else 300).
 * The conv and BN ops that use the variables are checked for TF 'SAME' padding, NHWC, the model's strides and
 * BN epsilon 1e-3.
 */
import { attrOf, constValue, inputNode, intsAttr, readTfGraph, shapeDims, stringAttr, throughIdentity, type TfGraph, type TfNode } from './tf-graph.js';
import { ALPHAS, ssdliteNamesOf } from './tflite-ssdlite.js';
import { permute } from './keras-names.js';
import { encodeModelInfo, POSTPROCESS_KEY } from './metadata.js';
import { saveWeights } from './weights.js';
import { ANCHORS_PER_LOCATION, buildSsdlite, EXTRA_DEPTHS, makeSsdliteConfig, type SsdliteConfig } from '../model/ssdlite.js';
import type { ConvNode, Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import { failFor } from '../util/errors.js';

/** TF OD API's default input size (fixed_shape_resizer 300x300), used when the graph does not say. */
export const DEFAULT_RESOLUTION = 300;
const BN_VARS = [['gamma', 'weight'], ['beta', 'bias'], ['moving_mean', 'running_mean'], ['moving_variance', 'running_var']] as const;
/** Classes of the TF OD API's COCO models: the mscoco label map's ids 1..90. */
const COCO_CLASSES = 90;

/** The TF scopes of an SSDLite-MobileNetV2 of width α, as the TF OD API names them (extras carry their depths). */
export function tfSsdliteScopes(alpha: number): string[] {
  const depth = (d: number) => Math.max(Math.floor(d * alpha), 16); // TF's depth_fn with min_depth 16
  const blocks = Array.from({ length: 17 }, (_, i) => `expanded_conv${i ? `_${i}` : ''}`);
  const backbone = ['Conv', ...blocks.flatMap((b, i) => [...(i ? [`${b}/expand`] : []), `${b}/depthwise`, `${b}/project`]), 'Conv_1'];
  const extras = EXTRA_DEPTHS.flatMap((d, j) => {
    const i = j + 2;
    return [`layer_19_1_Conv2d_${i}_1x1_${depth(d / 2)}`, `layer_19_2_Conv2d_${i}_3x3_s2_${depth(d)}_depthwise`, `layer_19_2_Conv2d_${i}_3x3_s2_${depth(d)}`];
  });
  const heads = ANCHORS_PER_LOCATION.flatMap((_, i) => ['BoxEncodingPredictor', 'ClassPredictor'].flatMap((p) => [`BoxPredictor_${i}/${p}_depthwise`, `BoxPredictor_${i}/${p}`]));
  return [...[...backbone, ...extras].map((s) => `FeatureExtractor/MobilenetV2/${s}`), ...heads];
}

/** Our conv name → its TF scope (through ssdliteNamesOf, the one mapping). */
export function tfScopesByConv(alpha: number): Map<string, string> {
  return new Map(tfSsdliteScopes(alpha).map((s) => [ssdliteNamesOf(s)!.conv, s]));
}

/** A conv's TF variable: name and TF shape. */
export function tfConvVariable(n: ConvNode, scope: string): { name: string; shape: number[] } {
  const dw = n.groups > 1;
  return { name: `${scope}/${dw ? 'depthwise_weights' : 'weights'}`, shape: dw ? [n.k, n.k, n.inC, 1] : [n.k, n.k, n.inC, n.outC] };
}

export interface TfGraphSsdliteImport {
  graph: Graph<SsdliteConfig>;
  weights: StateDict;
  /** The input size and where it came from. */
  resolution: { value: number; from: string };
  /** The post-processing constants the graph holds (postprocessOf), when it has any. */
  postprocess?: Record<string, number>;
}

/** Import an SSDLite-MobileNetV2 detector from a TF OD API frozen graph. */
export function importTfGraphSsdlite(file: string): TfGraphSsdliteImport {
  const g = readTfGraph(file);
  const fail = failFor(file);
  const consts = new Map(g.nodes.filter((n) => n.op === 'Const').map((n) => [n.name, n]));
  const shapeOf = (name: string) => {
    const n = consts.get(name);
    return n && shapeDims(attrOf(n, 'value')?.tensor?.tensorShape, fail);
  };
  const cls = 'BoxPredictor_0/ClassPredictor/weights';
  const cs = shapeOf(cls) ?? fail(`missing variable ${cls} (the class head, [1, 1, C, ${ANCHORS_PER_LOCATION[0]}·(classes + 1)]): not a TF OD API SSDLite-MobileNetV2 graph`);
  const numClasses = (cs[3] ?? 0) / ANCHORS_PER_LOCATION[0] - 1;
  if (cs.length !== 4 || !Number.isInteger(numClasses) || numClasses < 1) fail(`${cls} has shape [${cs}], not [1, 1, C, ${ANCHORS_PER_LOCATION[0]}·(classes + 1)]`);
  const resolution = resolutionOf(g, file);
  if (resolution.value < 129) fail(`input size ${resolution.value} (${resolution.from}) is below SSDLite's minimum 129`);
  const { graph, scopes } = fit(resolution.value, numClasses, shapeOf, fail);

  const used = new Set<string>();
  const value = (name: string, shape: readonly number[]): Float32Array => {
    const n = consts.get(name) ?? fail(`missing variable ${name} (expected shape [${shape}])`);
    const s = shapeOf(name)!;
    if (s.join() !== shape.join()) fail(`variable ${name} has shape [${s}], expected [${shape}]`);
    const v = constValue(n, file);
    used.add(name);
    return v.data instanceof Float32Array ? v.data : fail(`variable ${name} is an integer tensor, expected float`);
  };
  const weights: StateDict = new Map();
  for (const n of graph.nodes) {
    if (n.op !== 'conv') continue;
    const scope = scopes.get(n.name)!;
    const v = tfConvVariable(n, scope);
    // HWIO → OIHW; depthwise [H, W, C, 1] → [C, 1, H, W]
    weights.set(`${n.name}.weight`, permute(value(v.name, v.shape), v.shape, n.groups > 1 ? [2, 3, 0, 1] : [3, 2, 0, 1]));
    if (n.bias) {
      weights.set(`${n.name}.bias`, value(`${scope}/biases`, [n.outC]));
      continue;
    }
    const bn = ssdliteNamesOf(scope)!.bn!;
    for (const [tf, ours] of BN_VARS) weights.set(`${bn}.${ours}`, value(`${scope}/BatchNorm/${tf}`, [n.outC]));
    weights.set(`${bn}.num_batches_tracked`, new Float32Array(1));
  }
  const unmapped = [...consts.keys()].filter((k) => /^(FeatureExtractor\/MobilenetV2|BoxPredictor_\d+)\/.+\/(depthwise_)?weights$/.test(k) && !used.has(k));
  if (unmapped.length) fail(`conv variables this SSDLite-MobileNetV2 does not have: ${unmapped.slice(0, 5).join(', ')}${unmapped.length > 5 ? ` and ${unmapped.length - 5} more` : ''}`);
  checkOps(g, graph, scopes, used, fail);
  const postprocess = postprocessOf(g, file);
  return { graph, weights, resolution, ...(postprocess ? { postprocess } : {}) };
}

/** A scalar Const (through Identity) a node reads at input i, else undefined. */
function scalarInput(g: TfGraph, n: TfNode | undefined, i: number, file: string): number | undefined {
  const c = n && throughIdentity(g, inputNode(g, n.input[i] ?? ''));
  if (c?.op !== 'Const') return undefined;
  const v = constValue(c, file).data;
  return v.length === 1 ? v[0] : undefined;
}

/**
 * The TF OD API post-processing constants of an exported graph, under TFLite_Detection_PostProcess's option names
 * (what `detect` reads from an imported TFLite file): the box coder's scales are the divisors of
 * `Postprocessor/Decode/div`..`div_3` (ty, tx, th, tw), the NMS IoU and score thresholds and the per-class maximum
 * are inputs of the NonMaxSuppressionV2..V5 op under `Postprocessor/` (a V2 has its score threshold in the
 * `FilterGreaterThan/Greater` before it). Undefined when the graph has none of them (its Postprocessor was stripped).
 */
export function postprocessOf(g: TfGraph, file: string): Record<string, number> | undefined {
  const fail = failFor(file);
  const out: Record<string, number> = {};
  const divs = ['div', 'div_1', 'div_2', 'div_3'].map((d) => g.byName.get(`Postprocessor/Decode/${d}`) ?? g.byName.get(`Postprocessor/Decode/true${d}`));
  const scales = divs.map((n) => (n && /^(Real)?Div$/.test(n.op) ? scalarInput(g, n, 1, file) : undefined));
  if (scales.every((v) => v !== undefined)) {
    scales.forEach((v, i) => (Number.isFinite(v) && v! > 0) || fail(`${divs[i]!.name}: box coder scale ${v} is not a positive number`));
    [out['y_scale'], out['x_scale'], out['h_scale'], out['w_scale']] = scales as number[];
  }
  const nms = g.nodes.find((n) => /^NonMaxSuppressionV[2-5]$/.test(n.op) && n.name.startsWith('Postprocessor/'));
  if (nms) {
    const iou = scalarInput(g, nms, 3, file);
    const greater = g.nodes.find((n) => n.op === 'Greater' && n.name.startsWith('Postprocessor/') && n.name.endsWith('FilterGreaterThan/Greater'));
    const score = nms.op === 'NonMaxSuppressionV2' ? scalarInput(g, greater, 1, file) : scalarInput(g, nms, 4, file);
    const perClass = scalarInput(g, nms, 2, file);
    if (iou !== undefined) out['nms_iou_threshold'] = iou >= 0 && iou <= 1 ? iou : fail(`${nms.name}: IoU threshold ${iou} is outside [0, 1]`);
    if (score !== undefined) out['nms_score_threshold'] = Number.isFinite(score) ? score : fail(`${nms.name}: score threshold ${score} is not a number`);
    if (perClass !== undefined) out['detections_per_class'] = Number.isInteger(perClass) && perClass > 0 ? perClass : fail(`${nms.name}: max_output_size ${perClass} is not a positive integer`);
  }
  return Object.keys(out).length ? out : undefined;
}

/** The width multiplier whose conv shapes all match the file; else an error naming the closest one's problems. */
function fit(
  resolution: number, numClasses: number, shapeOf: (name: string) => number[] | undefined, fail: (msg: string) => never,
): { graph: Graph<SsdliteConfig>; scopes: Map<string, string> } {
  let best: { alpha: number; problems: string[] } | undefined;
  for (const alpha of ALPHAS) {
    const graph = buildSsdlite(makeSsdliteConfig({ alpha, resolution, numClasses, ssdStyle: 'tf' })); // TF's box code order, sigmoid scores
    const scopes = tfScopesByConv(alpha);
    const problems: string[] = [];
    for (const n of graph.nodes) {
      if (n.op !== 'conv') continue;
      const v = tfConvVariable(n, scopes.get(n.name)!);
      const s = shapeOf(v.name);
      if (!s) problems.push(`missing variable ${v.name} (expected shape [${v.shape}])`);
      else if (s.join() !== v.shape.join()) problems.push(`variable ${v.name} has shape [${s}], expected [${v.shape}]`);
    }
    if (!problems.length) return { graph, scopes };
    if (!best || problems.length < best.problems.length) best = { alpha, problems };
  }
  const p = best!.problems;
  fail(`no width multiplier (${ALPHAS.join(', ')}) matches the graph's SSDLite-MobileNetV2 variables; closest α ${best!.alpha}: ${p.slice(0, 3).join('; ')}${p.length > 3 ? ` (and ${p.length - 3} more)` : ''}`);
}

/** The input size: the preprocessor's resize size, else a Placeholder of fixed square size, else 300. */
export function resolutionOf(g: TfGraph, file: string): { value: number; from: string } {
  const fail = failFor(file);
  for (const n of g.nodes) {
    if (!/^Resize(Bilinear|NearestNeighbor|Bicubic|Area)$/.test(n.op) || !n.name.startsWith('Preprocessor/')) continue;
    const size = throughIdentity(g, inputNode(g, n.input[1] ?? ''));
    const hw = size && sizeValues(g, size, file);
    if (!hw) continue;
    if (hw.length !== 2) fail(`${n.name}: resize size '${size!.name}' has ${hw.length} values, not [height, width]`);
    const [h, w] = hw;
    if (h !== w) fail(`${n.name} resizes to ${h}x${w}; SSDLite here takes square inputs`);
    return { value: h!, from: `${n.name}'s size` };
  }
  for (const n of g.nodes) {
    if (n.op !== 'Placeholder') continue;
    const s = shapeDims(attrOf(n, 'shape')?.shape, fail);
    if (s.length === 4 && s[1]! > 0 && s[1] === s[2]) return { value: s[1]!, from: `input '${n.name}' of shape [${s}]` };
  }
  return { value: DEFAULT_RESOLUTION, from: `not in the graph; the TF OD API default ${DEFAULT_RESOLUTION}` };
}

/** A resize size: a Const (TF 1.x's tf.stack of constants), or a Pack of scalar Consts; undefined if computed. */
function sizeValues(g: TfGraph, n: TfNode, file: string): number[] | undefined {
  if (n.op === 'Const') return [...constValue(n, file).data];
  if (n.op !== 'Pack') return undefined;
  const parts = n.input.filter((i) => !i.startsWith('^')).map((i) => throughIdentity(g, inputNode(g, i)));
  if (!parts.every((p) => p?.op === 'Const')) return undefined;
  return parts.flatMap((p) => [...constValue(p!, file).data]);
}

/** The ops reading the variables: TF 'SAME' padding, NHWC, no dilation, the model's strides, inference BN with ε 1e-3. */
function checkOps(g: TfGraph, graph: Graph<SsdliteConfig>, scopes: ReadonlyMap<string, string>, used: ReadonlySet<string>, fail: (msg: string) => never): void {
  const byVariable = new Map<string, ConvNode>();
  for (const n of graph.nodes) if (n.op === 'conv') byVariable.set(tfConvVariable(n, scopes.get(n.name)!).name, n);
  const variableOf = (n: TfNode, i: number) => {
    const src = throughIdentity(g, inputNode(g, n.input[i] ?? ''));
    return src && used.has(src.name) ? src.name : undefined;
  };
  for (const n of g.nodes) {
    const where = `${n.op} '${n.name}'`;
    if (n.op === 'Conv2D' || n.op === 'DepthwiseConv2dNative') {
      const conv = byVariable.get(variableOf(n, 1) ?? '');
      if (!conv) continue;
      const padding = stringAttr(n, 'padding');
      if (padding !== 'SAME') fail(`${where}: padding ${padding ?? '(none)'}, expected TF 'SAME'`);
      const format = stringAttr(n, 'data_format') ?? 'NHWC';
      if (format !== 'NHWC') fail(`${where}: data_format ${format}, expected NHWC`);
      const strides = intsAttr(n, 'strides', fail)?.join();
      if (strides !== [1, conv.stride, conv.stride, 1].join()) fail(`${where}: strides [${strides}], SSDLite-MobileNetV2 has [1,${conv.stride},${conv.stride},1] here`);
      const dilations = intsAttr(n, 'dilations', fail);
      if (dilations && dilations.some((d) => d !== 1)) fail(`${where}: dilated convolution [${dilations}]`);
    } else if (n.op.startsWith('FusedBatchNorm')) {
      if (!variableOf(n, 1)) continue;
      const eps = attrOf(n, 'epsilon')?.f ?? 1e-4; // TF's default epsilon attr
      if (Math.abs(eps - graph.config.bnEps) > 1e-7) fail(`${where}: epsilon ${eps}, the TF OD API's SSDLite uses ${graph.config.bnEps}`);
      if (attrOf(n, 'is_training')?.b) fail(`${where}: is_training is true (batch statistics); export the graph for inference`);
    }
  }
}

/** The model file's metadata: TF 'SAME' padding is the config's 'keras' padding, TF's [-1, 1] the 'keras' preset, COCO labels for 90 classes. */
export function tfGraphModelInfo(m: TfGraphSsdliteImport, source: string): Record<string, string> {
  const coco = m.graph.config.numClasses === COCO_CLASSES ? { labels: 'coco' } : {};
  const post: Record<string, string> = m.postprocess ? { [POSTPROCESS_KEY]: JSON.stringify(m.postprocess) } : {};
  return { ...encodeModelInfo({ config: m.graph.config, source, preprocess: 'keras', ...coco }), ...post };
}

/** Import `file` and write the model file `out`. */
export function importTfGraphSsdliteTo(file: string, out: string, source: string): TfGraphSsdliteImport {
  const m = importTfGraphSsdlite(file);
  saveWeights(out, m.graph, m.weights, new Map(), tfGraphModelInfo(m, source));
  return m;
}
