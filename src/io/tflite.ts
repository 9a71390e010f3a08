/**
 * TFLite flatbuffers (`.tflite`) read with the `flatbuffers` package's ByteBuffer: the model's subgraphs with their
 * tensors (name, shape, type, per-tensor or per-axis quantization, constant data), operators (builtin name or
 * custom code, decoded builtin options of the common vision ops, custom options decoded from FlexBuffers) and
 * subgraph inputs/outputs. Generic: nothing here knows MobileNetV2 (see tflite-mobilenetv2.ts for that).
 *
 * The accessors below read only the fields listed, by their field ids in TensorFlow's
 * tensorflow/lite/schema/schema.fbs (a field's vtable slot is 4 + 2·id; a union takes two ids, type then value):
 *   Model         0 version:uint, 1 operator_codes:[OperatorCode], 2 subgraphs:[SubGraph], 3 description:string,
 *                 4 buffers:[Buffer]
 *   OperatorCode  0 deprecated_builtin_code:byte, 1 custom_code:string, 2 version:int = 1, 3 builtin_code:int
 *                 (the op is max(0, 3): files before the int field carry the byte only)
 *   SubGraph      0 tensors:[Tensor], 1 inputs:[int], 2 outputs:[int], 3 operators:[Operator], 4 name:string
 *   Tensor        0 shape:[int], 1 type:byte, 2 buffer:uint, 3 name:string, 4 quantization:QuantizationParameters,
 *                 5 is_variable:bool, 7 shape_signature:[int]
 *   QuantizationParameters  0 min:[float], 1 max:[float], 2 scale:[float], 3 zero_point:[long],
 *                 6 quantized_dimension:int
 *   Operator      0 opcode_index:uint, 1 inputs:[int], 2 outputs:[int], 3 builtin_options_type:ubyte,
 *                 4 builtin_options:table, 5 custom_options:[ubyte], 6 custom_options_format:byte (0 = FlexBuffers)
 *   Buffer        0 data:[ubyte], 1 offset:ulong, 2 size:ulong (data outside the flatbuffer, from the file start)
 * Every offset and length is checked against the file before it is used, so a corrupt file is an error, not
 * garbage or an out-of-range read.
 */
import { ByteBuffer } from 'flatbuffers';
import { toObject } from 'flatbuffers/js/flexbuffers.js';
import { halfBitsToNumber } from './safetensors.js';
import { readFileBounded } from '../util/read-file.js';
import { failFor } from '../util/errors.js';

/** TensorType enum, by value. */
const TENSOR_TYPES = [
  'float32', 'float16', 'int32', 'uint8', 'int64', 'string', 'bool', 'int16', 'complex64', 'int8', 'float64',
  'complex128', 'uint64', 'resource', 'variant', 'uint32', 'uint16', 'int4', 'bfloat16',
] as const;
export type TfliteType = (typeof TENSOR_TYPES)[number];

/** BuiltinOperator names of the ops vision models use (others are reported as BUILTIN_<code>). */
const BUILTIN_NAMES: Readonly<Record<number, string>> = {
  0: 'ADD', 1: 'AVERAGE_POOL_2D', 2: 'CONCATENATION', 3: 'CONV_2D', 4: 'DEPTHWISE_CONV_2D', 5: 'DEPTH_TO_SPACE',
  6: 'DEQUANTIZE', 9: 'FULLY_CONNECTED', 11: 'L2_NORMALIZATION', 14: 'LOGISTIC', 17: 'MAX_POOL_2D', 18: 'MUL',
  19: 'RELU', 21: 'RELU6', 22: 'RESHAPE', 23: 'RESIZE_BILINEAR', 25: 'SOFTMAX', 26: 'SPACE_TO_DEPTH', 28: 'TANH',
  32: 'CUSTOM', 34: 'PAD', 36: 'GATHER', 39: 'TRANSPOSE', 40: 'MEAN', 41: 'SUB', 42: 'DIV', 43: 'SQUEEZE',
  45: 'STRIDED_SLICE', 47: 'EXP', 49: 'SPLIT', 53: 'CAST', 55: 'MAXIMUM', 56: 'ARG_MAX', 57: 'MINIMUM', 60: 'PADV2',
  67: 'TRANSPOSE_CONV', 74: 'SUM', 82: 'REDUCE_MAX', 83: 'PACK', 88: 'UNPACK', 97: 'RESIZE_NEAREST_NEIGHBOR',
  98: 'LEAKY_RELU', 114: 'QUANTIZE', 117: 'HARD_SWISH',
};

