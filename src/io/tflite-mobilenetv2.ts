/**
 * A MobileNetV2 classifier exported to TFLite (TF-slim's `MobilenetV2/...` scopes, or Keras layer names) → this
 * project's model. TFLite convs carry BN already folded in (weights and a bias), so each conv becomes a Keras
 * conv plus an identity BN holding the bias (γ 1, β bias, mean 0, var 1 − ε) and goes through the Keras
 * importer: TF 'SAME' padding is its 'keras' padding, layouts and shapes are checked there. uint8/int8 weights
 * (per tensor or per channel) and int32 biases are dequantized.
 *
 * TF-slim classifiers have 1001 classes with background at index 0.
 */
import { dequantize, readTflite, type TfliteOperator, type TfliteSubgraph } from './tflite.js';
import { kerasToModel, permute, type ImportedModel, type KerasImportOptions, type KerasTensor, type KerasWeights } from './keras-names.js';
import { failFor } from '../util/errors.js';

/** Keras's BN epsilon, which kerasToModel configures: the identity BN's variance is 1 − ε so that var + ε = 1. */
const KERAS_BN_EPS = 1e-3;

/** TF-slim scope → Keras layer name (BN layer = name + suffix). */
function kerasLayerOf(tensorName: string): { layer: string; bn: string } | 'head' | undefined {
  for (const part of tensorName.split(';')) {
    if (/(^|\/)Logits\/Conv2d_1c_1x1\//.test(part) || /(^|\/)(predictions|Logits)\/(MatMul|BiasAdd|kernel)/.test(part)) return 'head';
    const slim = /(?:^|\/)MobilenetV2\/(Conv|Conv_1|expanded_conv(?:_(\d+))?\/(expand|depthwise|project))\//.exec(part);
    if (slim) {
      if (slim[1] === 'Conv') return { layer: 'Conv1', bn: 'bn_Conv1' };
      if (slim[1] === 'Conv_1') return { layer: 'Conv_1', bn: 'Conv_1_bn' };
      const layer = slim[2] ? `block_${slim[2]}_${slim[3]}` : `expanded_conv_${slim[3]}`;
      return { layer, bn: `${layer}_BN` };
    }
    const keras = /(?:^|\/)(Conv1|Conv_1|expanded_conv_(?:depthwise|project)|block_\d+_(?:expand|depthwise|project))(?:_BN|_bn)?\//.exec(part);
    if (keras) return { layer: keras[1]!, bn: keras[1] === 'Conv1' ? 'bn_Conv1' : keras[1] === 'Conv_1' ? 'Conv_1_bn' : `${keras[1]}_BN` };
  }
  return undefined;
}

export interface TfliteImport extends ImportedModel {
  /** The model's input: float32, or quantized with this scale and zero point (TF-slim: 1/128, 128 = [-1, 1]). */
  input: { type: string; scale?: number; zeroPoint?: number };
}

/** Import a MobileNetV2 classifier from a .tflite file. */
export function importTflite(file: string, opts: KerasImportOptions = {}): TfliteImport {
  const model = readTflite(file);
  const g = model.subgraphs[0]!;
  const layers: KerasWeights = new Map();
  const set = (layer: string, kind: string, t: KerasTensor) => layers.set(layer, (layers.get(layer) ?? new Map()).set(kind, t));
  const fail = failFor(file);
  for (const [i, op] of g.operators.entries()) {
    if (op.opcode !== 'CONV_2D' && op.opcode !== 'DEPTHWISE_CONV_2D' && op.opcode !== 'FULLY_CONNECTED') continue;
    const w = g.tensors[op.inputs[1]!]!;
    const where = `operator ${i} (${op.opcode}, weights '${w.name}')`;
    const target = kerasLayerOf(w.name) ?? fail(`${where}: not a MobileNetV2 layer name (TF-slim MobilenetV2/... or Keras block_N_...)`);
    const kernel = dequantize(w, file);
    const bias = op.inputs[2] !== undefined && op.inputs[2] >= 0 ? dequantize(g.tensors[op.inputs[2]]!, file) : new Float32Array(w.shape[op.opcode === 'DEPTHWISE_CONV_2D' ? 3 : 0]!);
    checkOptions(op, where, target === 'head' || target.layer.endsWith('project'), fail);
    if (target === 'head') {
      // conv [out, 1, 1, in] or fully connected [out, in] → Dense kernel [in, out]
      const out = w.shape[0]!;
      const inF = kernel.length / out;
      if (op.opcode === 'CONV_2D' && (w.shape[1] !== 1 || w.shape[2] !== 1)) fail(`${where}: the classifier conv is ${w.shape[1]}x${w.shape[2]}, not 1x1`);
      set('Logits', 'kernel', { shape: [inF, out], data: permute(kernel, [out, inF], [1, 0]) });
      set('Logits', 'bias', { shape: [out], data: bias });
      continue;
    }
    if (w.shape.length !== 4) fail(`${where}: weights of shape [${w.shape}], expected 4-D`);
    // TFLite conv OHWI → Keras HWIO; depthwise [1, H, W, C] → Keras (H, W, C, 1): both move axis 0 last
    const kerasShape = [w.shape[1]!, w.shape[2]!, w.shape[3]!, w.shape[0]!];
    set(target.layer, op.opcode === 'DEPTHWISE_CONV_2D' ? 'depthwise_kernel' : 'kernel', { shape: kerasShape, data: permute(kernel, w.shape, [1, 2, 3, 0]) });
    const c = bias.length;
    set(target.bn, 'gamma', { shape: [c], data: new Float32Array(c).fill(1) });
    set(target.bn, 'beta', { shape: [c], data: bias });
    set(target.bn, 'moving_mean', { shape: [c], data: new Float32Array(c) });
    set(target.bn, 'moving_variance', { shape: [c], data: new Float32Array(c).fill(1 - KERAS_BN_EPS) });
  }
  if (!layers.size) fail('has no convolution with a MobileNetV2 layer name');
  const [height, width] = inputSize(g, fail);
  if (height !== width) fail(`input is ${height}x${width}; MobileNetV2 here takes square inputs`);
  const imported = kerasToModel(layers, file, { ...opts, resolution: opts.resolution ?? height });
  const inp = g.tensors[g.inputs[0]!]!;
  const q = inp.quantization;
  return { ...imported, input: { type: inp.type, ...(q ? { scale: q.scale[0]!, zeroPoint: q.zeroPoint[0]! } : {}) } };
}

/** TF 'SAME' padding (1x1 convs: any) and MobileNetV2's activations: none after project convs and the head, else ReLU6. */
function checkOptions(op: TfliteOperator, where: string, linear: boolean, fail: (msg: string) => never): void {
  const o = op.options;
  if (op.opcode === 'DEPTHWISE_CONV_2D' || (op.opcode === 'CONV_2D' && !linear && o.strideW === 2)) {
    if (o.padding !== 'SAME') fail(`${where}: padding ${String(o.padding)}, expected TF 'SAME'`);
  }
  if (o.dilationW !== undefined && (o.dilationW !== 1 || o.dilationH !== 1)) fail(`${where}: dilated convolution`);
  const act = o.activation ?? 'NONE';
  const want = linear ? 'NONE' : 'RELU6';
  if (act !== want) fail(`${where}: fused activation ${String(act)}, MobileNetV2 has ${want} here`);
}

function inputSize(g: TfliteSubgraph, fail: (msg: string) => never): [number, number] {
  const s = g.tensors[g.inputs[0]!]?.shape ?? [];
  if (s.length !== 4 || s[3] !== 3) fail(`input shape [${s}] is not NHWC with 3 channels`);
  return [s[1]!, s[2]!];
}
