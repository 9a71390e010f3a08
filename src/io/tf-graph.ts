/**
 * TensorFlow frozen graphs (`GraphDef` protobuf, e.g. the Object Detection API's `frozen_inference_graph.pb`) read
 * with protobufjs: nodes (name, op, inputs, attributes) and the values of Const tensors. Generic: nothing here
 * knows a model (see tf-graph-ssdlite.ts for SSDLite-MobileNetV2).
 *
 * The schema is the subset of TensorFlow's tensorflow/core/framework/{graph,node_def,attr_value,tensor,
 * tensor_shape,types}.proto this reader needs, with TF's field numbers; fields not listed are skipped by the decoder.
 */
import protobuf from 'protobufjs';
import type Long from 'long';
import { halfBitsToNumber } from './safetensors.js';
import { readFileBounded } from '../util/read-file.js';
import { failFor } from '../util/errors.js';

/** DataType values this reader names (types.proto); others are reported by number. */
export const TF_DTYPES = { DT_FLOAT: 1, DT_DOUBLE: 2, DT_INT32: 3, DT_UINT8: 4, DT_INT16: 5, DT_INT8: 6, DT_STRING: 7, DT_INT64: 9, DT_BOOL: 10, DT_BFLOAT16: 14, DT_HALF: 19 } as const;

const packed = (type: string, id: number) => ({ rule: 'repeated', type, id, options: { packed: true } });

/** protobufjs JSON descriptor of the GraphDef subset (package tensorflow). */
export const GRAPH_DEF_SCHEMA = {
  nested: {
    tensorflow: {
      nested: {
        DataType: { values: { DT_INVALID: 0, ...TF_DTYPES } },
        GraphDef: { fields: { node: { rule: 'repeated', type: 'NodeDef', id: 1 }, versions: { type: 'VersionDef', id: 4 } } },
        VersionDef: { fields: { producer: { type: 'int32', id: 1 }, minConsumer: { type: 'int32', id: 2 } } },
        NodeDef: {
          fields: {
            name: { type: 'string', id: 1 }, op: { type: 'string', id: 2 }, input: { rule: 'repeated', type: 'string', id: 3 },
            device: { type: 'string', id: 4 }, attr: { keyType: 'string', type: 'AttrValue', id: 5 },
          },
        },
        AttrValue: {
          oneofs: { value: { oneof: ['list', 's', 'i', 'f', 'b', 'type', 'shape', 'tensor', 'placeholder'] } },
          fields: {
            list: { type: 'ListValue', id: 1 }, s: { type: 'bytes', id: 2 }, i: { type: 'int64', id: 3 }, f: { type: 'float', id: 4 },
            b: { type: 'bool', id: 5 }, type: { type: 'DataType', id: 6 }, shape: { type: 'TensorShapeProto', id: 7 },
            tensor: { type: 'TensorProto', id: 8 }, placeholder: { type: 'string', id: 9 },
          },
          nested: {
            ListValue: {
              fields: {
                s: { rule: 'repeated', type: 'bytes', id: 2 }, i: packed('int64', 3), f: packed('float', 4), b: packed('bool', 5),
                type: packed('DataType', 6), shape: { rule: 'repeated', type: 'TensorShapeProto', id: 7 },
                tensor: { rule: 'repeated', type: 'TensorProto', id: 8 },
              },
            },
          },
        },
        TensorShapeProto: {
          fields: { dim: { rule: 'repeated', type: 'Dim', id: 2 }, unknownRank: { type: 'bool', id: 3 } },
          nested: { Dim: { fields: { size: { type: 'int64', id: 1 }, name: { type: 'string', id: 2 } } } },
        },
        TensorProto: {
          fields: {
            dtype: { type: 'DataType', id: 1 }, tensorShape: { type: 'TensorShapeProto', id: 2 }, tensorContent: { type: 'bytes', id: 4 },
            floatVal: packed('float', 5), doubleVal: packed('double', 6), intVal: packed('int32', 7), int64Val: packed('int64', 10),
            halfVal: packed('int32', 13),
          },
        },
      },
    },
  },
};

