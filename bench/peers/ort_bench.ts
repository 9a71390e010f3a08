// ONNX Runtime (onnxruntime-node, CPU EP) peer benchmark on one .onnx model.
//
// usage: node dist/bench/peers/ort_bench.js --model DIR/seed.onnx --batch 128
//          [--steps 10] [--warmup 2] [--threads 2] [--workload infer-seed]
// Session: graphOptimizationLevel 'all', sequential execution,
// intraOpNumThreads = --threads, interOpNumThreads = 1.
// Input 'input' [N,3,H,W] (H from the model's sibling NAME.json, written by
// export_torch_onnx.py, or --hw). If NAME.ref_input.bin / NAME.ref_output.bin
// exist next to the model, first runs the reference input and reports the max
// abs diff against PyTorch's logits (sanity.max_abs_diff_vs_torch).
// Prints one JSON line last: median/min/max ms per batch, img/s, cpu_util,
// peak_rss_mb (process maxRSS), sanity.
import { existsSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import ort from 'onnxruntime-node';
import { median, timeStats } from '../../src/util/stats.js';

function arg(name: string, def?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
function intArg(name: string, def: number): number {
  const v = arg(name);
  if (v === undefined) return def;
  const n = Number.parseInt(v, 10);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name}: bad value ${v}`);
  return n;
}
function readF32(path: string): Float32Array {
  const b = readFileSync(path);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

// Small seeded PRNG (mulberry32) + Box-Muller, so inputs are reproducible.
function randn(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const a = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    const th = 2 * Math.PI * u();
    a[i] = r * Math.cos(th);
    if (i + 1 < n) a[i + 1] = r * Math.sin(th);
  }
  return a;
}

async function main(): Promise<void> {
  const model = arg('model');
  if (!model) throw new Error('--model PATH.onnx is required');
  const batch = intArg('batch', 1);
  const steps = intArg('steps', 10);
  const warmup = intArg('warmup', 2);
  const threads = intArg('threads', 2);
  const workload = arg('workload', 'infer');
  const base = model.replace(/\.onnx$/, '');
  const meta = existsSync(`${base}.json`)
    ? (JSON.parse(readFileSync(`${base}.json`, 'utf8')) as { hw?: number; input_shape?: number[] })
    : {};
  const hw = intArg('hw', meta.hw ?? 224);

  const opts: ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
  };
  const t0 = performance.now();
  const sess = await ort.InferenceSession.create(model, opts);
  const createMs = performance.now() - t0;
  const inName = sess.inputNames[0]!;
  const outName = sess.outputNames[0]!;

  const sanity: Record<string, unknown> = {};
  const refIn = `${base}.ref_input.bin`;
  const refOut = `${base}.ref_output.bin`;
  if (existsSync(refIn) && existsSync(refOut) && meta.input_shape) {
    const x = readF32(refIn);
    const want = readF32(refOut);
    const got = (await sess.run({ [inName]: new ort.Tensor('float32', x, meta.input_shape) }))[outName]!
      .data as Float32Array;
    let maxAbs = 0;
    let maxRef = 0;
    for (let i = 0; i < want.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(got[i]! - want[i]!));
      maxRef = Math.max(maxRef, Math.abs(want[i]!));
    }
    sanity.max_abs_diff_vs_torch = got.length === want.length ? maxAbs : `length ${got.length} vs ${want.length}`;
    sanity.max_abs_torch_logit = maxRef;
    sanity.ref_batch = meta.input_shape[0];
  } else {
    sanity.max_abs_diff_vs_torch = 'no reference files';
  }

  const shape = [batch, 3, hw, hw];
  const x = new ort.Tensor('float32', randn(batch * 3 * hw * hw, 1234), shape);
  let finite = true;
  const step = async (): Promise<void> => {
    const y = (await sess.run({ [inName]: x }))[outName]!.data as Float32Array;
    if (!Number.isFinite(y[0]!) || !Number.isFinite(y[y.length - 1]!)) finite = false;
  };
  for (let i = 0; i < warmup; i++) await step();
  const ts: number[] = [];
  const c0 = process.cpuUsage();
  const w0 = performance.now();
  for (let i = 0; i < steps; i++) {
    const s = performance.now();
    await step();
    ts.push(performance.now() - s);
  }
  const wall = performance.now() - w0;
  const c = process.cpuUsage(c0);
  sanity.outputs_finite = finite;
  const med = median(ts);
  const res = {
    workload,
    engine: 'onnxruntime-node',
    model,
    batch,
    warmup,
    steps,
    ms_per_step: med,
    ...timeStats(ts),
    img_per_s: batch / (med / 1e3),
    cpu_util: (c.user + c.system) / 1e3 / wall,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
    session_create_ms: createMs,
    ort_version: ort.env.versions,
    session_options: opts,
    sanity,
  };
  console.log(JSON.stringify(res));
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
    process.exit(1);
  },
);
