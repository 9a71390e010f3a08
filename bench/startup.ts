// Start-up of the CLI, whole process as a user runs it (package.json's bin): `mnv2 summary` (no engine) and `mnv2 predict` on one
// 28×28 PNG with the bundled model (native engine when built), beside `node -e 0`, the floor no command can go
// below. Runs are interleaved round-robin after warm-up runs, so a change in the machine's load hits every
// command alike; each row is the median with min–max and the interquartile range of wall time, and the median
// user+system CPU time (from /usr/bin/time when installed), which other processes on the cores disturb less.
//
// usage: npm run bench:startup -- [--runs N (15)] [--warmup N (2)] [--out bench/RESULTS.md] [--baseline CLI.js]
//   (= node dist/bench/startup.js ...; run `npm run build` first; `npm run bench` runs it too)
//   --baseline: another build's dist/src/cli/main.js (e.g. of an older commit), timed in the same interleaved
//   runs, so a before/after comparison shares the machine's load.
// Writes its table to --out between <!-- startup:begin --> and <!-- startup:end -->.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { median, quantile } from '../src/util/stats.js';
import { machineLine, sharedMachine } from '../src/util/machine.js';
import { writeSection } from './sections.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/startup.js -> repo root
// What an installed `mnv2` runs: package.json's bin (the bundled CLI, tools/bundle-cli.mjs; `npm run build` makes it).
const CLI = join(ROOT, (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: { mnv2: string } }).bin.mnv2);
const TIME = '/usr/bin/time';

/** Issue 11's targets, whole process, warm. */
const TARGET_MS: Record<string, number> = { summary: 150, predict: 250 };

export interface StartupRow {
  name: string;
  /** Which CLI build ran it (the baseline's rows are labelled). */
  baseline?: boolean;
  args: string[];
  wallMs: number[];
  cpuMs: number[];
}

