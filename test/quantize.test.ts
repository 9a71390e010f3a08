/**
 * int8 quantization: the calibrators on synthetic data with known answers, the weight / activation parameters,
 * the QDQ graph of the committed Fashion-MNIST model (checked initializer by initializer against the float32
 * export), what ONNX Runtime makes of it (every conv a QLinearConv), int8 vs float32 logits, and the CLI.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import onnxProto from 'onnx-proto';
import { loadWeights } from '../src/io/weights.js';
import { exportOnnx, readOnnxConfig } from '../src/engine/onnx/export.js';
import { OrtModel } from '../src/engine/onnx/session.js';
import { Histogram, calibrationRange, datasetBatches, entropyThreshold, histogramFor, percentileRange } from '../src/quant/calibrate.js';
import {
  QUANT_KEY, activationParams, buildQdqModel, optimizedOpCounts, quantizeOnnx, quantizePerChannel, type QuantizeResult,
} from '../src/quant/quantize.js';
import { openDataset } from '../src/data/open.js';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { initWeights } from '../src/model/weights.js';
import { Rng } from '../src/util/rng.js';
import { relL2 } from './helpers/fixtures.js';

const { onnx } = onnxProto;
const DT = onnx.TensorProto.DataType;
const MODEL = fileURLToPath(new URL('../../models/fashion-mnist/model.safetensors', import.meta.url));
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const mnv2 = (...args: string[]) => promisify(execFile)(process.execPath, [CLI, ...args], { maxBuffer: 1 << 24 });
const tmp = mkdtempSync(join(tmpdir(), 'mnv2-quantize-'));

/** Initializer values decoded here from the raw little-endian bytes (independently of quantize.ts). */
function values(t: onnxProto.onnx.ITensorProto): number[] {
  const raw = t.rawData!;
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (t.dataType) {
    case DT.FLOAT: return Array.from({ length: raw.length / 4 }, (_, i) => dv.getFloat32(4 * i, true));
    case DT.INT32: return Array.from({ length: raw.length / 4 }, (_, i) => dv.getInt32(4 * i, true));
    case DT.INT8: return Array.from({ length: raw.length }, (_, i) => dv.getInt8(i));
    case DT.UINT8: return Array.from(raw);
    default: throw new Error(`unexpected data type ${t.dataType}`);
  }
}

/** A decoded graph's nodes and initializers (protobufjs fills the repeated fields). */
type Node = { name: string; opType: string; input: string[]; output: string[]; attribute: onnxProto.onnx.IAttributeProto[] };
type Tensor = onnxProto.onnx.ITensorProto & { name: string; dims: number[] };
const nodesOf = (m: onnxProto.onnx.IModelProto): Node[] => m.graph!.node as Node[];
const initsOf = (m: onnxProto.onnx.IModelProto): Tensor[] => m.graph!.initializer as Tensor[];

function rngValues(n: number, f: (r: Rng) => number, seed = 1): Float32Array {
  const r = new Rng(seed);
  return Float32Array.from({ length: n }, () => f(r));
}

