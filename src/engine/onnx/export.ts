/**
 * ONNX export of a MobileNetV2 graph (eval mode: BN folded into convs, dropout removed), built with the
 * onnx-proto (protobufjs) schema. Input `input` float32 [batch, C, H, W] with a symbolic batch dimension,
 * output `logits` float32 [batch, classes]; the model's family, config, preprocessing and labels travel in its
 * metadata_props, the same entries a safetensors model file has (src/io/metadata.ts).
 */
// onnx-proto's declarations use protobufjs 6's global `Long` type: referenced here so that a consumer's
// type check (skipLibCheck: false, any `types` setting) finds it.
/// <reference types="long" preserve="true" />
import onnxProto from 'onnx-proto';
import type { BaseConfig } from '../../model/family.js';
import { LOGITS, type EltwiseKind, type Graph } from '../../model/graph.js';
import { familyOf } from '../../model/registry.js';
import { checkStateDict, checkWeightValues, type StateDict } from '../../model/weights.js';
import { foldBatchNorm, type FoldedGraph } from '../../model/fold.js';
import { CONFIG_KEY, decodeModelInfo, encodeModelInfo, type ModelInfo, type ModelInfoInput } from '../../io/metadata.js';
import { float32ToFloat16 } from '../../io/safetensors.js';
import { fail } from '../../util/errors.js';

const { onnx } = onnxProto;
type IModelProto = onnxProto.onnx.IModelProto;
type INodeProto = onnxProto.onnx.INodeProto;
type ITensorProto = onnxProto.onnx.ITensorProto;
type IAttributeProto = onnxProto.onnx.IAttributeProto;
type IValueInfoProto = onnxProto.onnx.IValueInfoProto;

export const FORMAT_KEY = 'mnv2.format_version';
export const FORMAT_VERSION = '1';
export const ONNX_INPUT = 'input';
/** A classifier's output (graph output names are the ONNX output names). */
export const ONNX_OUTPUT = LOGITS;
/** The optional extra output of classifiers: the pooled features the classifier reads, [batch, C]. */
export const ONNX_FEATURES = 'features';
export const DEFAULT_OPSET = 17;

export interface ExportOptions {
  /** Default-domain opset (default 17; at least 13). */
  opset?: number;
  /** Store weights and compute in float16; the model's input and output stay float32. */
  fp16?: boolean;
  /** producer_name (default 'mobilenetv2-ts'). */
  producer?: string;
  /** Preprocessing, labels, class names and provenance to store beside the config (a model file's metadata). */
  info?: Omit<ModelInfoInput, 'config'>;
  /** Further metadata_props entries (e.g. an imported detector's post-processing options: exportMetadataOf). */
  metadata?: Readonly<Record<string, string>>;
  /**
   * Graph values to expose as extra outputs, by the graph's value names (an activation node's, or a BN's when no
   * activation follows), e.g. for inspecting activations. Float32 exports only.
   */
  extraOutputs?: readonly string[];
  /** Also output the pooled features (`features`, float32 [batch, C]), for embeddings. */
  features?: boolean;
}

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const FLOAT16 = onnx.TensorProto.DataType.FLOAT16;
const INT64 = onnx.TensorProto.DataType.INT64;
const AT = onnx.AttributeProto.AttributeType;

export const attrInt = (name: string, i: number): IAttributeProto => ({ name, type: AT.INT, i });
export const attrInts = (name: string, ints: readonly number[]): IAttributeProto => ({ name, type: AT.INTS, ints: [...ints] });
const attrFloat = (name: string, f: number): IAttributeProto => ({ name, type: AT.FLOAT, f });

export function tensor(name: string, dims: readonly number[], data: ArrayLike<number>, fp16: boolean): ITensorProto {
  let raw: Uint8Array;
  if (fp16) {
    const h = float32ToFloat16(Float32Array.from(data));
    raw = new Uint8Array(h.length * 2);
    const dv = new DataView(raw.buffer);
    for (let i = 0; i < h.length; i++) dv.setUint16(i * 2, h[i]!, true);
  } else {
    raw = new Uint8Array(data.length * 4);
    const dv = new DataView(raw.buffer);
    for (let i = 0; i < data.length; i++) dv.setFloat32(i * 4, data[i]!, true);
  }
  return { name, dims: [...dims], dataType: fp16 ? FLOAT16 : FLOAT, rawData: raw };
}