const root = protobuf.Root.fromJSON(GRAPH_DEF_SCHEMA);
/** The GraphDef message type (tests encode graphs with it). */
export const GraphDefType = root.lookupType('tensorflow.GraphDef');

type Int64 = number | Long;
export interface TfShape { dim?: { size?: Int64 }[]; unknownRank?: boolean }
export interface TfTensor {
  dtype?: number;
  tensorShape?: TfShape;
  tensorContent?: Uint8Array;
  floatVal?: number[];
  doubleVal?: number[];
  intVal?: number[];
  int64Val?: Int64[];
  halfVal?: number[];
}
export interface TfAttr {
  list?: { s?: Uint8Array[]; i?: Int64[]; f?: number[]; b?: boolean[]; type?: number[]; shape?: TfShape[] };
  s?: Uint8Array;
  i?: Int64;
  f?: number;
  b?: boolean;
  type?: number;
  shape?: TfShape;
  tensor?: TfTensor;
}
export interface TfNode {
  name: string;
  op: string;
  input: string[];
  attr: Record<string, TfAttr>;
}
export interface TfGraph {
  nodes: TfNode[];
  /** Nodes by name. */
  byName: ReadonlyMap<string, TfNode>;
}

/** A TF int64 as a number; beyond 2^53 it is not a size or index of any real tensor. */
export function int64(v: Int64 | undefined, fail: (msg: string) => never): number {
  const n = v === undefined ? 0 : typeof v === 'number' ? v : v.toNumber();
  if (!Number.isSafeInteger(n)) fail(`64-bit value ${String(v)} is out of range`);
  return n;
}

/** Reads a frozen GraphDef file; every error message starts with the path. */
export function readTfGraph(path: string): TfGraph {
  return parseTfGraph(readFileBounded(path, { maxBytes: 2 ** 31, limitWhat: 'bytes a GraphDef protobuf can have' }), path);
}

export function parseTfGraph(buf: Uint8Array, source: string): TfGraph {
  const fail = failFor(source);
  let nodes: TfNode[] | undefined;
  try {
    nodes = (GraphDefType.decode(buf) as unknown as { node?: TfNode[] }).node;
  } catch (e) {
    fail(`not a TensorFlow GraphDef (protobuf: ${(e as Error).message})`);
  }
  nodes ??= [];
  if (!nodes.length) fail('not a TensorFlow GraphDef (no nodes)');
  const byName = new Map<string, TfNode>();
  for (const [i, n] of nodes.entries()) {
    if (!n.name || !n.op) fail(`not a TensorFlow GraphDef (node ${i} has no ${n.name ? 'op' : 'name'})`);
    if (byName.has(n.name)) fail(`two nodes are called '${n.name}'`);
    byName.set(n.name, { name: n.name, op: n.op, input: n.input ?? [], attr: n.attr ?? {} });
  }
  return { nodes: [...byName.values()], byName };
}

/** An attribute of a node, or undefined (own properties only: attribute names come from the file). */
export function attrOf(n: TfNode, key: string): TfAttr | undefined {
  return Object.prototype.hasOwnProperty.call(n.attr, key) ? n.attr[key] : undefined;
}

/** A string attribute (padding, data_format), decoded as UTF-8. */
export function stringAttr(n: TfNode, key: string): string | undefined {
  const s = attrOf(n, key)?.s;
  return s === undefined ? undefined : Buffer.from(s).toString('utf8');
}

/** A list-of-ints attribute (strides, dilations). */
export function intsAttr(n: TfNode, key: string, fail: (msg: string) => never): number[] | undefined {
  return attrOf(n, key)?.list?.i?.map((v) => int64(v, fail));
}

/** Dimensions of a shape; -1 for unknown ones. */
export function shapeDims(s: TfShape | undefined, fail: (msg: string) => never): number[] {
  return (s?.dim ?? []).map((d) => int64(d.size, fail));
}

