// SSDLite-MobileNetV2 (α 1, 320×320, 90 classes: the COCO layout) inference, native engine vs ONNX Runtime on
// the project's ONNX export, same weights: batch 1 latency and batch 32 throughput. The two engines run
// alternately so background load hits both alike; each repetition's median, then the median of the repetitions
// and their range.
//
// usage: npm run bench:detect -- [--reps R (9)] [--threads T (2)] [--quick] [--out bench/RESULTS.md]
//   (= node dist/bench/detect.js ...; run `tsc -p .` first). --quick: 2 repetitions, a smoke run.
// Writes its table to --out between <!-- detect:begin --> and <!-- detect:end -->, leaving the rest of the file.
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { archConfig, buildModel } from '../src/model/registry.js';
import { initWeights } from '../src/model/weights.js';
import { exportOnnx, ONNX_INPUT } from '../src/engine/onnx/export.js';
import { NativeModel } from '../src/engine/native/model.js';
import { native } from '../src/engine/native/binding.js';
import { median } from '../src/util/stats.js';
import { writeSection } from './sections.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/detect.js -> repo root
const RES = 320;

interface Args {
  reps: number;
  threads: number;
  quick: boolean;
  out: string;
}

function args(): Args {
  const a = process.argv.slice(2);
  const o: Args = { reps: 9, threads: 2, quick: false, out: join(ROOT, 'bench', 'RESULTS.md') };
  for (let i = 0; i < a.length; i++) {
    const k = a[i]!;
    if (k === '--quick') {
      o.quick = true;
      continue;
    }
    const v = a[++i];
    if (v === undefined) throw new Error(`argument '${k}' needs a value (see the usage at the top of bench/detect.ts)`);
    if (k === '--reps') o.reps = Number(v);
    else if (k === '--threads') o.threads = Number(v);
    else if (k === '--out') o.out = v;
    else throw new Error(`unknown argument '${k}' (see the usage at the top of bench/detect.ts)`);
  }
  if (o.quick) o.reps = 2;
  for (const k of ['reps', 'threads'] as const) if (!(Number.isInteger(o[k]) && o[k] > 0)) throw new Error(`--${k}: a positive integer, got ${o[k]}`);
  return o;
}

type Run = (input: Float32Array, batch: number) => Promise<unknown>;

/** Per engine: the median ms of `per` runs in each repetition, engines alternating, after one warm-up repetition. */
async function timeAlternating(engines: Run[], input: Float32Array, batch: number, reps: number, per: number): Promise<number[][]> {
  const times: number[][] = engines.map(() => []);
  for (let r = -1; r < reps; r++) {
    for (const [i, run] of engines.entries()) {
      const one: number[] = [];
      for (let k = 0; k < per; k++) {
        const t0 = performance.now();
        await run(input, batch);
        one.push(performance.now() - t0);
      }
      if (r >= 0) times[i]!.push(median(one));
    }
  }
  return times;
}

const spread = (v: number[], f: (x: number) => string): string => `${f(median(v))} (${f(Math.min(...v))}–${f(Math.max(...v))})`;

async function main(): Promise<void> {
  const o = args();
  const graph = buildModel(archConfig('ssdlite', { alpha: 1, resolution: RES, numClasses: 90 }));
  const weights = initWeights(graph, 0);
  const model = new NativeModel(graph, weights, { threads: o.threads });
  const session = await ort.InferenceSession.create(exportOnnx(graph, weights), { intraOpNumThreads: o.threads, interOpNumThreads: 1 });
  const engines: Run[] = [
    (x, n) => Promise.resolve(model.predictOutputs(x, n)),
    (x, n) => session.run({ [ONNX_INPUT]: new ort.Tensor('float32', x, [n, 3, RES, RES]) }),
  ];
  const load = loadavg()[0]!;
  const rows: string[] = [];
  for (const [batch, per] of [[1, o.quick ? 3 : 10], [32, 1]] as const) {
    const input = Float32Array.from({ length: batch * 3 * RES * RES }, (_, i) => Math.sin(i) * 0.9);
    console.error(`batch ${batch}: ${o.reps} repetitions of ${per} run(s) per engine…`);
    const [nat, ortMs] = await timeAlternating(engines, input, batch, o.reps, per) as [number[], number[]];
    if (batch === 1) {
      rows.push(`| latency, batch 1 (ms) | ${spread(nat, (x) => x.toFixed(1))} | ${spread(ortMs, (x) => x.toFixed(1))} | ${(median(ortMs) / median(nat)).toFixed(2)}× |`);
    } else {
      const ips = (v: number[]): number[] => v.map((ms) => (1e3 * batch) / ms);
      rows.push(`| throughput, batch 32 (img/s) | ${spread(ips(nat), (x) => x.toFixed(1))} | ${spread(ips(ortMs), (x) => x.toFixed(1))} | ${(median(ortMs) / median(nat)).toFixed(2)}× |`);
    }
  }
  await session.release();
  const md = [
    `## SSDLite-MobileNetV2 inference (α 1, ${RES}×${RES}, 90 classes)${o.quick ? ' — QUICK smoke run, not for comparison' : ''}`,
    '',
    `\`npm run bench:detect${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}\` — ${new Date().toISOString()}, ` +
      `${o.threads} threads, oneDNN ${native().info().onednn} (activations ${native().info().actFormat}), onnxruntime-node; ` +
      `median of ${o.reps} repetitions (range in brackets), engines alternating. Load average at the start: ${load.toFixed(2)} ` +
      '(a shared machine: other jobs may have run during the measurement).',
    '',
    '| | native (oneDNN) | ONNX Runtime (export) | native speed-up |',
    '|---|---|---|---|',
    ...rows,
  ].join('\n');
  writeSection(o.out, 'detect', md);
  console.log(md);
}

await main();