const PADDING = ['SAME', 'VALID'] as const;
const ACTIVATIONS = ['NONE', 'RELU', 'RELU_N1_TO_1', 'RELU6', 'TANH', 'SIGN_BIT'] as const;

/**
 * Builtin option tables decoded, by BuiltinOptions union type: [field name, kind, default] in field-id order
 * ('pad' and 'act' are the Padding and ActivationFunctionType enums).
 */
type FieldKind = 'int' | 'bool' | 'float' | 'pad' | 'act' | 'ints';
const OPTION_TABLES: Readonly<Record<number, readonly (readonly [string, FieldKind, number])[]>> = {
  1: [['padding', 'pad', 0], ['strideW', 'int', 0], ['strideH', 'int', 0], ['activation', 'act', 0], ['dilationW', 'int', 1], ['dilationH', 'int', 1]], // Conv2DOptions
  2: [['padding', 'pad', 0], ['strideW', 'int', 0], ['strideH', 'int', 0], ['depthMultiplier', 'int', 0], ['activation', 'act', 0], ['dilationW', 'int', 1], ['dilationH', 'int', 1]], // DepthwiseConv2DOptions
  5: [['padding', 'pad', 0], ['strideW', 'int', 0], ['strideH', 'int', 0], ['filterW', 'int', 0], ['filterH', 'int', 0], ['activation', 'act', 0]], // Pool2DOptions
  8: [['activation', 'act', 0], ['weightsFormat', 'int', 0], ['keepNumDims', 'bool', 0]], // FullyConnectedOptions
  9: [['beta', 'float', 0]], // SoftmaxOptions
  10: [['axis', 'int', 0], ['activation', 'act', 0]], // ConcatenationOptions
  11: [['activation', 'act', 0]], // AddOptions
  15: [['newHeight', 'int', 0], ['newWidth', 'int', 0], ['alignCorners', 'bool', 0], ['halfPixelCenters', 'bool', 0]], // ResizeBilinearOptions
  17: [['newShape', 'ints', 0]], // ReshapeOptions
  21: [['activation', 'act', 0]], // MulOptions
  27: [['keepDims', 'bool', 0]], // ReducerOptions
  28: [['activation', 'act', 0]], // SubOptions
  30: [['squeezeDims', 'ints', 0]], // SqueezeOptions
};

export interface TfliteQuantization {
  /** One scale per tensor, or one per slice along `axis`. */
  scale: Float32Array;
  zeroPoint: number[];
  /** quantized_dimension: the axis of per-axis scales (0 for per-tensor). */
  axis: number;
  min?: Float32Array;
  max?: Float32Array;
}

export interface TfliteTensor {
  index: number;
  name: string;
  shape: number[];
  /** -1 for dynamic dimensions, where the file says so. */
  shapeSignature?: number[];
  type: TfliteType;
  /** Constant data (little-endian, a view into the file), or undefined for activations. */
  data?: Uint8Array;
  quantization?: TfliteQuantization;
  isVariable: boolean;
}

export interface TfliteOperator {
  /** Builtin name (`CONV_2D`, `BUILTIN_<code>` if unnamed here) or, for custom ops, the custom code. */
  opcode: string;
  builtinCode: number;
  custom: boolean;
  version: number;
  /** Tensor indices; -1 marks an omitted optional input. */
  inputs: number[];
  outputs: number[];
  /** Decoded builtin options (padding, strides, fused activation, ...); empty for ops not decoded here. */
  options: Record<string, string | number | boolean | number[]>;
  /** Custom options: decoded if FlexBuffers (e.g. TFLite_Detection_PostProcess's), and the raw bytes. */
  customOptions?: unknown;
  customOptionsBytes?: Uint8Array;
}

