// Per-op time table of the training step (seed model, batch 128, forward + softmax CE + backward + SGD): oneDNN's
// own per-primitive execution times (ONEDNN_VERBOSE=1, parsed by bench/onednn-verbose.ts) grouped into 1×1 /
// depthwise / full convolutions by pass, BN(+ReLU), residual adds, reorders, ...; beside them what `mnv2 bench`
// times on the TypeScript side: the optimizer update, and the engine step's time outside oneDNN primitives
// (input copy, loss, BN running statistics, the program's own loop). So each fusion is chosen from numbers.
//
// usage: npm run bench:profile -- [--steps N (3)] [--warmup N (1)] [--batch N (128)] [--out bench/RESULTS.md]
//   (= node dist/bench/profile.js ...; run `tsc -p .` first)
// Writes its table to --out between <!-- train-profile:begin --> and <!-- train-profile:end -->.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { machineLine, sharedMachine } from '../src/util/machine.js';
import { loadavg } from 'node:os';
import { parseVerbose, perStep, type OpRow } from './onednn-verbose.js';
import { writeSection } from './sections.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/profile.js -> repo root
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const WEIGHTS = join(ROOT, 'models', 'fashion-mnist', 'model.safetensors');

interface BenchJson {
  ms_per_step: number;
  spread: number;
  phase_ms: { train_step: number; optimizer: number };
}

/** One `mnv2 bench --workload train-seed-sgd` child; with `verbose` its stdout also holds oneDNN's log. */
function runBench(o: Options, verbose: boolean): { json: BenchJson; log: string } {
  const args = [CLI, 'bench', '--workload', 'train-seed-sgd', '--batch', String(o.batch), '--warmup', String(o.warmup),
    '--steps', String(o.steps), '--json', ...(existsSync(WEIGHTS) ? ['--weights', WEIGHTS] : [])];
  const env = { ...process.env, ONEDNN_VERBOSE: verbose ? '1' : '0' };
  const r = spawnSync(process.execPath, args, { cwd: ROOT, env, encoding: 'utf8', maxBuffer: 1 << 30 });
  const last = r.stdout?.split('\n').filter((l) => l.startsWith('{')).pop();
  if (r.status !== 0 || !last) throw new Error(`mnv2 bench failed (exit ${r.status ?? r.signal}): ${(r.stderr || r.stdout || '').trim().split('\n').pop()}`);
  return { json: JSON.parse(last) as BenchJson, log: r.stdout };
}

/** The markdown section. */
export function profileSection(rows: readonly OpRow[], verbose: BenchJson, plain: BenchJson, o: Options): string {
  const onednn = rows.reduce((s, r) => s + r.ms, 0);
  const step = verbose.ms_per_step;
  const outside = verbose.phase_ms.train_step - onednn;
  const pct = (ms: number): string => `${((100 * ms) / step).toFixed(1)} %`;
  const line = (op: string, calls: string, ms: number): string => `| ${op} | ${calls} | ${ms.toFixed(1)} | ${pct(ms)} |`;
  const group = (re: RegExp): number => rows.filter((r) => re.test(r.op)).reduce((s, r) => s + r.ms, 0);
  const groups: [string, RegExp][] = [
    ['1×1 convolutions', /^conv 1×1/], ['depthwise convolutions', /^conv depthwise/], ['full convolutions (stem)', /^conv full/],
    ['BN and BN+ReLU', /^BN/], ['residual adds / gradient sums', /^(binary|sum)/], ['reorders', /^reorder/],
  ];
  const known = groups.reduce((s, [, re]) => s + group(re), 0);
  return [
    `## Training step: time per op (seed model, batch ${o.batch}, forward + softmax CE + backward + SGD)`,
    '',
    `- ${new Date().toISOString()}; ${machineLine()}; Node ${process.version}.`,
    `- \`npm run bench:profile\`: \`mnv2 bench --workload train-seed-sgd --batch ${o.batch} --warmup ${o.warmup} --steps ${o.steps}` +
      `${existsSync(WEIGHTS) ? ` --weights ${relative(ROOT, WEIGHTS)}` : ''}\` once with \`ONEDNN_VERBOSE=1\` (oneDNN's per-primitive` +
      ' execution times, averaged over the timed steps) and once without.',
    `- Step: ${plain.ms_per_step.toFixed(0)} ms without verbose (spread ${plain.spread.toFixed(2)}), ${step.toFixed(0)} ms with it` +
      ` (spread ${verbose.spread.toFixed(2)}; verbose waits for each primitive to finish and prints a line, so it adds time of its own). Percentages are of the verbose step.`,
    ...(sharedMachine(o.loadBefore)
      ? [`- **Measured on a shared machine** (1-min load average ${o.loadBefore.toFixed(2)} before it started): absolute times are inflated and noisy; the shares are the useful part.`]
      : []),
    '',
    '| op (oneDNN primitive class · pass) | calls/step | ms/step | share of step |',
    '|---|---|---|---|',
    ...rows.map((r) => line(r.op, r.calls.toFixed(0), r.ms)),
    line('**all oneDNN primitives**', rows.reduce((s, r) => s + r.calls, 0).toFixed(0), onednn),
    line('engine step outside oneDNN primitives (TypeScript: input copy, loss, BN running statistics; the program\'s own loop)', '—', outside),
    line('optimizer: SGD momentum 0.9 + weight decay (TypeScript, `sgd.step` + `weightsChanged`)', '—', verbose.phase_ms.optimizer),
    line('**step (wall)**', '—', step),
    '',
    'By family: ' + groups.map(([name, re]) => `${name} ${pct(group(re))}`).join(', ') +
      `, other primitives ${pct(onednn - known)}.`,
  ].join('\n');
}

interface Options { steps: number; warmup: number; batch: number; out: string; loadBefore: number }

function args(): Options {
  const a = process.argv.slice(2);
  const o: Options = { steps: 3, warmup: 1, batch: 128, out: join(ROOT, 'bench', 'RESULTS.md'), loadBefore: loadavg()[0]! };
  for (let i = 0; i < a.length; i += 2) {
    const [k, v] = [a[i]!, a[i + 1]];
    if (v === undefined) throw new Error(`${k} needs a value`);
    if (k === '--out') o.out = v;
    else if (k === '--steps' || k === '--warmup' || k === '--batch') o[k.slice(2) as 'steps' | 'warmup' | 'batch'] = Number.parseInt(v, 10);
    else throw new Error(`unknown argument ${k} (known: --steps, --warmup, --batch, --out)`);
  }
  if (!(o.steps >= 1 && o.warmup >= 0 && o.batch >= 1)) throw new Error('--steps and --batch must be ≥ 1, --warmup ≥ 0');
  return o;
}

const o = args();
const verbose = runBench(o, true);
const plain = runBench(o, false);
const md = profileSection(perStep(parseVerbose(verbose.log), o.warmup + o.steps, o.steps), verbose.json, plain.json, o);
writeSection(o.out, 'train-profile', md);
console.log(`${md}\n\nwrote ${o.out}`);
