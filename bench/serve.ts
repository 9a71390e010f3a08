// Load test of `mnv2 serve`: the server runs as a child process (the CLI as users run it) on the bundled
// Fashion-MNIST model, autocannon sends one real 28x28 PNG per request from this process, on 127.0.0.1 only.
// Each setting runs for a fixed time; with batching (max batch 32, max wait 5 ms; and max wait 0, which batches
// only what queued while the model was busy) and without (max batch 1), at 1, 8 and 32 connections. Reports req/s, p50/p99 latency, errors and non-2xx (must be 0), the mean batch
// the server ran (from its /metrics) and its RSS before and after each run (memory must stay flat).
//
// usage: npm run bench:serve -- [--duration S (10)] [--engine ort|native (ort)] [--out bench/RESULTS.md]
//   (= node dist/bench/serve.js ...; run `tsc -p .` first)
// Writes its table to --out between <!-- serve:begin --> and <!-- serve:end -->, leaving the rest of the file.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadFashionMnist } from '../src/data/idx.js';
import { writeSection } from './sections.js';
import { machineLine } from '../src/util/machine.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/serve.js -> repo root
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  requests: { total: number };
  latency: { p50: number; p99: number };
}
type Autocannon = (opts: Record<string, unknown>) => Promise<AutocannonResult>;
// autocannon is CommonJS without type declarations.
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

function args(): { duration: number; engine: string; out: string } {
  const a = process.argv.slice(2);
  const o = { duration: 10, engine: 'ort', out: join(ROOT, 'bench', 'RESULTS.md') };
  for (let i = 0; i < a.length; i++) {
    const v = a[i + 1];
    if (a[i] === '--duration' && v) o.duration = Number(v);
    else if (a[i] === '--engine' && v) o.engine = v;
    else if (a[i] === '--out' && v) o.out = v;
    else throw new Error(`unknown or incomplete argument '${a[i]}' (see the usage at the top of bench/serve.ts)`);
    i++;
  }
  if (!(o.duration > 0 && o.duration <= 120)) throw new Error(`--duration must be in (0, 120] seconds, got ${o.duration}`);
  return o;
}

async function startServer(extra: string[]): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--max-queue', '1024', ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`mnv2 serve exited with ${code} before listening`)));
  });
  return { url, child };
}

/** Samples of the server's /metrics that this report uses. */
async function scrape(url: string): Promise<{ rss: number; batches: number; images: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const get = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { rss: get('process_resident_memory_bytes'), batches: get('mnv2_batch_size_count'), images: get('mnv2_batch_size_sum') };
}

interface Row {
  batching: string;
  connections: number;
  rps: number;
  p50: number;
  p99: number;
  bad: number;
  meanBatch: number;
  rssBefore: number;
  rssAfter: number;
}

async function main(): Promise<void> {
  const o = args();
  const ds = loadFashionMnist(undefined, 'test');
  const png = await sharp(Buffer.from(ds.images.subarray(0, 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer();
  const modes = [
    { batching: 'max batch 32, max wait 5 ms', flags: ['--max-batch', '32', '--max-wait-ms', '5'] },
    // Greedy: never hold the model idle; batches form from what queued while the previous one ran.
    { batching: 'max batch 32, max wait 0', flags: ['--max-batch', '32', '--max-wait-ms', '0'] },
    { batching: 'none (max batch 1)', flags: ['--max-batch', '1'] },
  ];
  const rows: Row[] = [];
  const t0 = Date.now();
  const loadBefore = loadavg()[0]!;
  for (const mode of modes) {
    const { url, child } = await startServer(['--engine', o.engine, ...mode.flags]);
    const exited = once(child, 'exit') as Promise<[number | null]>;
    const request = { url: `${url}/v1/classify`, method: 'POST', body: png, headers: { 'content-type': 'image/png' } };
    // Warm-up at the highest concurrency, so first-call allocations, sharp's thread pool and ORT's memory arena
    // (which grows to the largest batch shapes seen) are in place and RSS differences within rows mean growth.
    await autocannon({ ...request, connections: 32, amount: 600 });
    for (const connections of [1, 8, 32]) {
      const before = await scrape(url);
      const r = await autocannon({ ...request, connections, duration: o.duration });
      const after = await scrape(url);
      const row: Row = {
        batching: mode.batching,
        connections,
        rps: r.requests.total / r.duration,
        p50: r.latency.p50,
        p99: r.latency.p99,
        bad: r.errors + r.timeouts + r.non2xx,
        meanBatch: (after.images - before.images) / (after.batches - before.batches),
        rssBefore: before.rss,
        rssAfter: after.rss,
      };
      rows.push(row);
      console.log(`${row.batching}, ${connections} connections: ${row.rps.toFixed(1)} req/s, p50 ${row.p50} ms, p99 ${row.p99} ms, ` +
        `errors/non-2xx ${row.bad}, mean batch ${row.meanBatch.toFixed(2)}, RSS ${(row.rssBefore / 2 ** 20).toFixed(0)} -> ${(row.rssAfter / 2 ** 20).toFixed(0)} MB`);
    }
    child.kill('SIGTERM');
    const [code] = await exited;
    if (code !== 0) throw new Error(`mnv2 serve exited with ${code} after SIGTERM`);
  }

  const mb = (b: number): string => (b / 2 ** 20).toFixed(0);
  const md = [
    '## HTTP serving (`npm run bench:serve`)',
    '',
    `- Date: ${new Date().toISOString()} (total ${((Date.now() - t0) / 60000).toFixed(1)} min); ${machineLine()}; Node ${process.version}.`,
    `- \`mnv2 serve --engine ${o.engine}\` (a child process) on the bundled Fashion-MNIST model (seed MobileNetV2, 32×32 input); ` +
      `autocannon in this process, on 127.0.0.1, POSTing one 28×28 Fashion-MNIST PNG (${png.length} bytes) per request, ` +
      `${o.duration} s per row after a 600-request warm-up at 32 connections. Client and server share the machine's cores.`,
    '- Mean batch = images / model runs in the server during the row (from its /metrics); RSS = the server\'s resident memory (from /metrics) before and after the row.',
    `- 1-minute load average before / after: ${loadBefore.toFixed(2)} / ${loadavg()[0]!.toFixed(2)} (above ~0.5 other processes shared the cores: the numbers are noisy).`,
    '',
    '| batching | connections | req/s | p50 ms | p99 ms | errors + non-2xx | mean batch | server RSS before → after, MB |',
    '|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.batching} | ${r.connections} | ${r.rps.toFixed(1)} | ${r.p50} | ${r.p99} | ${r.bad} | ${r.meanBatch.toFixed(2)} | ${mb(r.rssBefore)} → ${mb(r.rssAfter)} |`),
  ].join('\n');
  writeSection(o.out, 'serve', md);
  console.log(`\n${md}\n\nwrote the serve section of ${o.out}`);
  const bad = rows.reduce((s, r) => s + r.bad, 0);
  if (bad > 0) {
    console.error(`${bad} requests failed (errors, timeouts or non-2xx responses)`);
    process.exitCode = 1;
  }
}

main().catch((e: unknown) => {
  console.error(`bench:serve: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
