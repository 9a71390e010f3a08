/**
 * Post-training static int8 quantization of an exported (float32, BN-folded) model to ONNX's QDQ form, laid out
 * the way ONNX Runtime's QDQ transformer fuses it into integer kernels on the CPU:
 *
 *  - Conv: DQ(uint8 x), DQ(int8 w, per output channel, axis 0, zero point 0), DQ(int32 bias, scale x_scale·w_scale)
 *    -> Conv [-> Relu/Clip] -> Q. ORT makes QLinearConv; the Relu/Clip goes because the Q's range starts at 0.
 *  - Add: DQ on both inputs, Q on the output -> QLinearAdd. GlobalAveragePool -> QLinearGlobalAveragePool.
 *  - Gemm (classifier): DQ(uint8 a), DQ(int8 b, per output feature), DQ(int32 c), float output -> QGemm.
 *  - Flatten(axis 1) between the pool and the Gemm becomes Reshape [0, -1] (the same op), whose Q/DQ ORT drops.
 *
 * Activations are uint8, asymmetric, per tensor; each quantized tensor has one QuantizeLinear and one
 * DequantizeLinear per consumer. The ranges come from calibration (calibrate.ts) on images prepared as eval does.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { inputShape, type Dataset, type InputConvention } from '../data/dataset.js';
import { limitDataset } from '../data/open.js';
import { attrInt, decodeOnnx, readOnnxConfig, tensor } from '../engine/onnx/export.js';
import { CALIBRATION_METHODS, calibrationRange, collectStats, datasetBatches, type CalibrationImages, type CalibrationMethod } from './calibrate.js';
import { fail } from '../util/errors.js';

const { onnx } = onnxProto;
type IModelProto = onnxProto.onnx.IModelProto;
type INodeProto = onnxProto.onnx.INodeProto;
type ITensorProto = onnxProto.onnx.ITensorProto;
const DT = onnx.TensorProto.DataType;

/** Metadata key holding how a model was quantized (JSON). */
export const QUANT_KEY = 'mnv2.quantization';

/** Quantization parameters: real = scale · (q - zeroPoint). */
export interface QParams {
  scale: number;
  zeroPoint: number;
}

/** uint8 asymmetric parameters for the range [lo, hi] (lo <= 0 <= hi, so 0 is exact), as ORT computes them. */
export function activationParams(lo: number, hi: number): QParams {
  if (!(lo <= 0 && hi >= 0)) throw new Error(`activationParams: range [${lo}, ${hi}] must contain 0`);
  // A tensor that was always 0: any scale is exact; 1/255 keeps a following Clip(0, 6) provably redundant.
  if (hi === lo) return { scale: Math.fround(1 / 255), zeroPoint: 0 };
  const scale = Math.fround((hi - lo) / 255);
  return { scale, zeroPoint: Math.min(255, Math.max(0, Math.round(-lo / scale))) };
}

/**
 * Symmetric per-channel int8: for each index c along `axis`, scale_c = max|w_c| / qmax (1 for an all-zero
 * channel) and q = round(w / scale_c) in [-qmax, qmax]. `dims` is w's shape (row-major).
 */
export function quantizePerChannel(w: Float32Array, dims: readonly number[], axis: number, qmax = 127): { q: Int8Array; scale: Float32Array } {
  const channels = dims[axis]!;
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  if (dims.reduce((a, b) => a * b, 1) !== w.length) throw new Error(`quantizePerChannel: ${w.length} values for shape [${dims.join(', ')}]`);
  const chan = (i: number): number => Math.floor(i / inner) % channels;
  const maxAbs = new Float64Array(channels);
  for (let i = 0; i < w.length; i++) maxAbs[chan(i)] = Math.max(maxAbs[chan(i)]!, Math.abs(w[i]!));
  const scale = Float32Array.from(maxAbs, (m) => (m > 0 ? m / qmax : 1));
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) q[i] = Math.max(-qmax, Math.min(qmax, Math.round(w[i]! / scale[chan(i)]!)));
  return { q, scale };
}