/** One run: wall ms measured here, CPU ms (user + system) from /usr/bin/time when it exists. */
function runOnce(args: string[], timeFile: string): { wallMs: number; cpuMs?: number } {
  const timed = existsSync(TIME);
  const [cmd, argv] = timed ? [TIME, ['-f', '%U %S', '-o', timeFile, process.execPath, ...args]] : [process.execPath, args];
  const t0 = performance.now();
  const r = spawnSync(cmd, argv, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const wallMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} failed (exit ${r.status ?? r.signal}): ${(r.stderr || r.stdout).trim().split('\n').pop()}`);
  if (!timed) return { wallMs };
  const [user, sys] = readFileSync(timeFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
  return { wallMs, cpuMs: (user! + sys!) * 1000 };
}

/** Interleaved runs of `node -e 0`, `mnv2 summary` and `mnv2 predict IMAGE`, also of a baseline CLI if given. */
export async function measureStartup(runs = 15, warmup = 2, baseline?: string): Promise<StartupRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'mnv2-startup-'));
  try {
    const image = join(dir, 'garment.png');
    // Any 28×28 greyscale PNG: predict's start-up does not depend on what the picture shows.
    const px = Uint8Array.from({ length: 28 * 28 }, (_, i) => ((i % 28) * 9 + Math.floor(i / 28) * 3) & 255);
    await sharp(px, { raw: { width: 28, height: 28, channels: 1 } }).png().toFile(image);
    const commands = (cli: string, isBaseline: boolean): StartupRow[] => [
      { name: 'summary', baseline: isBaseline, args: [cli, 'summary'], wallMs: [], cpuMs: [] },
      { name: 'predict', baseline: isBaseline, args: [cli, 'predict', image], wallMs: [], cpuMs: [] },
    ];
    const rows: StartupRow[] = [
      { name: 'node -e 0', args: ['-e', '0'], wallMs: [], cpuMs: [] },
      ...commands(CLI, false),
      ...(baseline ? commands(baseline, true) : []),
    ];
    const timeFile = join(dir, 'time.txt');
    for (let i = 0; i < warmup + runs; i++) {
      for (const row of rows) {
        const r = runOnce(row.args, timeFile);
        if (i < warmup) continue;
        row.wallMs.push(r.wallMs);
        if (r.cpuMs !== undefined) row.cpuMs.push(r.cpuMs);
      }
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const LABEL: Record<string, string> = { 'node -e 0': '`node -e 0` (floor)', summary: '`mnv2 summary`', predict: '`mnv2 predict` 1 image' };

/** The markdown section: one row per command, with the machine and how noisy it was. */
export function startupSection(rows: readonly StartupRow[], loadBefore: string, baseline?: string): string {
  const ms = (v: number): string => v.toFixed(0);
  const floor = median(rows.find((r) => r.name === 'node -e 0')!.wallMs);
  const body = rows.map((r) => {
    const w = r.wallMs;
    const spread = (quantile(w, 0.75) - quantile(w, 0.25)) / median(w);
    const target = r.baseline ? undefined : TARGET_MS[r.name];
    const verdict = target === undefined ? '' : median(w) <= target ? `≤ ${target} ms: met` : `≤ ${target} ms: NOT met`;
    return `| start-up: ${LABEL[r.name] ?? r.name}${r.baseline ? ' (baseline)' : ''} ` +
      `| ${ms(median(w))} | ${(median(w) / floor).toFixed(2)} | ${ms(Math.min(...w))}–${ms(Math.max(...w))} | ${ms(quantile(w, 0.25))}–${ms(quantile(w, 0.75))}${spread > 0.2 ? ' (noisy)' : ''} ` +
      `| ${r.cpuMs.length ? ms(median(r.cpuMs)) : '—'} | ${verdict} |`;
  });
  return [
    '## Start-up (whole process, warm)',
    '',
    `- ${new Date().toISOString()}; ${machineLine()} (before: ${loadBefore}); Node ${process.version}.`,
    `- ${rows[0]!.wallMs.length} interleaved runs of each after warm-up runs; \`mnv2 predict\` classifies one 28×28 PNG with the bundled model.` +
      (baseline ? ` Baseline rows: \`${baseline}\`, in the same runs.` : ''),
    ...(sharedMachine()
      ? ['- **A shared machine** (load above the core count\'s share): wall times are inflated and vary run to run; the CPU column and the ratio to the `node -e 0` floor of the same run are less disturbed.']
      : []),
    '- Compare rows of one run, not runs of different days.',
    '',
    '| workload | wall ms, median | × floor | min–max | interquartile | CPU ms (user+sys), median | target |',
    '|---|---|---|---|---|---|---|',
    ...body,
  ].join('\n');
}

function args(): { runs: number; warmup: number; out: string; baseline?: string } {
  const a = process.argv.slice(2);
  const o: { runs: number; warmup: number; out: string; baseline?: string } = { runs: 15, warmup: 2, out: join(ROOT, 'bench', 'RESULTS.md') };
  for (let i = 0; i < a.length; i += 2) {
    const [k, v] = [a[i]!, a[i + 1]];
    if (v === undefined) throw new Error(`${k} needs a value`);
    if (k === '--runs') o.runs = Number.parseInt(v, 10);
    else if (k === '--warmup') o.warmup = Number.parseInt(v, 10);
    else if (k === '--out') o.out = v;
    else if (k === '--baseline') o.baseline = v;
    else throw new Error(`unknown argument ${k} (known: --runs, --warmup, --out, --baseline)`);
  }
  if (!(o.runs >= 1) || !(o.warmup >= 0)) throw new Error('--runs must be ≥ 1 and --warmup ≥ 0');
  if (o.baseline !== undefined && !existsSync(o.baseline)) throw new Error(`--baseline ${o.baseline}: no such file`);
  return o;
}

/** Measure, print and write the section (also called by bench/run.ts). */
export async function runStartupBench(runs: number, warmup: number, out: string, baseline?: string): Promise<string> {
  const before = machineLine().split('; ').pop()!;
  const md = startupSection(await measureStartup(runs, warmup, baseline), before, baseline);
  writeSection(out, 'startup', md);
  return md;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const o = args();
  runStartupBench(o.runs, o.warmup, o.out, o.baseline).then((md) => console.log(`${md}\n\nwrote ${o.out}`), (e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exit(1);
  });
}
