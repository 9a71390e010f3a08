// int8 quantization of the committed Fashion-MNIST model, measured: top-1 on the full test set for float32 and
// for each calibration method (plus 8-bit weights, to show the AVX2 saturation that 7-bit weights avoid), what
// ONNX Runtime fuses, throughput float32 vs int8 on ONNX Runtime (batch 1 latency, batch 128 img/s; the two
// models run alternately so background load hits both alike; median of the repetitions), and file sizes
// (float32, float16, int8).
//
// usage: npm run bench:quantize -- [--calib-images N (512)] [--methods minmax,percentile,entropy] [--threads T (2)]
//                                  [--reps R (15)] [--eval-limit N (0: all 10,000)] [--out bench/RESULTS.md]
//   (= node dist/bench/quantize.js ...; run `tsc -p .` first)
// Writes its tables to --out between <!-- quantize:begin --> and <!-- quantize:end -->, leaving the rest of the file.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { fileURLToPath } from 'node:url';
import { loadWeights } from '../src/io/weights.js';
import { machineLine } from '../src/util/machine.js';
import { exportOnnx } from '../src/engine/onnx/export.js';
import { OrtModel } from '../src/engine/onnx/session.js';
import { CALIBRATION_METHODS, datasetBatches, evaluateOnnx, type CalibrationMethod } from '../src/quant/calibrate.js';
import { formatOpCounts, optimizedOpCounts, quantizeOnnx } from '../src/quant/quantize.js';
import { limitDataset, openDataset } from '../src/data/open.js';
import { writeSection } from './sections.js';
import { median } from '../src/util/stats.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/quantize.js -> repo root
const MODEL = join(ROOT, 'models', 'fashion-mnist', 'model.safetensors');

interface Args {
  calibImages: number;
  methods: CalibrationMethod[];
  threads: number;
  reps: number;
  evalLimit: number;
  out: string;
}

function args(): Args {
  const a = process.argv.slice(2);
  const o: Args = { calibImages: 512, methods: [...CALIBRATION_METHODS], threads: 2, reps: 15, evalLimit: 0, out: join(ROOT, 'bench', 'RESULTS.md') };
  for (let i = 0; i < a.length; i += 2) {
    const v = a[i + 1];
    if (v === undefined) throw new Error(`argument '${a[i]}' needs a value (see the usage at the top of bench/quantize.ts)`);
    if (a[i] === '--calib-images') o.calibImages = Number(v);
    else if (a[i] === '--methods') o.methods = v.split(',') as CalibrationMethod[];
    else if (a[i] === '--threads') o.threads = Number(v);
    else if (a[i] === '--reps') o.reps = Number(v);
    else if (a[i] === '--eval-limit') o.evalLimit = Number(v);
    else if (a[i] === '--out') o.out = v;
    else throw new Error(`unknown argument '${a[i]}' (see the usage at the top of bench/quantize.ts)`);
  }
  for (const m of o.methods) if (!(CALIBRATION_METHODS as readonly string[]).includes(m)) throw new Error(`--methods: unknown method '${m}'`);
  for (const k of ['calibImages', 'threads', 'reps'] as const) if (!(Number.isInteger(o[k]) && o[k] > 0)) throw new Error(`--${k}: a positive integer, got ${o[k]}`);
  return o;
}

const pct = (x: number): string => `${(100 * x).toFixed(2)} %`;
const mb = (n: number): string => `${(n / 1e6).toFixed(2)} MB`;

/** Median time (ms) of one run of each model, alternating between them; `per` runs per repetition. */
async function timeAlternating(models: OrtModel[], input: Float32Array, batch: number, warmup: number, reps: number, per: number): Promise<number[]> {
  const times: number[][] = models.map(() => []);
  for (let r = -warmup; r < reps; r++) {
    for (const [i, m] of models.entries()) {
      const t0 = performance.now();
      for (let k = 0; k < per; k++) await m.run(input, batch);
      if (r >= 0) times[i]!.push((performance.now() - t0) / per);
    }
  }
  return times.map(median);
}

type Kind = 'pointwise 1×1' | 'depthwise 3×3' | 'stem 3×3 (3 input channels)' | 'other ops';
const KINDS: Kind[] = ['pointwise 1×1', 'depthwise 3×3', 'stem 3×3 (3 input channels)', 'other ops'];