export interface TfValue {
  dtype: number;
  shape: number[];
  /** Float types as float32 (half and double converted), integer types as int32. */
  data: Float32Array | Int32Array;
}

/** Most elements a Const may fill by repeating its last *_val value. */
const MAX_SPLAT = 2 ** 24;

/** Bytes per element of tensor_content, by dtype. */
const CONTENT_BYTES: Readonly<Record<number, number>> = { 1: 4, 2: 8, 3: 4, 19: 2 };

/**
 * The value of a Const node: tensor_content bytes (little-endian), or the typed *_val fields, where TF repeats
 * the last value to fill the tensor (a single float_val is a splat). float32, float16, float64 and int32 only.
 */
export function constValue(n: TfNode, source: string): TfValue {
  const fail = (msg: string): never => failFor(source)(`Const '${n.name}': ${msg}`);
  if (n.op !== 'Const') fail(`is a ${n.op} node, not a Const`);
  const t = attrOf(n, 'value')?.tensor ?? fail('has no tensor value');
  const dtype = t.dtype ?? 0;
  const shape = shapeDims(t.tensorShape, fail);
  if (shape.some((d) => d < 0)) fail(`has an unknown dimension in its shape [${shape}]`);
  const count = shape.reduce((a, b) => a * b, 1);
  const width = CONTENT_BYTES[dtype] ?? fail(`has dtype ${dtypeName(dtype)}; only DT_FLOAT, DT_HALF, DT_DOUBLE and DT_INT32 constants are read`);
  if (count * width > 2 ** 31) fail(`shape [${shape}] holds more than 2 GiB`);
  const content = t.tensorContent;
  if (content && content.length) {
    if (content.length !== count * width) fail(`tensor_content has ${content.length} bytes, shape [${shape}] of ${dtypeName(dtype)} needs ${count * width}`);
    const view = new DataView(content.buffer, content.byteOffset, content.length);
    const read = { 1: (i: number) => view.getFloat32(4 * i, true), 2: (i: number) => view.getFloat64(8 * i, true), 3: (i: number) => view.getInt32(4 * i, true), 19: (i: number) => halfBitsToNumber(view.getUint16(2 * i, true)) }[dtype as 1 | 2 | 3 | 19];
    const data = dtype === 3 ? new Int32Array(count) : new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = read(i);
    return { dtype, shape, data };
  }
  const vals: readonly number[] = { 1: t.floatVal, 2: t.doubleVal, 3: t.intVal, 19: t.halfVal?.map((h) => halfBitsToNumber(h & 0xffff)) }[dtype as 1 | 2 | 3 | 19] ?? [];
  if (vals.length > count) fail(`has ${vals.length} values for shape [${shape}] (${count} elements)`);
  if (!vals.length && count) fail(`has no values for shape [${shape}]`);
  // a few bytes of splat must not make gigabytes: TF writes large tensors as tensor_content
  if (vals.length < count && count > MAX_SPLAT) fail(`repeats ${vals.length} value(s) into ${count} elements (shape [${shape}]); more than ${MAX_SPLAT} is refused`);
  const data = dtype === 3 ? new Int32Array(count) : new Float32Array(count);
  data.set(vals);
  if (vals.length < count) data.fill(vals[vals.length - 1]!, vals.length);
  return { dtype, shape, data };
}

export function dtypeName(dtype: number): string {
  return Object.entries(TF_DTYPES).find(([, v]) => v === dtype)?.[0] ?? `DataType ${dtype}`;
}

/** The node a node input names: `name`, `name:1` or a control input `^name`. */
export function inputNode(g: TfGraph, input: string): TfNode | undefined {
  return g.byName.get(input.replace(/^\^/, '').replace(/:\d+$/, ''));
}

/** Follows Identity nodes (a frozen variable's `X/read`) back to the node that makes the value. */
export function throughIdentity(g: TfGraph, n: TfNode | undefined): TfNode | undefined {
  for (let hops = 0; n?.op === 'Identity' && hops < 64; hops++) n = inputNode(g, n.input[0] ?? '');
  return n;
}