export interface TfliteSubgraph {
  name: string;
  tensors: TfliteTensor[];
  operators: TfliteOperator[];
  inputs: number[];
  outputs: number[];
}

export interface TfliteModel {
  version: number;
  description: string;
  subgraphs: TfliteSubgraph[];
}

/** A table at an absolute position; every read is bounds-checked. */
class Table {
  constructor(private readonly bb: ByteBuffer, readonly pos: number, private readonly fail: (msg: string) => never) {}

  /** Absolute position of field `id`, or 0 if absent. */
  private at(id: number, size: number): number {
    const vt = this.pos - this.bb.readInt32(this.pos);
    this.check(vt, 2);
    const vtSize = this.bb.readUint16(vt);
    if (4 + 2 * id >= vtSize) return 0;
    this.check(vt, vtSize);
    const rel = this.bb.readUint16(vt + 4 + 2 * id);
    if (!rel) return 0;
    this.check(this.pos + rel, size);
    return this.pos + rel;
  }

  private check(pos: number, size: number): void {
    if (pos < 0 || size < 0 || pos + size > this.bb.capacity()) this.fail(`corrupt flatbuffer: ${size} bytes at ${pos} lie outside the ${this.bb.capacity()}-byte file`);
  }

  private scalar(id: number, size: number, read: (p: number) => number, def: number): number {
    const p = this.at(id, size);
    return p ? read(p) : def;
  }
  int(id: number, def = 0): number {
    return this.scalar(id, 4, (p) => this.bb.readInt32(p), def);
  }
  uint(id: number, def = 0): number {
    return this.scalar(id, 4, (p) => this.bb.readUint32(p), def);
  }
  byte(id: number, def = 0): number {
    return this.scalar(id, 1, (p) => this.bb.readInt8(p), def);
  }
  ubyte(id: number, def = 0): number {
    return this.scalar(id, 1, (p) => this.bb.readUint8(p), def);
  }
  float(id: number, def = 0): number {
    return this.scalar(id, 4, (p) => this.bb.readFloat32(p), def);
  }
  ulong(id: number): number {
    const p = this.at(id, 8);
    if (!p) return 0;
    const v = this.bb.readUint64(p);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`corrupt flatbuffer: 64-bit value ${v} is too large`);
    return Number(v);
  }

  private target(p: number): number {
    const t = p + this.bb.readUint32(p);
    this.check(t, 4);
    return t;
  }

  table(id: number): Table | undefined {
    const p = this.at(id, 4);
    return p ? new Table(this.bb, this.target(p), this.fail) : undefined;
  }
  string(id: number): string {
    const p = this.at(id, 4);
    if (!p) return '';
    const t = this.target(p);
    this.check(t + 4, this.bb.readUint32(t));
    return this.bb.__string(p) as string;
  }
  /** [absolute position of element 0, length] of a vector of `size`-byte elements, or undefined. */
  vector(id: number, size: number): [number, number] | undefined {
    const p = this.at(id, 4);
    if (!p) return undefined;
    const t = this.target(p);
    const n = this.bb.readUint32(t);
    this.check(t + 4, n * size);
    return [t + 4, n];
  }
  tables(id: number): Table[] {
    const v = this.vector(id, 4);
    return v ? Array.from({ length: v[1] }, (_, i) => new Table(this.bb, this.target(v[0] + 4 * i), this.fail)) : [];
  }
  ints(id: number): number[] {
    const v = this.vector(id, 4);
    return v ? Array.from({ length: v[1] }, (_, i) => this.bb.readInt32(v[0] + 4 * i)) : [];
  }
  floats(id: number): Float32Array | undefined {
    const v = this.vector(id, 4);
    return v ? Float32Array.from({ length: v[1] }, (_, i) => this.bb.readFloat32(v[0] + 4 * i)) : undefined;
  }
  longs(id: number): number[] {
    const v = this.vector(id, 8);
    return v ? Array.from({ length: v[1] }, (_, i) => Number(this.bb.readInt64(v[0] + 8 * i))) : [];
  }
  bytes(id: number): Uint8Array | undefined {
    const v = this.vector(id, 1);
    return v ? this.bb.bytes().subarray(v[0], v[0] + v[1]) : undefined;
  }
}