/** Kind of each float32 Conv by name, and the conv that produces each tensor (through a fused Relu/Clip). */
function convKinds(fp32: Uint8Array): { kind: Map<string, Kind>; byTensor: Map<string, string> } {
  // protobufjs fills the repeated fields of a decoded message.
  const g = onnxProto.onnx.ModelProto.decode(fp32).graph as unknown as {
    node: { name: string; opType: string; input: string[]; output: string[]; attribute: onnxProto.onnx.IAttributeProto[] }[];
    initializer: { name: string; dims: number[] }[];
  };
  const dims = new Map(g.initializer.map((t) => [t.name, t.dims.map(Number)]));
  const kind = new Map<string, Kind>();
  const byTensor = new Map<string, string>();
  for (const n of g.node) {
    if (n.opType === 'Conv') {
      const [, inPerGroup, k] = dims.get(n.input[1]!)!;
      const group = Number(n.attribute.find((a) => a.name === 'group')?.i ?? 1);
      kind.set(n.name, group > 1 ? 'depthwise 3×3' : k === 1 ? 'pointwise 1×1' : inPerGroup! <= 4 ? 'stem 3×3 (3 input channels)' : 'other ops');
      byTensor.set(n.output[0]!, n.name);
    } else if ((n.opType === 'Relu' || n.opType === 'Clip') && byTensor.has(n.input[0]!)) {
      byTensor.set(n.output[0]!, byTensor.get(n.input[0]!)!);
    }
  }
  return { kind, byTensor };
}

/**
 * ONNX Runtime's own profiler: kernel time per run (ms) by kind of layer. Node names in the optimized graphs:
 * float32 NCHWc convs are named after their output tensor (+ "_nchwc"), fused int8 ones after the Conv (+ "_token_N").
 */
