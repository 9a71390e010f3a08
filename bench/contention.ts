// Native batch-1 latency under CPU contention: the seed model (Fashion-MNIST, 32x32) at 1 and 2 threads, alone
// and with a competing busy-loop process, for libgomp's old spin-wait default (GOMP_SPINCOUNT=300000) and the
// passive wait the binding now sets. Each measurement runs in a fresh process (libgomp reads its environment
// once, at load); rounds are interleaved and each cell reports the median of the per-round medians and the
// range, because other work on the machine moves single runs.
//
// usage: npm run bench:contention -- [--rounds R (3)] [--runs N (100)] [--out bench/RESULTS.md]
//   (= node dist/bench/contention.js ...; run `tsc -p .` first)
// Writes its table to --out between <!-- contention:begin --> and <!-- contention:end -->.
import { spawn, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { initWeights } from '../src/model/weights.js';
import { NativeModel } from '../src/engine/native/model.js';
import { median } from '../src/util/stats.js';
import { writeSection } from './sections.js';
import { machineLine } from '../src/util/machine.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SELF = fileURLToPath(import.meta.url);
/** Most time one measurement may take: the spin-wait pathology runs at ~0.5 s per image. */
const MAX_SECONDS = 6;

const POLICIES: { name: string; env: Record<string, string> }[] = [
  { name: 'spin (libgomp default, GOMP_SPINCOUNT=300000)', env: { GOMP_SPINCOUNT: '300000' } },
  { name: 'passive (the binding\'s default now)', env: {} },
];

/** Child: median latency in ms of `runs` batch-1 predictions (after a warm-up), or fewer within MAX_SECONDS. */
function measure(threads: number, runs: number): number {
  const g = mobilenetV2('seed-cifar', { numClasses: 10 });
  const m = new NativeModel(g, initWeights(g, 1), { threads });
  const x = Float32Array.from({ length: 3 * 32 * 32 }, (_, i) => Math.sin(i));
  for (let i = 0; i < 10; i++) m.predict(x, 1);
  const times: number[] = [];
  const end = performance.now() + MAX_SECONDS * 1000;
  while (times.length < runs && (times.length < 5 || performance.now() < end)) {
    const t = performance.now();
    m.predict(x, 1);
    times.push(performance.now() - t);
  }
  return median(times);
}

function args(): { rounds: number; runs: number; out: string } {
  const a = process.argv.slice(2);
  const o = { rounds: 3, runs: 100, out: join(ROOT, 'bench', 'RESULTS.md') };
  for (let i = 0; i < a.length; i += 2) {
    const v = a[i + 1];
    if (v === undefined) throw new Error(`${a[i]} needs a value`);
    if (a[i] === '--rounds') o.rounds = Number(v);
    else if (a[i] === '--runs') o.runs = Number(v);
    else if (a[i] === '--out') o.out = v;
    else throw new Error(`unknown option ${a[i]}`);
  }
  if (!(o.rounds >= 1 && o.runs >= 5)) throw new Error('--rounds must be >= 1 and --runs >= 5');
  return o;
}

function child(threads: number, runs: number, env: Record<string, string>): number {
  const clean = { ...process.env };
  delete clean.OMP_WAIT_POLICY;
  delete clean.GOMP_SPINCOUNT;
  const out = execFileSync(process.execPath, [SELF, '--child', String(threads), String(runs)], { env: { ...clean, ...env }, encoding: 'utf8' });
  return Number(out.trim());
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') {
    console.log(measure(Number(process.argv[3]), Number(process.argv[4])));
    return;
  }
  const o = args();
  const cells = new Map<string, number[]>();
  const key = (p: string, busy: boolean, t: number): string => `${p}|${busy}|${t}`;
  for (let r = 0; r < o.rounds; r++) {
    for (const busy of [false, true]) {
      // The competitor: one process spinning on a core for as long as this setting is measured.
      const competitor = busy ? spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }) : null;
      try {
        for (const p of POLICIES) {
          for (const t of [1, 2]) {
            const ms = child(t, o.runs, p.env);
            const k = key(p.name, busy, t);
            cells.set(k, [...(cells.get(k) ?? []), ms]);
            console.error(`round ${r + 1}: ${p.name}, ${busy ? 'busy competitor' : 'alone'}, ${t} thread(s): ${ms.toFixed(2)} ms`);
          }
        }
      } finally {
        competitor?.kill();
      }
    }
  }
  const fmt = (v: number[]): string => `${median(v).toFixed(2)} ms (${Math.min(...v).toFixed(2)}–${Math.max(...v).toFixed(2)})`;
  const lines = [
    '## Native latency under CPU contention (`npm run bench:contention`)',
    '',
    `Seed model, batch 1, median of per-process medians over ${o.rounds} interleaved rounds (range in brackets); ${machineLine()} at the end ` +
      '(other work on the machine is not controlled).',
    '',
    '| OpenMP wait | threads | alone | with a busy competitor | competitor / 1-thread alone |',
    '|---|---|---|---|---|',
  ];
  for (const p of POLICIES) {
    const alone1 = median(cells.get(key(p.name, false, 1))!);
    for (const t of [1, 2]) {
      const busy = cells.get(key(p.name, true, t))!;
      lines.push(`| ${p.name} | ${t} | ${fmt(cells.get(key(p.name, false, t))!)} | ${fmt(busy)} | ${(median(busy) / alone1).toFixed(2)}× |`);
    }
  }
  const md = lines.join('\n');
  console.log(md);
  writeSection(o.out, 'contention', md);
}

await main();