function intTensor(name: string, dims: readonly number[], dataType: number, values: Int8Array | Uint8Array | Int32Array | number[]): ITensorProto {
  let raw: Uint8Array;
  if (dataType === DT.INT32 || dataType === DT.INT64) {
    const size = dataType === DT.INT32 ? 4 : 8;
    raw = new Uint8Array(values.length * size);
    const dv = new DataView(raw.buffer);
    for (let i = 0; i < values.length; i++) {
      if (size === 4) dv.setInt32(i * 4, values[i]!, true);
      else dv.setBigInt64(i * 8, BigInt(values[i]!), true);
    }
  } else {
    raw = dataType === DT.INT8 ? new Uint8Array(Int8Array.from(values).buffer) : Uint8Array.from(values);
  }
  return { name, dims: [...dims], dataType, rawData: raw };
}

function floatData(t: ITensorProto, source: string): Float32Array {
  if (t.dataType !== DT.FLOAT) fail(source, `initializer ${t.name} is not float32 (data type ${t.dataType}); quantize a float32 model`);
  if (t.rawData && t.rawData.length > 0) {
    const dv = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
    return Float32Array.from({ length: t.rawData.byteLength / 4 }, (_, i) => dv.getFloat32(i * 4, true));
  }
  return Float32Array.from(t.floatData ?? []);
}

const attr = (n: INodeProto, name: string): onnxProto.onnx.IAttributeProto | undefined => n.attribute?.find((a) => a.name === name);
const attrNum = (n: INodeProto, name: string, dflt: number): number => {
  const a = attr(n, name);
  if (!a) return dflt;
  return Number(a.type === onnx.AttributeProto.AttributeType.FLOAT ? a.f : a.i);
};

/** Which tensors a float32 graph quantizes, and which compute nodes become QDQ groups. */
export interface QdqPlan {
  /** Every quantized activation -> the tensor whose calibrated range it uses (itself, or a pass-through op's input). */
  quantized: Map<string, string>;
  /** The tensors to calibrate (those that use their own range), in graph order. */
  calibrate: string[];
  /** Names of the nodes quantized as QDQ groups (Conv, Gemm, Add, GlobalAveragePool, Flatten -> Reshape). */
  nodes: Set<string>;
}

