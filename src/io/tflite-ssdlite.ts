/**
 * An SSDLite-MobileNetV2 exported to TFLite by the TF Object Detection API → this project's `ssdlite` model.
 * TFLite convs carry BN folded in (weights + `Conv2D_bias` / `depthwise_bias`): each becomes our conv plus an
 * identity BN holding the bias (γ 1, β bias, mean 0, var 1 − ε); the predictors' 1x1 convs keep their bias.
 * uint8/int8 weights (per tensor or per axis) and int32 biases are dequantized by src/io/tflite.ts.
 * The class count comes from the class head; `TFLite_Detection_PostProcess`'s options (box coder scales,
 * NMS thresholds, detection limits) are returned as they are.
 */
import { dequantize, readTflite, type TfliteOperator } from './tflite.js';
import { permute } from './keras-names.js';
import { ANCHORS_PER_LOCATION, buildSsdlite, makeSsdliteConfig, type SsdliteConfig } from '../model/ssdlite.js';
import type { Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import { failFor } from '../util/errors.js';

/** Width multipliers tried in turn: the one whose parameter shapes all match the file. */
export const ALPHAS = [1, 0.75, 0.5, 0.35, 1.3, 1.4];

/** A TF scope (`FeatureExtractor/MobilenetV2/expanded_conv_3/depthwise`, `BoxPredictor_2/ClassPredictor`) → our conv and BN. */
export function ssdliteNamesOf(scope: string): { conv: string; bn?: string } | undefined {
  const bp = /^BoxPredictor_(\d+)\/(BoxEncoding|Class)Predictor(_depthwise)?$/.exec(scope);
  if (bp) {
    const p = `head.${bp[2] === 'Class' ? 'classification' : 'regression'}_head.module_list.${bp[1]}`;
    return bp[3] ? { conv: `${p}.0.0`, bn: `${p}.0.1` } : { conv: `${p}.1` };
  }
  const s = /^FeatureExtractor\/MobilenetV2\/(.+)$/.exec(scope)?.[1];
  if (s === undefined) return undefined;
  if (s === 'Conv') return { conv: 'features.0.0', bn: 'features.0.1' };
  if (s === 'Conv_1') return { conv: 'features.18.0', bn: 'features.18.1' };
  const block = /^expanded_conv(?:_(\d+))?\/(expand|depthwise|project)$/.exec(s);
  if (block) {
    const idx = block[1] ? Number(block[1]) + 1 : 1;
    // torchvision numbers the block's children: [expand,] depthwise, project conv, project BN
    const j = { expand: 0, depthwise: idx === 1 ? 0 : 1, project: idx === 1 ? 1 : 2 }[block[2] as 'expand' | 'depthwise' | 'project'];
    const p = `features.${idx}.conv`;
    return block[2] === 'project' ? { conv: `${p}.${j}`, bn: `${p}.${j + 1}` } : { conv: `${p}.${j}.0`, bn: `${p}.${j}.1` };
  }
  const extra = /^layer_19_([12])_Conv2d_(\d+)_\w+?(_depthwise)?$/.exec(s);
  if (!extra) return undefined;
  const p = `extra.${Number(extra[2]) - 2}.${extra[1] === '1' ? 0 : extra[3] ? 1 : 2}`;
  return { conv: `${p}.0`, bn: `${p}.1` };
}

export interface TfliteSsdliteImport {
  graph: Graph<SsdliteConfig>;
  weights: StateDict;
  /** `TFLite_Detection_PostProcess`'s custom options, if the file has the op. */
  postprocess?: Record<string, unknown>;
  input: { type: string; scale?: number; zeroPoint?: number };
}

/** Whether a .tflite file is a TF OD API SSD (its convs live in `BoxPredictor_N/` scopes). */
export function isSsdliteTflite(file: string): boolean {
  const g = readTflite(file).subgraphs[0];
  return !!g?.tensors.some((t) => /^BoxPredictor_\d+\//.test(t.name));
}

/** Import an SSDLite-MobileNetV2 detector from a .tflite file. */
export function importTfliteSsdlite(file: string): TfliteSsdliteImport {
  const g = readTflite(file).subgraphs[0]!;
  const fail = failFor(file);
  // conv name → its TFLite weights in our layout and its bias
  const convs = new Map<string, { shape: number[]; weight: Float32Array; bias: Float32Array; bn?: string; where: string }>();
  for (const [i, op] of g.operators.entries()) {
    if (op.opcode !== 'CONV_2D' && op.opcode !== 'DEPTHWISE_CONV_2D') continue;
    const w = g.tensors[op.inputs[1]!]!;
    const where = `operator ${i} (${op.opcode}, weights '${w.name}')`;
    const scope = w.name.replace(/\/(weights|depthwise_weights)$/, '');
    const names = ssdliteNamesOf(scope) ?? fail(`${where}: not an SSDLite-MobileNetV2 scope (FeatureExtractor/MobilenetV2/..., BoxPredictor_N/...)`);
    if (w.shape.length !== 4) fail(`${where}: weights of shape [${w.shape}], expected 4-D`);
    checkOptions(op, where, names.bn === undefined || /\/project$/.test(scope), fail);
    const dw = op.opcode === 'DEPTHWISE_CONV_2D';
    const [o, kh, kw, c] = w.shape as [number, number, number, number];
    // TFLite conv OHWI → OIHW; depthwise [1, H, W, C] → [C, 1, H, W]
    const weight = permute(dequantize(w, file), w.shape, dw ? [3, 0, 1, 2] : [0, 3, 1, 2]);
    const shape = dw ? [c, 1, kh, kw] : [o, c, kh, kw];
    const bias = op.inputs[2] !== undefined && op.inputs[2] >= 0 ? dequantize(g.tensors[op.inputs[2]]!, file) : new Float32Array(shape[0]!);
    if (bias.length !== shape[0]) fail(`${where}: bias of ${bias.length} values for ${shape[0]} output channels`);
    convs.set(names.conv, { shape, weight, bias, ...(names.bn ? { bn: names.bn } : {}), where });
  }
  const cls0 = convs.get('head.classification_head.module_list.0.1') ?? fail('has no BoxPredictor_0/ClassPredictor conv');
  const numClasses = cls0.shape[0]! / ANCHORS_PER_LOCATION[0] - 1;
  if (!Number.isInteger(numClasses) || numClasses < 1) fail(`BoxPredictor_0/ClassPredictor has ${cls0.shape[0]} outputs, not ${ANCHORS_PER_LOCATION[0]}·(classes + 1)`);
  const inp = g.tensors[g.inputs[0]!]!;
  if (inp.shape.length !== 4 || inp.shape[1] !== inp.shape[2] || inp.shape[3] !== 3) fail(`input shape [${inp.shape}] is not square NHWC with 3 channels`);
  const graph = fitGraph(inp.shape[1]!, numClasses, convs) ?? fail(`no width multiplier (${ALPHAS.join(', ')}) gives this file's conv shapes`);

  const weights: StateDict = new Map();
  const eps = graph.config.bnEps;
  for (const n of graph.nodes) {
    if (n.op !== 'conv') continue;
    const t = convs.get(n.name) ?? fail(`no conv for ${n.name} (its TF scope is missing)`);
    convs.delete(n.name);
    weights.set(`${n.name}.weight`, t.weight);
    if (n.bias) weights.set(`${n.name}.bias`, t.bias);
    else {
      const c = t.bias.length;
      weights.set(`${t.bn}.weight`, new Float32Array(c).fill(1));
      weights.set(`${t.bn}.bias`, t.bias);
      weights.set(`${t.bn}.running_mean`, new Float32Array(c));
      weights.set(`${t.bn}.running_var`, new Float32Array(c).fill(1 - eps));
      weights.set(`${t.bn}.num_batches_tracked`, new Float32Array(1));
    }
  }
  if (convs.size) fail(`convs this model does not have: ${[...convs.values()].map((t) => t.where).join('; ')}`);
  const post = g.operators.find((op) => op.opcode === 'TFLite_Detection_PostProcess');
  const q = inp.quantization;
  return {
    graph,
    weights,
    ...(post?.customOptions ? { postprocess: post.customOptions as Record<string, unknown> } : {}),
    input: { type: inp.type, ...(q ? { scale: q.scale[0]!, zeroPoint: q.zeroPoint[0]! } : {}) },
  };
}

function fitGraph(resolution: number, numClasses: number, convs: ReadonlyMap<string, { shape: number[] }>): Graph<SsdliteConfig> | undefined {
  for (const alpha of ALPHAS) {
    const graph = buildSsdlite(makeSsdliteConfig({ alpha, resolution, numClasses }));
    const fits = graph.nodes.every((n) => n.op !== 'conv' || convs.get(n.name)?.shape.join() === [n.outC, n.inC / n.groups, n.k, n.k].join());
    if (fits) return graph;
  }
  return undefined;
}

/** TF 'SAME' padding, no dilation, ReLU6 everywhere except project convs and the predictors' 1x1 convs. */
function checkOptions(op: TfliteOperator, where: string, linear: boolean, fail: (msg: string) => never): void {
  const o = op.options;
  if (o.padding !== 'SAME') fail(`${where}: padding ${String(o.padding)}, expected TF 'SAME'`);
  if (o.dilationW !== undefined && (o.dilationW !== 1 || o.dilationH !== 1)) fail(`${where}: dilated convolution`);
  if (op.opcode === 'DEPTHWISE_CONV_2D' && o.depthMultiplier !== undefined && o.depthMultiplier !== 1) fail(`${where}: depth multiplier ${String(o.depthMultiplier)}`);
  const act = o.activation ?? 'NONE';
  const want = linear ? 'NONE' : 'RELU6';
  if (act !== want) fail(`${where}: fused activation ${String(act)}, SSDLite-MobileNetV2 has ${want} here`);
}
