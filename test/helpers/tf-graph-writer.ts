/**
 * Writes an SSDLite model as the TF Object Detection API's frozen graph does (GraphDef protobuf, TF's field numbers
 * via src/io/tf-graph.ts's schema): the variables as Consts under their TF names (conv HWIO, depthwise [k, k, C, 1],
 * BatchNorm/{gamma, beta, moving_mean, moving_variance}, predictor biases), each read through an Identity `X/read`,
 * and the real ops NHWC: Preprocessor ResizeBilinear to the input size, Conv2D / DepthwiseConv2dNative with 'SAME'
 * padding, FusedBatchNorm (ε from the model, is_training false), Relu6, Add, BiasAdd, the predictors' Reshape and the
 * ConcatV2 outputs `concat` (box encodings [1, A, 4]) and `concat_1` (class logits [1, A, C + 1]).
 */
import { GraphDefType, TF_DTYPES } from '../../src/io/tf-graph.js';
import { tfConvVariable, tfScopesByConv } from '../../src/io/tf-graph-ssdlite.js';
import { permute } from '../../src/io/keras-names.js';
import { BOXES, type SsdliteConfig } from '../../src/model/ssdlite.js';
import type { Graph } from '../../src/model/graph.js';
import type { StateDict } from '../../src/model/weights.js';

/** How float Consts are stored: tensor_content float32, float_val lists (constant tensors as one splat value), or float16 (content and half_val alternately). */
export type FloatForm = 'content' | 'val' | 'half';

export interface TfGraphOptions {
  form?: FloatForm;
  /**
   * How the graph says its input size: a Preprocessor ResizeBilinear to [R, R] after a [-1, -1, -1, 3] Placeholder (the
   * TF OD API's, default), a fixed [1, R, R, 3] Placeholder, or not at all ([-1, -1, -1, 3], no resize).
   */
  input?: 'resize' | 'fixed' | 'unknown';
  /** The resize size as a Pack of two scalar Consts instead of one Const (TF 1.x folds tf.stack of constants into one). */
  packedSize?: boolean;
  /** Leave these Consts out (error tests). */
  omit?: readonly string[];
  /** Replace a Const's shape (error tests): name → shape, data sized to match. */
  reshape?: Readonly<Record<string, number[]>>;
  /** Conv padding attribute (error tests). */
  padding?: string;
  /**
   * A Postprocessor as the TF OD API exports one, reduced to the nodes holding its constants: the box decoder's
   * four divisions and a batched NonMaxSuppressionV3 (V2: score threshold in a FilterGreaterThan before it).
   */
  postprocessor?: { scales: [number, number, number, number]; iou: number; score: number; perClass: number; nms?: 'V2' | 'V3' };
}

type Attr = Record<string, unknown>;
interface Node { name: string; op: string; input: string[]; attr: Record<string, Attr> }

/** float → IEEE half bits, round to nearest even (finite inputs). */
export function halfBits(x: number): number {
  const u = new Uint32Array(Float32Array.of(x).buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 112;
  let mant = u & 0x7fffff;
  if (exp >= 31) return sign | 0x7c00;
  const shift = exp <= 0 ? 14 - exp : 13;
  if (shift > 24) return sign;
  if (exp <= 0) mant |= 0x800000;
  let h = (exp <= 0 ? 0 : exp << 10) | (mant >>> shift);
  const rem = mant & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && h & 1)) h++;
  return sign | h;
}

const shapeProto = (shape: readonly number[]) => ({ dim: shape.map((size) => ({ size })) });

type AddNode = (name: string, op: string, input: string[], attr?: Record<string, Attr>) => string;