/** Plans the quantization of a float32 graph (see the file comment for the op rules). */
export function planQdq(model: IModelProto, source = '<model>', o: { floatConvs?: number } = {}): QdqPlan {
  const g = model.graph;
  let convsLeft = o.floatConvs ?? 0; // the first ones stay float32 (see QuantizeOptions.floatConvs)
  if (!g?.node) fail(source, `no graph`);
  const inits = new Set((g.initializer ?? []).map((t) => t.name!));
  const outputs = new Set((g.output ?? []).map((o) => o.name!));
  const consumers = new Map<string, INodeProto[]>();
  for (const n of g.node) for (const i of n.input ?? []) if (i) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  for (const n of g.node) {
    if (n.opType === 'QuantizeLinear' || n.opType === 'DequantizeLinear') fail(source, `already quantized (has ${n.opType} ${n.name})`);
  }
  const quantized = new Map<string, string>();
  const nodes = new Set<string>();
  const use = (t: string): void => {
    if (!quantized.has(t)) quantized.set(t, t);
  };
  // The tensor that carries a node's output to the next quantized op: through a lone Relu/Clip, which the
  // output Q then makes redundant (its range starts at 0).
  const carried = (out: string): string | null => {
    const cs = consumers.get(out) ?? [];
    let t = out;
    const c = cs[0];
    if (cs.length === 1 && !outputs.has(out) && (c!.opType === 'Relu' || (c!.opType === 'Clip' && (c!.input ?? []).slice(1).every((i) => inits.has(i))))) {
      t = c!.output![0]!;
    }
    return outputs.has(t) ? null : t;
  };
  for (const n of g.node) {
    const ins = n.input ?? [];
    const name = n.name!;
    switch (n.opType) {
      case 'Conv':
        if (!inits.has(ins[1]!) || (ins[2] && !inits.has(ins[2]))) break;
        if (convsLeft > 0) {
          convsLeft--;
          break;
        }
        nodes.add(name);
        use(ins[0]!);
        break;
      case 'Gemm':
        if (!inits.has(ins[1]!) || (ins[2] && !inits.has(ins[2])) || attrNum(n, 'alpha', 1) !== 1 || attrNum(n, 'beta', 1) !== 1 || attrNum(n, 'transA', 0) !== 0) break;
        nodes.add(name);
        use(ins[0]!);
        break;
      case 'Add':
        if (ins.length !== 2 || ins.some((i) => inits.has(i))) break;
        nodes.add(name);
        for (const i of ins) use(i);
        break;
      case 'GlobalAveragePool':
        nodes.add(name);
        use(ins[0]!);
        break;
      case 'Flatten':
        // Pass-through: same values, same range (as Reshape [0, -1], which ORT runs on uint8).
        if (attrNum(n, 'axis', 1) === 1 && quantized.has(ins[0]!) && !outputs.has(n.output![0]!)) {
          nodes.add(name);
          quantized.set(n.output![0]!, quantized.get(ins[0]!)!);
        }
        continue;
      default:
        continue;
    }
    if (nodes.has(name) && n.opType !== 'Gemm') {
      const t = carried(n.output![0]!);
      if (t) use(t);
    }
  }
  const calibrate = [...quantized].filter(([t, src]) => t === src).map(([t]) => t);
  return { quantized, calibrate, nodes };
}

export interface QdqOptions {
  /** Largest weight magnitude in int8 (default 127; 63 gives 7-bit weights). */
  weightQmax?: number;
  /** Stored as JSON under QUANT_KEY. */
  info?: Record<string, unknown>;
}