/** Reads a .tflite file; every error message starts with the path. */
export function readTflite(path: string): TfliteModel {
  return parseTflite(readFileBounded(path, { maxBytes: 2 ** 31, limitWhat: 'bytes a TFLite flatbuffer can have' }), path);
}

export function parseTflite(buf: Uint8Array, source: string): TfliteModel {
  const fail = failFor(source);
  if (buf.length < 8 || String.fromCharCode(...buf.subarray(4, 8)) !== 'TFL3') fail('not a TFLite model (no TFL3 file identifier)');
  const bb = new ByteBuffer(buf);
  const root = bb.readUint32(0);
  if (root + 4 > buf.length) fail(`corrupt flatbuffer: root table offset ${root} is past the end of the ${buf.length}-byte file`);
  const model = new Table(bb, root, fail);
  const buffers = model.tables(4).map((b) => {
    const offset = b.ulong(1);
    if (offset > 1) {
      const size = b.ulong(2);
      if (offset + size > buf.length) fail(`buffer data (${size} bytes at ${offset}) lies outside the file`);
      return buf.subarray(offset, offset + size);
    }
    return b.bytes(0);
  });
  const codes = model.tables(1).map((c) => {
    const builtin = Math.max(c.byte(0), c.int(3));
    const custom = builtin === 32;
    return { builtin, custom, name: custom ? c.string(1) : (BUILTIN_NAMES[builtin] ?? `BUILTIN_${builtin}`), version: c.int(2, 1) };
  });
  const subgraphs = model.tables(2).map((g, gi): TfliteSubgraph => {
    const tensors = g.tables(0).map((t, index): TfliteTensor => {
      const typeCode = t.byte(1);
      const type = TENSOR_TYPES[typeCode] ?? fail(`subgraph ${gi} tensor ${index}: unknown tensor type ${typeCode}`);
      const bufferIndex = t.uint(2);
      if (bufferIndex >= Math.max(buffers.length, 1)) fail(`subgraph ${gi} tensor ${index}: buffer ${bufferIndex} of ${buffers.length}`);
      const data = buffers[bufferIndex];
      const sig = t.ints(7);
      return {
        index, name: t.string(3), shape: t.ints(0), ...(sig.length ? { shapeSignature: sig } : {}), type,
        ...(data && data.length ? { data } : {}), ...quantization(t.table(4)), isVariable: t.ubyte(5) !== 0,
      };
    });
    const inRange = (list: number[], what: string, optional = false) => {
      for (const i of list) if (i >= tensors.length || i < (optional ? -1 : 0)) fail(`subgraph ${gi}: ${what} refers to tensor ${i} of ${tensors.length}`);
      return list;
    };
    const operators = g.tables(3).map((o, oi): TfliteOperator => {
      const code = codes[o.uint(0)] ?? fail(`subgraph ${gi} operator ${oi}: opcode index ${o.uint(0)} of ${codes.length}`);
      const op: TfliteOperator = {
        opcode: code.name, builtinCode: code.builtin, custom: code.custom, version: code.version,
        inputs: inRange(o.ints(1), `operator ${oi} (${code.name}) input`, true), outputs: inRange(o.ints(2), `operator ${oi} (${code.name}) output`),
        options: builtinOptions(o.ubyte(3), o.table(4)),
      };
      const custom = o.bytes(5);
      if (custom) {
        op.customOptionsBytes = custom;
        if (o.byte(6) === 0) {
          try {
            op.customOptions = toObject(new Uint8Array(custom).buffer); // a copy: slice() of a Node Buffer is a view
          } catch (e) {
            fail(`operator ${oi} (${code.name}): custom options are not valid FlexBuffers (${(e as Error).message})`);
          }
        }
      }
      return op;
    });
    return { name: g.string(4), tensors, operators, inputs: inRange(g.ints(1), 'input'), outputs: inRange(g.ints(2), 'output') };
  });
  if (!subgraphs.length) fail('the model has no subgraph');
  return { version: model.uint(0), description: model.string(3), subgraphs };
}