function statsOf(x: Float32Array, bins?: number) {
  let min = Infinity;
  let max = -Infinity;
  for (const v of x) {
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const hist = histogramFor(min, max, bins);
  hist?.add(x);
  return { min, max, hist };
}

describe('calibration ranges on synthetic data', () => {
  it('minmax is the observed range widened to contain 0', () => {
    assert.deepEqual(calibrationRange('minmax', { min: -1, max: 3, hist: null }), [-1, 3]);
    assert.deepEqual(calibrationRange('minmax', { min: 0.5, max: 2, hist: null }), [0, 2]);
    assert.deepEqual(calibrationRange('minmax', { min: -4, max: -1, hist: null }), [-4, 0]);
  });

  it('percentile clips each tail at the requested share; minmax keeps the outlier', () => {
    // 10,000 evenly spread values in [0, 1) plus one outlier at 100.
    const x = Float32Array.from({ length: 10_001 }, (_, i) => (i < 10_000 ? i / 10_000 : 100));
    const s = statsOf(x, 100_000); // bin width 0.001
    assert.deepEqual(calibrationRange('minmax', s), [0, 100]);
    const [lo, hi] = calibrationRange('percentile', s, { percentile: 99 });
    assert.equal(lo, 0);
    assert.ok(Math.abs(hi - 0.99) <= 0.002, `hi ${hi}`);
    // Signed, uniform in [-1, 1]: 1% off each tail.
    const u = rngValues(200_000, (r) => 2 * r.uniform() - 1);
    const su = statsOf(u, 20_000);
    const [l2, h2] = percentileRange(su.hist!, 99, su.min, su.max);
    assert.ok(Math.abs(l2 + 0.98) < 0.005 && Math.abs(h2 - 0.98) < 0.005, `[${l2}, ${h2}]`);
    assert.throws(() => percentileRange(su.hist!, 0), /percentile must be in \(0, 100\]/);
  });

  it('entropy: no clipping for a flat distribution, clips a far outlier, ~3.8σ for a Gaussian', () => {
    // Flat |x| histogram: every threshold below the end folds mass into one bin that Q cannot match; none is best.
    const flat = new Float64Array(2048).fill(10);
    assert.equal(entropyThreshold(flat, 1 / 2048, 128), 1);
    // Uniform [0, 1] plus one value at 5: the threshold lands at the end of the bulk, far below the max.
    const x = Float32Array.from({ length: 100_001 }, (_, i) => (i < 100_000 ? i / 100_000 : 5));
    const [, t] = calibrationRange('entropy', statsOf(x));
    assert.ok(t > 0.95 && t < 1.15, `threshold ${t}`);
    // N(0, 1): between the 99.9th percentile of |x| (3.29) and the sample max (~4.5).
    const g = rngValues(400_000, (r) => r.normal());
    const sg = statsOf(g);
    const [gl, gh] = calibrationRange('entropy', sg);
    assert.equal(gl, -gh);
    assert.ok(gh > 3.29 && gh < sg.max, `threshold ${gh}, max ${sg.max}`);
    // ReLU of the same Gaussian: the half of the values at exactly 0 must not pull the threshold in (same step size).
    const relu = Float32Array.from(g, (v) => Math.max(0, v));
    const [, rh] = calibrationRange('entropy', statsOf(relu));
    assert.ok(Math.abs(rh - gh) / gh < 0.1, `relu threshold ${rh} vs signed ${gh}`);
  });

  it('histograms clamp out-of-range values into the edge bins', () => {
    const h = new Histogram(0, 1, 4);
    h.add([-5, 0, 0.3, 0.99, 7]);
    assert.deepEqual(Array.from(h.counts), [2, 1, 0, 2]);
    assert.equal(h.total, 5);
  });
});

describe('quantization parameters', () => {
  it('activations: uint8 asymmetric with 0 exact', () => {
    const p = activationParams(-1, 3);
    assert.equal(p.scale, Math.fround(4 / 255));
    assert.equal(p.zeroPoint, 64); // round(1 / (4/255)) = round(63.75)
    assert.deepEqual(activationParams(0, 6), { scale: Math.fround(6 / 255), zeroPoint: 0 });
    assert.throws(() => activationParams(0.5, 1), /must contain 0/);
  });

  it('weights: symmetric per channel along the axis, scale = max|w| / qmax', () => {
    const w = Float32Array.from([1, -2, 0.5, 0, 0, 0]);
    const r = quantizePerChannel(w, [2, 1, 1, 3], 0);
    assert.deepEqual(Array.from(r.scale), [Math.fround(2 / 127), 1]);
    assert.deepEqual(Array.from(r.q), [64, -127, 32, 0, 0, 0]);
    // Axis 1 of a [2, 3] matrix: columns.
    const c = quantizePerChannel(Float32Array.from([1, 4, -6, -3, 1.5, 2.5]), [2, 3], 1, 63);
    assert.deepEqual(Array.from(c.scale), [3 / 63, 4 / 63, 6 / 63].map(Math.fround));
    assert.deepEqual(Array.from(c.q), [21, 63, -63, -63, 24, 26]);
  });
});

describe('QDQ model of the committed Fashion-MNIST model', () => {
  let fp32: Uint8Array;
  let fp32Model: onnxProto.onnx.ModelProto;
  let r: QuantizeResult;
  let q: onnxProto.onnx.ModelProto;
  let calib: Awaited<ReturnType<typeof openDataset>>;

  before(async () => {
    const m = loadWeights(MODEL);
    fp32 = exportOnnx(m.graph, m.weights);
    fp32Model = onnx.ModelProto.decode(fp32);
    calib = await openDataset('fashion-mnist', 'train');
    r = await quantizeOnnx(fp32, calib, { method: 'percentile', calibImages: 64 });
    q = onnx.ModelProto.decode(r.bytes);
  });

  it('per-channel int8 weights (axis 0, zero point 0, scale = max|w|/63), int32 biases with scale x_scale·w_scale', () => {
    const init = new Map(initsOf(q).map((t) => [t.name, t]));
    const producer = new Map(nodesOf(q).flatMap((n) => n.output.map((o) => [o, n] as const)));
    const fpInit = new Map(initsOf(fp32Model).map((t) => [t.name, t]));
    const convs = nodesOf(fp32Model).filter((n) => n.opType === 'Conv');
    assert.equal(convs.length, 57);
    for (const fc of convs) {
      const c = nodesOf(q).find((n) => n.name === fc.name && n.opType === 'Conv')!;
      const [xDq, wDq, bDq] = c.input.map((i) => producer.get(i)!);
      assert.ok(xDq && wDq && bDq && [xDq, wDq, bDq].every((n) => n.opType === 'DequantizeLinear'), `${fc.name}: inputs come from DequantizeLinear`);
      assert.equal(wDq.attribute.find((a) => a.name === 'axis')?.i?.toString(), '0');
      const wq = init.get(wDq.input[0]!)!;
      const w = values(fpInit.get(fc.input[1]!)!);
      const dims = fpInit.get(fc.input[1]!)!.dims.map(Number);
      assert.equal(wq.dataType, DT.INT8);
      assert.deepEqual(wq.dims.map(Number), dims);
      const scale = values(init.get(wDq.input[1]!)!);
      const zp = init.get(wDq.input[2]!)!;
      assert.equal(zp.dataType, DT.INT8);
      assert.ok(values(zp).every((v) => v === 0));
      const per = w.length / dims[0]!;
      const qv = values(wq);
      for (let ch = 0; ch < dims[0]!; ch++) {
        const row = w.slice(ch * per, (ch + 1) * per);
        const maxAbs = Math.max(...row.map(Math.abs));
        assert.ok(Math.abs(scale[ch]! - maxAbs / 63) <= 1e-6 * scale[ch]!, `${fc.name}[${ch}] scale ${scale[ch]} vs ${maxAbs / 63}`);
        // Dequantized weight within half a step of the float32 weight.
        for (let k = 0; k < per; k++) assert.ok(Math.abs(qv[ch * per + k]! * scale[ch]! - row[k]!) <= scale[ch]! / 2 * (1 + 1e-6));
      }
      const xScale = values(init.get(xDq.input[1]!)!)[0]!;
      assert.equal(init.get(xDq.input[2]!)!.dataType, DT.UINT8);
      const bq = init.get(bDq.input[0]!)!;
      assert.equal(bq.dataType, DT.INT32);
      const bScale = values(init.get(bDq.input[1]!)!);
      const b = values(fpInit.get(fc.input[2]!)!);
      bScale.forEach((s, ch) => assert.equal(s, Math.fround(xScale * scale[ch]!)));
      values(bq).forEach((v, ch) => assert.ok(Math.abs(v * bScale[ch]! - b[ch]!) <= bScale[ch]! / 2 * (1 + 1e-6)));
    }
    // The metadata still says what the model is.
    assert.deepEqual(readOnnxConfig(r.bytes, 'int8'), readOnnxConfig(fp32, 'fp32'));
    const info = JSON.parse(q.metadataProps.find((p) => p.key === QUANT_KEY)!.value!);
    assert.equal(info.method, 'percentile');
    assert.equal(info.calibImages, 64);
  });

  it('8-bit weights: scale = max|w| / 127', () => {
    const q8 = buildQdqModel(fp32Model, r.plan, r.ranges, { weightQmax: 127 });
    const w = values(initsOf(fp32Model).find((t) => t.name === 'conv1.weight')!);
    const scale = values(initsOf(q8).find((t) => t.name === 'conv1.weight.scale')!);
    const per = w.length / scale.length;
    scale.forEach((s, ch) => assert.ok(Math.abs(s - Math.max(...w.slice(ch * per, (ch + 1) * per).map(Math.abs)) / 127) <= 1e-6 * s));
  });

  it('ONNX Runtime runs every conv, add, pool and the classifier as integer kernels', async () => {
    const ops = await optimizedOpCounts(r.bytes);
    assert.equal(ops.get('QLinearConv'), 57);
    assert.equal(ops.get('QLinearAdd'), 14);
    assert.equal(ops.get('QLinearGlobalAveragePool'), 1);
    assert.equal(ops.get('QGemm'), 1);
    for (const op of ['Conv', 'FusedConv', 'Add', 'Gemm', 'GlobalAveragePool', 'Relu', 'DequantizeLinear']) assert.equal(ops.get(op), undefined, op);
  });

  it('--float-convs 3: the first three convs stay float32 Conv, the fourth quantizes their output, the rest as before', async () => {
    const f = await quantizeOnnx(fp32, calib, { method: 'percentile', calibImages: 64, floatConvs: 3 });
    const convs = fp32Model.graph!.node!.filter((n) => n.opType === 'Conv').map((n) => n.name!);
    assert.deepEqual(convs.filter((c) => !f.plan.nodes.has(c)), convs.slice(0, 3));
    assert.ok(f.plan.quantized.has(fp32Model.graph!.node!.find((n) => n.name === convs[3])!.input![0]!));
    const ops = await optimizedOpCounts(f.bytes);
    assert.equal(ops.get('QLinearConv'), 57 - 3);
    assert.equal((ops.get('Conv') ?? 0) + (ops.get('FusedConv') ?? 0), 3);
    assert.equal(JSON.parse(onnx.ModelProto.decode(f.bytes).metadataProps!.find((p) => p.key === QUANT_KEY)!.value!).floatConvs, 3);
    await assert.rejects(quantizeOnnx(fp32, calib, { floatConvs: -1 }), /float convs must be an integer >= 0, got -1/);
  });

  it('int8 logits agree with float32 on 256 held-out test images', async () => {
    const test = await openDataset('fashion-mnist', 'test');
    const [b] = [...datasetBatches(test.dataset, test.input, 256, 256)];
    const out: Float32Array[] = [];
    for (const bytes of [fp32, r.bytes]) {
      const m = await OrtModel.create(bytes, { threads: 2 });
      out.push(Float32Array.from(await m.run(b!.input, 256)));
      await m.release();
    }
    const argmax = (l: Float32Array, i: number): number => {
      const row = Array.from(l.subarray(i * 10, i * 10 + 10));
      return row.indexOf(Math.max(...row));
    };
    let agree = 0;
    for (let i = 0; i < 256; i++) if (argmax(out[0]!, i) === argmax(out[1]!, i)) agree++;
    assert.ok(agree >= 0.95 * 256, `top-1 agreement ${agree}/256`);
    const err = relL2(out[1]!, out[0]!);
    assert.ok(err < 0.06, `relative L2 error of the logits ${err}`); // measured 0.034
  });

  it('errors: unknown method, no calibration images, fp16 or already quantized input', async () => {
    await assert.rejects(quantizeOnnx(fp32, calib, { method: 'kl' as never }), /unknown calibration method 'kl' \(expected minmax, percentile, entropy\)/);
    await assert.rejects(quantizeOnnx(fp32, calib, { calibImages: 0 }), /calibration images must be a positive integer, got 0/);
    await assert.rejects(quantizeOnnx(r.bytes, calib, { calibImages: 8 }, 'int8.onnx'), /int8\.onnx: initializer .* is not float32/);
    const m = loadWeights(MODEL);
    await assert.rejects(quantizeOnnx(exportOnnx(m.graph, m.weights, { fp16: true }), calib, {}, 'half.onnx'), /half\.onnx: initializer .* is not float32/);
    await assert.rejects(quantizeOnnx(new Uint8Array([1, 2, 3]), calib, {}, 'junk.onnx'), /junk\.onnx: not an ONNX model/);
  });
});

describe('QDQ of a ReLU6 (Clip) network', () => {
  it('torchvision MobileNetV2 α 0.35 @ 32: every conv fuses, Clip(0, 6) included', async () => {
    const g = mobilenetV2('imagenet', { alpha: 0.35, resolution: 32, numClasses: 10 });
    const fp32 = exportOnnx(g, initWeights(g, 3));
    const calib = await openDataset('fashion-mnist', 'train');
    const r = await quantizeOnnx(fp32, calib, { method: 'minmax', calibImages: 16 });
    const fpNodes = nodesOf(onnx.ModelProto.decode(fp32));
    const convs = fpNodes.filter((n) => n.opType === 'Conv').length;
    assert.equal(fpNodes.filter((n) => n.opType === 'Clip').length, 35);
    const ops = await optimizedOpCounts(r.bytes);
    assert.equal(ops.get('QLinearConv'), convs);
    for (const op of ['Conv', 'FusedConv', 'Clip', 'Add', 'Gemm']) assert.equal(ops.get(op), undefined, op);
  });
});

describe('mnv2 quantize', () => {
  it('quantizes an exported .onnx and writes a model ONNX Runtime loads', async () => {
    const m = loadWeights(MODEL);
    const src = join(tmp, 'fp32.onnx');
    writeFileSync(src, exportOnnx(m.graph, m.weights));
    const out = join(tmp, 'int8.onnx');
    const { stdout } = await mnv2('quantize', '--weights', src, '--out', out, '--calib-images', '32', '--method', 'minmax', '--json');
    const s = JSON.parse(stdout);
    assert.equal(s.calibImages, 32);
    assert.equal(s.ortOps.QLinearConv, 57);
    assert.ok(s.float32Bytes / s.bytes > 3.4, `${s.float32Bytes} / ${s.bytes}`);
    const ort = await OrtModel.create(out, { threads: 1 });
    assert.deepEqual([...ort.inputShape, ort.numClasses], [3, 32, 32, 10]);
    await ort.release();
  });

  it('bad input: clear errors, no output file', async () => {
    const out = join(tmp, 'never.onnx');
    const fail = async (args: string[], re: RegExp): Promise<void> => {
      await assert.rejects(mnv2('quantize', '--out', out, ...args), (e: { stderr: string; code: number }) => {
        assert.equal(e.code, 1);
        assert.match(e.stderr, re);
        return true;
      });
      assert.equal(existsSync(out), false);
    };
    await fail(['--data', join(tmp, 'nowhere')], /Fashion-MNIST folder .*nowhere does not exist/);
    mkdirSync(join(tmp, 'empty'));
    await fail(['--data', join(tmp, 'empty')], /Fashion-MNIST file train-images-idx3-ubyte\(\.gz\) not found in .*empty/);
    await fail(['--calib-images', '0'], /--calib-images expects an integer in \[1, 1000000\], got '0'/);
    await fail(['--method', 'kl'], /argument 'kl' is invalid/);
    await fail(['--weights', join(tmp, 'missing.onnx')], /missing\.onnx: no such file/);
  });
});