/** Builds the QDQ model from a float32 model, its plan and the range of each calibrated tensor. */
export function buildQdqModel(
  model: IModelProto, plan: QdqPlan, ranges: ReadonlyMap<string, readonly [number, number]>, opts: QdqOptions = {}, source = '<model>',
): IModelProto {
  const g = model.graph!;
  const opset = (model.opsetImport ?? []).find((o) => !o.domain)?.version;
  if (opset === undefined || opset === null || Number(opset) < 13) fail(source, `per-channel QDQ needs opset >= 13, the model has ${opset ?? 'none'}`);
  const initByName = new Map((g.initializer ?? []).map((t) => [t.name!, t]));
  const replaced = new Set<string>();
  const inits: ITensorProto[] = [];
  const nodes: INodeProto[] = [];
  const qmax = opts.weightQmax ?? 127;

  const params = new Map<string, QParams>();
  const paramsOf = (t: string): QParams => {
    const src = plan.quantized.get(t)!;
    let p = params.get(src);
    if (!p) {
      const r = ranges.get(src);
      if (!r) throw new Error(`buildQdqModel: no calibrated range for ${src}`);
      p = activationParams(r[0], r[1]);
      params.set(src, p);
      inits.push(tensor(`${src}.scale`, [], [p.scale], false), intTensor(`${src}.zero_point`, [], DT.UINT8, [p.zeroPoint]));
    }
    return p;
  };
  const qparamNames = (t: string): [string, string] => {
    paramsOf(t);
    const src = plan.quantized.get(t)!;
    return [`${src}.scale`, `${src}.zero_point`];
  };
  const emitQ = (t: string): void => {
    nodes.push({ name: `${t}.quantize`, opType: 'QuantizeLinear', input: [t, ...qparamNames(t)], output: [`${t}.quantized`] });
  };
  const emitDq = (t: string, consumer: string, slot: number): string => {
    const out = `${t}.dequantized.${consumer}.${slot}`;
    nodes.push({ name: out, opType: 'DequantizeLinear', input: [`${t}.quantized`, ...qparamNames(t)], output: [out] });
    return out;
  };
  /** int8 weight [+ int32 bias] of a Conv/Gemm and their DequantizeLinear nodes; returns the new input names. */
  const emitWeights = (n: INodeProto, axis: number): string[] => {
    const [x, wName, bName] = n.input as string[];
    const wInit = initByName.get(wName!)!;
    const dims = (wInit.dims ?? []).map(Number);
    const { q, scale } = quantizePerChannel(floatData(wInit, source), dims, axis, qmax);
    const out = dims[axis]!;
    const wq = `${wName}.quantized`;
    inits.push(intTensor(wq, dims, DT.INT8, q), tensor(`${wName}.scale`, [out], scale, false), intTensor(`${wName}.zero_point`, [out], DT.INT8, new Int8Array(out)));
    nodes.push({ name: `${wName}.dequantize`, opType: 'DequantizeLinear', input: [wq, `${wName}.scale`, `${wName}.zero_point`], output: [`${wName}.dequantized`], attribute: [attrInt('axis', axis)] });
    replaced.add(wName!);
    const inputs = [`${wName}.dequantized`];
    if (bName) {
      const b = floatData(initByName.get(bName)!, source);
      if (b.length !== out) fail(source, `${n.name}: bias ${bName} has ${b.length} values for ${out} output channels`);
      // QLinearConv / QGemm read the int32 bias with scale x_scale · w_scale (in float32).
      const xs = paramsOf(x!).scale;
      const bs = Float32Array.from(scale, (s) => Math.fround(xs * s));
      const bq = Int32Array.from(b, (v, i) => Math.max(-2147483647, Math.min(2147483647, Math.round(v / bs[i]!))));
      const bqName = `${bName}.quantized`;
      // No zero point (it defaults to 0): the fused kernels read the int32 bias alone.
      inits.push(intTensor(bqName, [out], DT.INT32, bq), tensor(`${bName}.scale`, [out], bs, false));
      nodes.push({ name: `${bName}.dequantize`, opType: 'DequantizeLinear', input: [bqName, `${bName}.scale`], output: [`${bName}.dequantized`], attribute: [attrInt('axis', 0)] });
      replaced.add(bName);
      inputs.push(`${bName}.dequantized`);
    }
    return inputs;
  };

  for (const i of g.input ?? []) if (plan.quantized.has(i.name!)) emitQ(i.name!);
  for (const n of g.node ?? []) {
    const name = n.name!;
    let node: INodeProto = n;
    if (plan.nodes.has(name) && (n.opType === 'Conv' || n.opType === 'Gemm')) {
      const axis = n.opType === 'Gemm' && attrNum(n, 'transB', 0) === 0 ? 1 : 0;
      const x = n.input![0]!;
      node = { ...n, input: [emitDq(x, name, 0), ...emitWeights(n, axis)] };
    } else if (plan.nodes.has(name) && n.opType === 'Flatten') {
      const shape = `${name}.shape`;
      inits.push(intTensor(shape, [2], DT.INT64, [0, -1]));
      node = { name, opType: 'Reshape', input: [emitDq(n.input![0]!, name, 0), shape], output: n.output };
    } else if ((n.input ?? []).some((i) => plan.quantized.has(i))) {
      node = { ...n, input: (n.input ?? []).map((i, slot) => (plan.quantized.has(i) ? emitDq(i, name, slot) : i)) };
    }
    nodes.push(node);
    for (const o of n.output ?? []) if (plan.quantized.has(o)) emitQ(o);
  }
  for (const t of g.initializer ?? []) if (!replaced.has(t.name!)) inits.push(t);

  return {
    ...model,
    docString: `${model.docString ?? ''}${model.docString ? ', ' : ''}int8 QDQ (per-channel int8 weights, uint8 activations)`,
    graph: { ...g, node: nodes, initializer: inits },
    metadataProps: [...(model.metadataProps ?? []).filter((p) => p.key !== QUANT_KEY), { key: QUANT_KEY, value: JSON.stringify(opts.info ?? {}) }],
  };
}