function quantization(q: Table | undefined): { quantization?: TfliteQuantization } {
  const scale = q?.floats(2);
  if (!q || !scale || !scale.length) return {};
  const zeroPoint = q.longs(3);
  const min = q.floats(0);
  const max = q.floats(1);
  return { quantization: { scale, zeroPoint: zeroPoint.length ? zeroPoint : new Array(scale.length).fill(0), axis: q.int(6), ...(min ? { min } : {}), ...(max ? { max } : {}) } };
}

function builtinOptions(type: number, t: Table | undefined): TfliteOperator['options'] {
  const fields = OPTION_TABLES[type];
  if (!fields || !t) return {};
  const out: TfliteOperator['options'] = {};
  fields.forEach(([name, kind, def], id) => {
    if (kind === 'ints') out[name] = t.ints(id);
    else if (kind === 'float') out[name] = t.float(id, def);
    else if (kind === 'bool') out[name] = t.ubyte(id, def) !== 0;
    else if (kind === 'pad') out[name] = PADDING[t.byte(id, def)] ?? `PADDING_${t.byte(id, def)}`;
    else if (kind === 'act') out[name] = ACTIVATIONS[t.byte(id, def)] ?? `ACTIVATION_${t.byte(id, def)}`;
    else out[name] = t.int(id, def);
  });
  return out;
}

/**
 * A constant tensor's values as float32: float32/float16 as they are; uint8/int8/int16/int32 dequantized as
 * scale · (q − zero_point), per tensor or per slice along the quantized axis (int32 biases: scale = s_in · s_w).
 */
export function dequantize(t: TfliteTensor, source: string): Float32Array {
  const fail = failFor(`${source}: tensor '${t.name}'`);
  const d = t.data ?? fail('has no constant data');
  const n = t.shape.reduce((a, b) => a * b, 1);
  const size = { float32: 4, float16: 2, uint8: 1, int8: 1, int16: 2, int32: 4 }[t.type as string] ?? fail(`type ${t.type} cannot be read as weights`);
  if (d.length !== n * size) fail(`${d.length} bytes of data for shape [${t.shape}] × ${t.type}`);
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const out = new Float32Array(n);
  if (t.type === 'float32' || t.type === 'float16') {
    for (let i = 0; i < n; i++) out[i] = t.type === 'float32' ? dv.getFloat32(4 * i, true) : halfBitsToNumber(dv.getUint16(2 * i, true));
    return out;
  }
  const q = t.quantization ?? fail(`${t.type} data without quantization parameters`);
  const { scale, zeroPoint, axis } = q;
  const channels = scale.length;
  const inner = channels > 1 ? t.shape.slice(axis + 1).reduce((a, b) => a * b, 1) : n;
  if (channels > 1 && t.shape[axis] !== channels) fail(`${channels} scales for axis ${axis} of shape [${t.shape}]`);
  const read = { uint8: (i: number) => dv.getUint8(i), int8: (i: number) => dv.getInt8(i), int16: (i: number) => dv.getInt16(2 * i, true), int32: (i: number) => dv.getInt32(4 * i, true) }[t.type as 'uint8'];
  for (let i = 0; i < n; i++) {
    const c = channels > 1 ? Math.floor(i / inner) % channels : 0;
    out[i] = scale[c]! * (read(i) - zeroPoint[c]!);
  }
  return out;
}
