/**
 * Writes small TFLite flatbuffers for tests with the `flatbuffers` Builder, using the field ids documented in
 * src/io/tflite.ts. Only what the tests need: one subgraph, builtin or custom ops, constant or activation tensors.
 */
import { Builder } from 'flatbuffers';
import { encode } from 'flatbuffers/js/flexbuffers.js';

export interface SpecTensor {
  name: string;
  shape: number[];
  /** TensorType code: 0 float32, 2 int32, 3 uint8, 9 int8. */
  type: number;
  data?: Uint8Array;
  quant?: { scale: number[]; zeroPoint: number[]; axis?: number };
}

export interface SpecOp {
  /** BuiltinOperator code (32 = CUSTOM). */
  builtin: number;
  custom?: string;
  inputs: number[];
  outputs: number[];
  /** BuiltinOptions union type and its int fields by id (e.g. Conv2DOptions = 1: padding, stride_w, stride_h, act). */
  options?: { type: number; ints: number[] };
  /** Encoded as FlexBuffers. */
  customOptions?: unknown;
}

export function buildTflite(spec: { tensors: SpecTensor[]; ops: SpecOp[]; inputs: number[]; outputs: number[] }): Uint8Array {
  const b = new Builder(1024);
  const ints = (xs: number[]) => {
    b.startVector(4, xs.length, 4);
    for (let i = xs.length - 1; i >= 0; i--) b.addInt32(xs[i]!);
    return b.endVector();
  };
  const floats = (xs: number[]) => {
    b.startVector(4, xs.length, 4);
    for (let i = xs.length - 1; i >= 0; i--) b.addFloat32(xs[i]!);
    return b.endVector();
  };
  const longs = (xs: number[]) => {
    b.startVector(8, xs.length, 8);
    for (let i = xs.length - 1; i >= 0; i--) b.addInt64(BigInt(xs[i]!));
    return b.endVector();
  };
  const tables = (xs: number[]) => {
    b.startVector(4, xs.length, 4);
    for (let i = xs.length - 1; i >= 0; i--) b.addOffset(xs[i]!);
    return b.endVector();
  };
  // buffer 0 is the empty sentinel
  const buffers = [(() => { b.startObject(1); return b.endObject(); })()];
  const tensors = spec.tensors.map((t) => {
    let buffer = 0;
    if (t.data) {
      const data = b.createByteVector(t.data);
      b.startObject(1);
      b.addFieldOffset(0, data, 0);
      buffer = buffers.push(b.endObject()) - 1;
    }
    let quant = 0;
    if (t.quant) {
      const s = floats(t.quant.scale);
      const z = longs(t.quant.zeroPoint);
      b.startObject(7);
      b.addFieldOffset(2, s, 0);
      b.addFieldOffset(3, z, 0);
      b.addFieldInt32(6, t.quant.axis ?? 0, 0);
      quant = b.endObject();
    }
    const name = b.createString(t.name);
    const shape = ints(t.shape);
    b.startObject(6);
    b.addFieldOffset(0, shape, 0);
    b.addFieldInt8(1, t.type, 0);
    b.addFieldInt32(2, buffer, 0);
    b.addFieldOffset(3, name, 0);
    if (quant) b.addFieldOffset(4, quant, 0);
    return b.endObject();
  });
  const codes: number[] = [];
  const codeIndex = new Map<string, number>();
  const ops = spec.ops.map((o) => {
    const key = `${o.builtin}/${o.custom ?? ''}`;
    if (!codeIndex.has(key)) {
      const custom = o.custom ? b.createString(o.custom) : 0;
      b.startObject(4);
      b.addFieldInt8(0, Math.min(o.builtin, 127), 0);
      if (custom) b.addFieldOffset(1, custom, 0);
      b.addFieldInt32(2, 1, 1);
      b.addFieldInt32(3, o.builtin, 0);
      codeIndex.set(key, codes.push(b.endObject()) - 1);
    }
    let options = 0;
    if (o.options) {
      b.startObject(o.options.ints.length);
      o.options.ints.forEach((v, id) => b.addFieldInt32(id, v, null));
      options = b.endObject();
    }
    const custom = o.customOptions !== undefined ? b.createByteVector(encode(o.customOptions)) : 0;
    const inputs = ints(o.inputs);
    const outputs = ints(o.outputs);
    b.startObject(7);
    b.addFieldInt32(0, codeIndex.get(key)!, 0);
    b.addFieldOffset(1, inputs, 0);
    b.addFieldOffset(2, outputs, 0);
    if (options) {
      b.addFieldInt8(3, o.options!.type, 0);
      b.addFieldOffset(4, options, 0);
    }
    if (custom) b.addFieldOffset(5, custom, 0);
    return b.endObject();
  });
  const tv = tables(tensors);
  const iv = ints(spec.inputs);
  const ov = ints(spec.outputs);
  const opv = tables(ops);
  const gname = b.createString('main');
  b.startObject(5);
  b.addFieldOffset(0, tv, 0);
  b.addFieldOffset(1, iv, 0);
  b.addFieldOffset(2, ov, 0);
  b.addFieldOffset(3, opv, 0);
  b.addFieldOffset(4, gname, 0);
  const graph = b.endObject();
  const codesV = tables(codes);
  const graphs = tables([graph]);
  const desc = b.createString('test model');
  const bufs = tables(buffers);
  b.startObject(5);
  b.addFieldInt32(0, 3, 0);
  b.addFieldOffset(1, codesV, 0);
  b.addFieldOffset(2, graphs, 0);
  b.addFieldOffset(3, desc, 0);
  b.addFieldOffset(4, bufs, 0);
  b.finish(b.endObject(), 'TFL3');
  return b.asUint8Array().slice();
}