export function valueInfo(name: string, dims: readonly (number | string)[], elemType: number = FLOAT): IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

/** ONNX IR version for an opset: 8 up to opset 18 (the default 17 -> 8), then the matching newer IR. */
function irVersionFor(opset: number): number {
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  return 10;
}

/** Build the ONNX ModelProto (as a plain protobufjs message object) for an already folded graph. */
export function foldedToOnnx(fg: FoldedGraph, config: BaseConfig, opts: ExportOptions = {}): IModelProto {
  const opset = opts.opset ?? DEFAULT_OPSET;
  if (!Number.isInteger(opset) || opset < 13) throw new Error(`exportOnnx: opset must be an integer >= 13, got ${opset}`);
  const fp16 = opts.fp16 ?? false;
  const nodes: INodeProto[] = [];
  const inits: ITensorProto[] = [];
  const names = new Set<string>();
  const node = (n: INodeProto): void => {
    if (names.has(n.name!)) throw new Error(`exportOnnx: duplicate node name ${n.name}`);
    names.add(n.name!);
    nodes.push(n);
  };

  // Graph value name -> ONNX value name.
  const vmap = new Map<string, string>();
  const v = (name: string): string => {
    const r = vmap.get(name);
    if (r === undefined) throw new Error(`exportOnnx: value ${name} used before it is defined`);
    return r;
  };
  // A graph output keeps its name (`logits`) in float32; in float16 a Cast to it follows.
  const outputName = new Map(fg.outputs.map((o) => [o.value, o.name] as const));
  const outputNames = new Set(outputName.values());
  const def = (name: string): string => {
    const onnxName = fp16 ? (outputNames.has(name) ? `${name}.fp16` : name) : (outputName.get(name) ?? name);
    vmap.set(name, onnxName);
    return onnxName;
  };
  const int64s = (name: string, values: readonly number[]): string => {
    inits.push({ name, dims: [values.length], dataType: INT64, rawData: new Uint8Array(BigInt64Array.from(values, BigInt).buffer) });
    return name;
  };

  if (fp16) {
    node({ name: `${ONNX_INPUT}.cast`, opType: 'Cast', input: [ONNX_INPUT], output: [`${ONNX_INPUT}.fp16`], attribute: [attrInt('to', FLOAT16)] });
    vmap.set(fg.input, `${ONNX_INPUT}.fp16`);
  } else {
    vmap.set(fg.input, ONNX_INPUT);
  }

  let clipBounds: [string, string] | null = null;
  let featureWidth = 0;
  const activation = (name: string, kind: EltwiseKind, x: string, y: string): void => {
    if (kind !== 'relu6') {
      node({ name, opType: kind === 'relu' ? 'Relu' : 'Sigmoid', input: [x], output: [y] });
      return;
    }
    if (!clipBounds) {
      clipBounds = ['relu6.min', 'relu6.max'];
      inits.push(tensor(clipBounds[0], [], [0], fp16), tensor(clipBounds[1], [], [6], fp16));
    }
    node({ name, opType: 'Clip', input: [x, clipBounds[0], clipBounds[1]], output: [y] });
  };

  for (const n of fg.nodes) {
    switch (n.op) {
      case 'conv': {
        const x = v(n.inputs[0]!);
        const w = `${n.name}.weight`;
        const b = `${n.name}.bias`;
        inits.push(tensor(w, [n.outC, n.inC / n.groups, n.k, n.k], n.weight, fp16), tensor(b, [n.outC], n.bias, fp16));
        const convOut = n.act ? (n.bnName ?? n.name) : def(n.output);
        node({
          name: n.name, opType: 'Conv', input: [x, w, b], output: [convOut],
          attribute: [
            attrInts('kernel_shape', [n.k, n.k]),
            attrInts('strides', [n.stride, n.stride]),
            // Ours are [top, left, bottom, right] = ONNX's [x1_begin, x2_begin, x1_end, x2_end].
            attrInts('pads', n.pads),
            attrInts('dilations', [1, 1]),
            attrInt('group', n.groups),
          ],
        });
        if (n.act) activation(n.actName ?? `${n.name}.act`, n.act, convOut, def(n.output));
        break;
      }
      case 'act':
        activation(n.name, n.kind, v(n.inputs[0]!), def(n.output));
        break;
      case 'add':
        node({ name: n.name, opType: 'Add', input: [v(n.inputs[0]), v(n.inputs[1])], output: [def(n.output)] });
        break;
      case 'avgpool': {
        const x = v(n.inputs[0]!);
        const pooled = `${n.name}.gap`;
        node({ name: n.name, opType: 'GlobalAveragePool', input: [x], output: [pooled] });
        node({ name: `${n.name}.flatten`, opType: 'Flatten', input: [pooled], output: [def(n.output)], attribute: [attrInt('axis', 1)] });
        if (opts.features) {
          const f = fp16 ? `${ONNX_FEATURES}.fp16` : ONNX_FEATURES;
          node({ name: ONNX_FEATURES, opType: 'Identity', input: [v(n.output)], output: [f] });
          if (fp16) node({ name: `${ONNX_FEATURES}.cast`, opType: 'Cast', input: [f], output: [ONNX_FEATURES], attribute: [attrInt('to', FLOAT)] });
          featureWidth = n.shape[0]!;
        }
        break;
      }
      case 'maxpool': {
        const pooled = `${n.name}.gmp`;
        node({ name: n.name, opType: 'GlobalMaxPool', input: [v(n.inputs[0]!)], output: [pooled] });
        node({ name: `${n.name}.flatten`, opType: 'Flatten', input: [pooled], output: [def(n.output)], attribute: [attrInt('axis', 1)] });
        break;
      }
      case 'linear': {
        const x = v(n.inputs[0]!);
        const w = `${n.name}.weight`;
        const b = `${n.name}.bias`;
        inits.push(tensor(w, [n.outF, n.inF], n.weight, fp16), tensor(b, [n.outF], n.bias, fp16));
        node({
          name: n.name, opType: 'Gemm', input: [x, w, b], output: [def(n.output)],
          attribute: [attrFloat('alpha', 1), attrFloat('beta', 1), attrInt('transB', 1)],
        });
        break;
      }
      // Per-image axes are ONNX axes + 1 (the batch).
      case 'concat':
        node({ name: n.name, opType: 'Concat', input: n.inputs.map(v), output: [def(n.output)], attribute: [attrInt('axis', n.axis + 1)] });
        break;
      case 'reshape':
        node({ name: n.name, opType: 'Reshape', input: [v(n.inputs[0]!), int64s(`${n.name}.shape`, [0, ...n.shape])], output: [def(n.output)] });
        break;
      case 'transpose':
        node({ name: n.name, opType: 'Transpose', input: [v(n.inputs[0]!)], output: [def(n.output)], attribute: [attrInts('perm', [0, ...n.perm.map((p) => p + 1)])] });
        break;
      case 'softmax':
        node({ name: n.name, opType: 'Softmax', input: [v(n.inputs[0]!)], output: [def(n.output)], attribute: [attrInt('axis', n.axis + 1)] });
        break;
      default: {
        const never: never = n;
        throw new Error(`exportOnnx: unsupported node ${JSON.stringify(never)}`);
      }
    }
  }
  const shapeOf = (value: string): readonly number[] => fg.nodes.find((x) => x.output === value)?.shape ?? fg.inputShape;
  for (const o of fg.outputs) {
    if (fp16) node({ name: `${o.name}.cast`, opType: 'Cast', input: [v(o.value)], output: [o.name], attribute: [attrInt('to', FLOAT)] });
    else if (v(o.value) !== o.name) throw new Error(`exportOnnx: graph output ${o.name} is not produced by a node of its own`);
  }

  const [c, h, w] = fg.inputShape as [number, number, number];
  const extra = opts.extraOutputs ?? [];
  if (extra.length && fp16) throw new Error('exportOnnx: extraOutputs needs a float32 export');
  const extraInfo = extra.map((name) => {
    const shape = fg.nodes.find((x) => x.output === name)?.shape;
    if (!shape) throw new Error(`exportOnnx: extra output ${name} is not the output of a folded layer (BN and activation outputs are)`);
    return valueInfo(v(name), ['batch', ...shape]);
  });
  return {
    irVersion: irVersionFor(opset),
    opsetImport: [{ domain: '', version: opset }],
    producerName: opts.producer ?? 'mobilenetv2-ts',
    producerVersion: '0.1.0',
    docString: `${familyOf(config).describe(config)}; eval mode, BN folded${fp16 ? ', float16' : ''}`,
    graph: {
      name: graphName(config),
      node: nodes,
      initializer: inits,
      input: [valueInfo(ONNX_INPUT, ['batch', c, h, w])],
      output: [
        ...fg.outputs.map((o) => valueInfo(o.name, ['batch', ...shapeOf(o.value)])),
        ...(featureWidth ? [valueInfo(ONNX_FEATURES, ['batch', featureWidth])] : []),
        ...extraInfo,
      ],
    },
    metadataProps: Object.entries({ ...opts.metadata, ...encodeModelInfo({ ...opts.info, config }), [FORMAT_KEY]: FORMAT_VERSION }).map(([key, value]) => ({ key, value })),
  };
}