/** A classification dataset's images, prepared with `conv` as `mnv2 eval` prepares them. */
export function datasetImages(ds: Dataset, conv: InputConvention): CalibrationImages {
  const s = inputShape(ds, conv);
  return {
    name: ds.name,
    count: ds.count,
    shape: [s.channels, s.height, s.width],
    subset: (n, seed) => datasetImages(limitDataset(ds, n, seed), conv),
    async *batches(batch) {
      yield* datasetBatches(ds, conv, batch);
    },
  };
}

export interface QuantizeOptions {
  method?: CalibrationMethod;
  /** For 'percentile' (default 99.99). */
  percentile?: number;
  /** Calibration images: a fixed random subset (seeded) of the dataset (default 512). */
  calibImages?: number;
  seed?: number;
  /** Calibration batch size (default 32). */
  batch?: number;
  threads?: number;
  /**
   * 7 (default): weights in [-63, 63], so x86 u8·s8 kernels without VNNI (AVX2's vpmaddubsw adds two u8·s8
   * products in int16) cannot saturate; 8: [-127, 127], for VNNI or ARM.
   */
  weightBits?: 7 | 8;
  /**
   * Leave the first n convs (graph order) in float32; the conv after them quantizes its input. For models whose
   * early activations per-tensor uint8 cannot carry: few live channels at 0..6 next to near-zero ones, amplified by
   * the projection after them (the det-c detector: COCO AP 0.235 float32, 0.033 all-int8).
   */
  floatConvs?: number;
}

export interface QuantizeResult {
  /** The serialized QDQ model. */
  bytes: Uint8Array;
  /** Calibrated [lo, hi] of each quantized activation. */
  ranges: Map<string, [number, number]>;
  plan: QdqPlan;
  calibImages: number;
}

/** Checks the options, with messages that name the problem. */
function checkQuantizeOptions(o: QuantizeOptions): Required<Pick<QuantizeOptions, 'method' | 'percentile' | 'calibImages' | 'weightBits' | 'floatConvs'>> {
  const method = o.method ?? 'percentile';
  if (!(CALIBRATION_METHODS as readonly string[]).includes(method)) {
    throw new Error(`unknown calibration method '${method}' (expected ${CALIBRATION_METHODS.join(', ')})`);
  }
  const calibImages = o.calibImages ?? 512;
  if (!Number.isInteger(calibImages) || calibImages < 1) throw new Error(`calibration images must be a positive integer, got ${calibImages}`);
  const percentile = o.percentile ?? 99.99;
  if (!(percentile > 0 && percentile <= 100)) throw new Error(`percentile must be in (0, 100], got ${percentile}`);
  const weightBits = o.weightBits ?? 7;
  if (weightBits !== 7 && weightBits !== 8) throw new Error(`weight bits must be 7 or 8, got ${weightBits}`);
  const floatConvs = o.floatConvs ?? 0;
  if (!Number.isInteger(floatConvs) || floatConvs < 0) throw new Error(`float convs must be an integer >= 0, got ${floatConvs}`);
  return { method, percentile, calibImages, weightBits, floatConvs };
}

/**
 * Quantizes a float32 model exported by this project (ONNX bytes) to int8 QDQ, calibrated on a seeded random
 * subset of `calib`: a classification dataset (prepared with its input convention, as eval prepares it) or any
 * calibration images (a detector's: src/detect/calibration.ts).
 */