/** The Postprocessor nodes that carry the box coder scales and the NMS settings, reading the graph's two outputs. */
function postprocessor(p: NonNullable<TfGraphOptions['postprocessor']>, add: AddNode): void {
  const scalar = (name: string, v: number, dtype: number = TF_DTYPES.DT_FLOAT) =>
    add(name, 'Const', [], { dtype: { type: dtype }, value: { tensor: { dtype, tensorShape: { dim: [] }, ...(dtype === TF_DTYPES.DT_INT32 ? { intVal: [v] } : { floatVal: [v] }) } } });
  ['div', 'div_1', 'div_2', 'div_3'].forEach((d, i) => add(`Postprocessor/Decode/${d}`, 'RealDiv', ['concat', scalar(`Postprocessor/Decode/${d}/y`, p.scales[i]!)]));
  const scope = 'Postprocessor/BatchMultiClassNonMaxSuppression/map/while/MultiClassNonMaxSuppression';
  const nms = `${scope}/non_max_suppression`;
  const ins = ['concat', 'concat_1', scalar(`${nms}/max_output_size`, p.perClass, TF_DTYPES.DT_INT32), scalar(`${nms}/iou_threshold`, p.iou)];
  if (p.nms === 'V2') {
    add(`${scope}/FilterGreaterThan/Greater`, 'Greater', ['concat_1', scalar(`${scope}/FilterGreaterThan/Greater/y`, p.score)]);
    add(`${nms}/NonMaxSuppressionV2`, 'NonMaxSuppressionV2', ins);
  } else {
    add(`${nms}/NonMaxSuppressionV3`, 'NonMaxSuppressionV3', [...ins, scalar(`${nms}/score_threshold`, p.score)]);
  }
}