async function profileByKinds(bytes: Uint8Array, input: Float32Array, batch: number, runs: number, threads: number, kinds: ReturnType<typeof convKinds>): Promise<Map<Kind, number>> {
  const dir = mkdtempSync(join(tmpdir(), 'mnv2-profile-'));
  try {
    const s = await ort.InferenceSession.create(bytes, {
      graphOptimizationLevel: 'all', intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', enableProfiling: true, profileFilePrefix: join(dir, 'p'), logSeverityLevel: 3,
    });
    const feeds = { [s.inputNames[0]!]: new ort.Tensor('float32', input, [batch, 3, 32, 32]) };
    for (let i = 0; i < runs; i++) await s.run(feeds);
    s.endProfiling();
    await s.release();
    const events = JSON.parse(readFileSync(join(dir, readdirSync(dir)[0]!), 'utf8')) as { cat: string; name: string; dur: number }[];
    const out = new Map<Kind, number>(KINDS.map((k) => [k, 0]));
    for (const e of events) {
      if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
      const node = e.name.slice(0, -'_kernel_time'.length);
      const conv = kinds.kind.has(node.replace(/_token_\d+$/, '')) ? node.replace(/_token_\d+$/, '') : kinds.byTensor.get(node.replace(/_nchwc$/, ''));
      const k = (conv !== undefined && kinds.kind.get(conv)) || 'other ops';
      out.set(k, out.get(k)! + e.dur / 1000 / runs);
    }
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const o = args();
  const started = new Date();
  const load0 = loadavg()[0]!;
  const m = loadWeights(MODEL);
  const fp32 = exportOnnx(m.graph, m.weights);
  const fp16 = exportOnnx(m.graph, m.weights, { fp16: true });
  const calib = await openDataset('fashion-mnist', 'train');
  const test = await openDataset('fashion-mnist', 'test');
  const evalSet = limitDataset(test.dataset, o.evalLimit, 0);

  const accuracy = async (bytes: Uint8Array): Promise<number> => {
    const s = await OrtModel.create(bytes, { threads: o.threads });
    try {
      return (await evaluateOnnx(s, evalSet, test.input)).top1;
    } finally {
      await s.release();
    }
  };

  const fpTop1 = await accuracy(fp32);
  console.error(`float32: top-1 ${pct(fpTop1)}`);
  const rows: string[] = [];
  let int8: Uint8Array | null = null;
  const variants: { method: CalibrationMethod; weightBits: 7 | 8 }[] = [
    ...o.methods.map((method) => ({ method, weightBits: 7 as const })),
    { method: o.methods.includes('percentile') ? 'percentile' : o.methods[0]!, weightBits: 8 },
  ];
  for (const v of variants) {
    const t0 = performance.now();
    const r = await quantizeOnnx(fp32, calib, { method: v.method, calibImages: o.calibImages, weightBits: v.weightBits, threads: o.threads });
    const secs = (performance.now() - t0) / 1000;
    const top1 = await accuracy(r.bytes);
    console.error(`${v.method} (${v.weightBits}-bit weights): top-1 ${pct(top1)}, calibration ${secs.toFixed(1)} s`);
    const label = `${v.method}${v.method === 'percentile' ? ' 99.99' : ''}, ${v.weightBits}-bit weights${v.weightBits === 8 ? ' (AVX2 int16 saturation)' : ''}`;
    rows.push(`| int8, ${label} | ${pct(top1)} | ${(100 * (top1 - fpTop1)).toFixed(2)} | ${secs.toFixed(1)} s |`);
    if (v.weightBits === 7 && (int8 === null || v.method === 'percentile')) int8 = r.bytes;
  }
  const q = int8!;
  const ops = await optimizedOpCounts(q);

  // Throughput: real test images, both models loaded at once, timed alternately.
  const models = [await OrtModel.create(fp32, { threads: o.threads }), await OrtModel.create(q, { threads: o.threads })];
  const [b128] = [...datasetBatches(test.dataset, test.input, 128, 128)];
  const one = b128!.input.slice(0, b128!.input.length / 128);
  const lat = await timeAlternating(models, one, 1, 5, o.reps, 20);
  const step = await timeAlternating(models, b128!.input, 128, 2, o.reps, 1);
  for (const s of models) await s.release();
  const kinds = convKinds(fp32);
  const prof: Map<Kind, number>[] = [];
  for (const bytes of [fp32, q]) prof.push(await profileByKinds(bytes, b128!.input, 128, Math.max(3, Math.ceil(o.reps / 3)), o.threads, kinds));
  const load1 = loadavg()[0]!;
  const [fpLat, qLat] = lat as [number, number];
  const [fpStep, qStep] = step as [number, number];

  const md = [
    '## int8 quantization (`npm run bench:quantize`)',
    '',
    `- Date: ${started.toISOString()}; ${machineLine()}; Node ${process.version}; ONNX Runtime (onnxruntime-node) CPU, intraOpNumThreads ${o.threads}, graphOptimizationLevel 'all'`,
    `- Model: the committed Fashion-MNIST model (seed-cifar, 32×32); calibration: ${o.calibImages} images of the train split (seeded subset), ` +
      `evaluation: ${evalSet.count === test.dataset.count ? 'the full' : `${evalSet.count} images of the`} test set (${evalSet.count} images), prepared as \`mnv2 eval\` does`,
    `- Load average (1 min) before/after: ${load0.toFixed(2)} / ${load1.toFixed(2)}${Math.max(load0, load1) > 0.5 ? ' — **other processes were running: timings are noisy; rerun on an idle machine**' : ''}`,
    '',
    '| model | top-1 | Δ points | calibration time |',
    '|---|---|---|---|',
    `| float32 (ONNX export, BN folded) | ${pct(fpTop1)} | — | — |`,
    ...rows,
    '',
    `ONNX Runtime's optimized int8 graph: ${formatOpCounts(ops)}.`,
    '',
    '| | float32 | int8 | int8 / float32 |',
    '|---|---|---|---|',
    `| latency, batch 1 (median ms) | ${fpLat.toFixed(3)} | ${qLat.toFixed(3)} | ${(fpLat / qLat).toFixed(2)}× faster |`,
    `| throughput, batch 128 (img/s, median of ${o.reps}) | ${(128e3 / fpStep).toFixed(0)} | ${(128e3 / qStep).toFixed(0)} | ${(fpStep / qStep).toFixed(2)}× |`,
    `| file size | ${mb(fp32.length)} | ${mb(q.length)} | ${(fp32.length / q.length).toFixed(2)}× smaller (float16: ${mb(fp16.length)}) |`,
    '',
    "Where the time goes at batch 128 (ONNX Runtime's profiler, kernel ms per run; float32 runs NCHWc kernels, int8 NHWC QLinearConv):",
    '',
    '| layers | float32 ms | int8 ms | int8 speed-up |',
    '|---|---|---|---|',
    ...KINDS.map((k) => `| ${k} | ${prof[0]!.get(k)!.toFixed(1)} | ${prof[1]!.get(k)!.toFixed(1)} | ${(prof[0]!.get(k)! / prof[1]!.get(k)!).toFixed(2)}× |`),
  ].join('\n');
  writeSection(o.out, 'quantize', md);
  console.log(md);
  console.error(`wrote the quantize section of ${o.out}`);
}

main().catch((e: unknown) => {
  console.error(`bench:quantize: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