export async function quantizeOnnx(
  fp32: Uint8Array, calib: { dataset: Dataset; input: InputConvention } | CalibrationImages, opts: QuantizeOptions = {}, source = '<onnx bytes>',
): Promise<QuantizeResult> {
  const { method, percentile, calibImages, weightBits, floatConvs } = checkQuantizeOptions(opts);
  const config = readOnnxConfig(fp32, source);
  const model = decodeOnnx(fp32, source);
  // Shape operands (a detector's head reshapes) are int64; any other non-float32 tensor is fp16 or already quantized.
  for (const t of model.graph!.initializer ?? []) {
    if (t.dataType !== DT.FLOAT && t.dataType !== DT.INT64) fail(source, `initializer ${t.name} is not float32; quantize a float32 export (not --fp16)`);
  }
  const all = 'dataset' in calib ? datasetImages(calib.dataset, calib.input) : calib;
  const want = [config.inChannels, config.resolution, config.resolution];
  if (all.shape.some((d, i) => d !== want[i])) throw new Error(`${all.name} gives ${all.shape.join('x')} inputs, the model takes ${want.join('x')}`);
  const images = all.subset(calibImages, opts.seed ?? 0);
  const plan = planQdq(model, source, { floatConvs });
  const stats = await collectStats(model, plan.calibrate, images, { batch: opts.batch, threads: opts.threads, histograms: method !== 'minmax' });
  // The image itself is never clipped: its range is the preprocessing's, and every pixel value carries signal.
  const inputs = new Set((model.graph!.input ?? []).map((i) => i.name));
  const ranges = new Map([...stats].map(([t, s]) => [t, calibrationRange(inputs.has(t) ? 'minmax' : method, s, { percentile })]));
  const info = {
    method, ...(method === 'percentile' ? { percentile } : {}), calibImages: images.count, calibDataset: all.name, seed: opts.seed ?? 0,
    weights: `int8 symmetric per-channel, ${weightBits}-bit`, activations: 'uint8 asymmetric per-tensor', ...(floatConvs ? { floatConvs } : {}),
  };
  const q = buildQdqModel(model, plan, ranges, { weightQmax: 2 ** (weightBits - 1) - 1, info }, source);
  return { bytes: onnx.ModelProto.encode(onnx.ModelProto.create(q)).finish(), ranges, plan, calibImages: images.count };
}

/** Op types (with their count) of the graph ONNX Runtime actually runs after its optimizations ('all' level). */
export async function optimizedOpCounts(bytes: Uint8Array): Promise<Map<string, number>> {
  const dir = mkdtempSync(join(tmpdir(), 'mnv2-ort-'));
  try {
    const file = join(dir, 'optimized.onnx');
    const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all', optimizedModelFilePath: file, intraOpNumThreads: 1, logSeverityLevel: 3 });
    await s.release();
    const counts = new Map<string, number>();
    for (const n of decodeOnnx(new Uint8Array(readFileSync(file)), file).graph!.node ?? []) counts.set(n.opType ?? '', (counts.get(n.opType ?? '') ?? 0) + 1);
    return counts;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Compute ops in the optimized graph: integer kernels vs float32 ones (any domain: nchwc Conv, FusedConv, ...). */
export const INT8_OPS = ['QLinearConv', 'QLinearAdd', 'QLinearGlobalAveragePool', 'QGemm', 'QLinearMatMul'] as const;
export const FLOAT_OPS = ['Conv', 'FusedConv', 'Gemm', 'FusedGemm', 'MatMul', 'Add', 'GlobalAveragePool'] as const;

/** "57 QLinearConv, 14 QLinearAdd, ...; float32 compute ops left: none" from optimizedOpCounts. */
export function formatOpCounts(counts: ReadonlyMap<string, number>): string {
  const list = (ops: readonly string[]): string => ops.filter((o) => counts.has(o)).map((o) => `${counts.get(o)} ${o}`).join(', ') || 'none';
  return `${list(INT8_OPS)}; float32 compute ops left: ${list(FLOAT_OPS)}`;
}