/** The frozen GraphDef bytes of an SSDLite model and its weights. */
export function writeTfGraph(graph: Graph<SsdliteConfig>, weights: StateDict, o: TfGraphOptions = {}): Uint8Array {
  const nodes: Node[] = [];
  const add = (name: string, op: string, input: string[], attr: Record<string, Attr> = {}) => {
    nodes.push({ name, op, input, attr: op === 'Const' || op === 'Placeholder' ? attr : { T: { type: TF_DTYPES.DT_FLOAT }, ...attr } });
    return name;
  };
  let floats = 0;
  const floatConst = (name: string, shape: number[], data: Float32Array): string => {
    if (o.omit?.includes(name)) return name;
    const s = o.reshape?.[name] ?? shape;
    const d = o.reshape?.[name] ? new Float32Array(s.reduce((a, b) => a * b, 1)).fill(0.5) : data;
    const form = o.form ?? 'content';
    let tensor: Attr;
    if (form === 'half') {
      const bits = Uint16Array.from(d, halfBits);
      tensor = floats++ % 2 ? { dtype: TF_DTYPES.DT_HALF, halfVal: [...bits] } : { dtype: TF_DTYPES.DT_HALF, tensorContent: new Uint8Array(bits.buffer) };
    } else if (form === 'val') {
      tensor = { dtype: TF_DTYPES.DT_FLOAT, floatVal: d.every((v) => v === d[0]) ? [d[0]] : [...d] };
    } else {
      tensor = { dtype: TF_DTYPES.DT_FLOAT, tensorContent: new Uint8Array(d.slice().buffer) };
    }
    add(name, 'Const', [], { dtype: { type: tensor['dtype'] }, value: { tensor: { ...tensor, tensorShape: shapeProto(s) } } });
    return add(`${name}/read`, 'Identity', [name]);
  };
  const intConst = (name: string, values: number[]) =>
    add(name, 'Const', [], { dtype: { type: TF_DTYPES.DT_INT32 }, value: { tensor: { dtype: TF_DTYPES.DT_INT32, tensorShape: shapeProto([values.length]), intVal: values } } });

  const packedSize = (r: number) => {
    const dims = ['0', '1'].map((i) => add(`Preprocessor/map/while/ResizeImage/stack/${i}`, 'Const', [], { dtype: { type: TF_DTYPES.DT_INT32 }, value: { tensor: { dtype: TF_DTYPES.DT_INT32, tensorShape: { dim: [] }, intVal: [r] } } }));
    return add('Preprocessor/map/while/ResizeImage/stack', 'Pack', dims, { N: { i: 2 }, T: { type: TF_DTYPES.DT_INT32 }, axis: { i: 0 } });
  };
  const R = graph.config.resolution;
  const input = o.input ?? 'resize';
  add('image_tensor', 'Placeholder', [], { dtype: { type: TF_DTYPES.DT_FLOAT }, shape: { shape: shapeProto(input === 'fixed' ? [1, R, R, 3] : [-1, -1, -1, 3]) } });
  const tensor = new Map<string, string>();
  tensor.set(graph.input, input !== 'resize' ? 'image_tensor'
    : add('Preprocessor/map/while/ResizeImage/ResizeBilinear', 'ResizeBilinear', ['image_tensor', o.packedSize ? packedSize(R) : intConst('Preprocessor/map/while/ResizeImage/stack', [R, R])], { align_corners: { b: false } }));
  const scopeOf = new Map<string, string>(); // value → TF scope of the conv that made it
  const convScopes = tfScopesByConv(graph.config.alpha);
  for (const n of graph.nodes) {
    const x = tensor.get(n.inputs[0]!)!;
    let out: string;
    if (n.op === 'conv') {
      const scope = convScopes.get(n.name)!;
      const v = tfConvVariable(n, scope);
      const dw = n.groups > 1;
      const w = floatConst(v.name, v.shape, permute(weights.get(`${n.name}.weight`)!, [n.outC, n.inC / n.groups, n.k, n.k], dw ? [2, 3, 0, 1] : [2, 3, 1, 0]));
      const attr = { strides: { list: { i: [1, n.stride, n.stride, 1] } }, padding: { s: Buffer.from(o.padding ?? 'SAME') }, data_format: { s: Buffer.from('NHWC') }, dilations: { list: { i: [1, 1, 1, 1] } } };
      out = add(dw ? `${scope}/depthwise` : `${scope}/Conv2D`, dw ? 'DepthwiseConv2dNative' : 'Conv2D', [x, w], attr);
      if (n.bias) out = add(`${scope}/BiasAdd`, 'BiasAdd', [out, floatConst(`${scope}/biases`, [n.outC], weights.get(`${n.name}.bias`)!)], { data_format: { s: Buffer.from('NHWC') } });
      scopeOf.set(n.output, scope);
    } else if (n.op === 'bn') {
      const scope = scopeOf.get(n.inputs[0]!)!;
      const vars = [['gamma', 'weight'], ['beta', 'bias'], ['moving_mean', 'running_mean'], ['moving_variance', 'running_var']] as const;
      const ins = vars.map(([tf, ours]) => floatConst(`${scope}/BatchNorm/${tf}`, [n.channels], weights.get(`${n.name}.${ours}`)!));
      out = add(`${scope}/BatchNorm/FusedBatchNorm`, 'FusedBatchNorm', [x, ...ins], { epsilon: { f: n.eps }, is_training: { b: false }, data_format: { s: Buffer.from('NHWC') } });
      scopeOf.set(n.output, scope);
    } else if (n.op === 'act') {
      if (n.kind !== 'relu6') throw new Error(`writeTfGraph: activation ${n.kind}`);
      const scope = scopeOf.get(n.inputs[0]!)!;
      out = add(`${scope}/Relu6`, 'Relu6', [x]);
    } else if (n.op === 'add') {
      out = add(`${n.name}/add`, 'Add', [x, tensor.get(n.inputs[1]!)!]);
    } else if (n.op === 'transpose') {
      if (n.perm.join() !== '1,2,0') throw new Error(`writeTfGraph: transpose ${n.perm}`);
      out = x; // CHW → HWC is the NHWC layout itself
    } else if (n.op === 'reshape') {
      const m = /^head\.(regression|classification)_head\.module_list\.(\d)\.reshape$/.exec(n.name);
      const i = Number(m?.[2]);
      const name = `BoxPredictor_${i}/Reshape${m?.[1] === 'classification' ? '_1' : ''}`;
      out = add(name, 'Reshape', [x, intConst(`${name}/shape`, [1, ...n.shape])], { Tshape: { type: TF_DTYPES.DT_INT32 } });
    } else if (n.op === 'concat') {
      const boxes = graph.outputs.find((g) => g.name === BOXES)!.value === n.output;
      const name = boxes ? 'concat' : 'concat_1';
      out = add(name, 'ConcatV2', [...n.inputs.map((v) => tensor.get(v)!), intConst(`${name}/axis`, [n.axis + 1])], { N: { i: n.inputs.length }, Tidx: { type: TF_DTYPES.DT_INT32 } });
    } else {
      throw new Error(`writeTfGraph: op ${n.op}`);
    }
    tensor.set(n.output, out);
  }
  // scalar axis: TF's ConcatV2 takes a 0-d axis
  if (o.postprocessor) postprocessor(o.postprocessor, add);
  for (const n of nodes) if (n.name.endsWith('/axis')) (n.attr['value'] as { tensor: { tensorShape: unknown } }).tensor.tensorShape = { dim: [] };
  return GraphDefType.encode(GraphDefType.fromObject({ node: nodes })).finish();
}