/** `mobilenetv2-imagenet` as before the registry; other families by their family name. */
function graphName(config: BaseConfig): string {
  const arch = (config as BaseConfig & { arch?: unknown }).arch;
  return typeof arch === 'string' ? `${config.family}-${arch}` : config.family;
}

/** Export a graph and its weights (PyTorch state-dict names) as a serialized ONNX model. */
export function exportOnnx(graph: Graph, weights: StateDict, opts: ExportOptions = {}): Uint8Array {
  checkStateDict(graph, weights, 'exportOnnx', true);
  checkWeightValues(graph, weights, 'exportOnnx');
  const fg = foldBatchNorm(graph, weights);
  const model = onnx.ModelProto.create(foldedToOnnx(fg, graph.config, opts));
  return onnx.ModelProto.encode(model).finish();
}

/** Decode ONNX bytes; throws `<source>: not an ONNX model` on anything else. */
export function decodeOnnx(bytes: Uint8Array, source: string): onnxProto.onnx.ModelProto {
  let m: onnxProto.onnx.ModelProto;
  try {
    m = onnx.ModelProto.decode(bytes);
  } catch (e) {
    fail(source, `not an ONNX model (${(e as Error).message})`);
  }
  if (!m.graph || Number(m.irVersion) <= 0 || m.opsetImport.length === 0) fail(source, `not an ONNX model`);
  return m;
}

/** An ONNX model's metadata_props as a plain record. */
export function onnxProps(m: onnxProto.onnx.IModelProto): Record<string, string> {
  return Object.fromEntries((m.metadataProps ?? []).map((p) => [p.key ?? '', p.value ?? '']));
}

/** The model an exported ONNX file describes in its metadata: family, config, preprocessing, labels. */
export function readOnnxInfo(bytes: Uint8Array, source: string): ModelInfo {
  const props = onnxProps(decodeOnnx(bytes, source));
  const fmt = props[FORMAT_KEY];
  if (fmt !== undefined && fmt !== FORMAT_VERSION) fail(source, `unsupported ${FORMAT_KEY} '${fmt}' (expected '${FORMAT_VERSION}')`);
  const info = decodeModelInfo(props, source);
  if (!info) fail(source, `no ${CONFIG_KEY} metadata (not exported by mobilenetv2-ts?)`);
  return info;
}

/** The config stored in an exported model's metadata. */
export function readOnnxConfig(bytes: Uint8Array, source: string): BaseConfig {
  return readOnnxInfo(bytes, source).config;
}
