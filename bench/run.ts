// Side-by-side benchmark: this project (native engine and ORT engine, via its CLI)
// against PyTorch (Debian 1.13, default BLAS and OpenBLAS) and ONNX Runtime on
// PyTorch's own ONNX export of the same models, on this machine, in one run.
//
// usage: npm run bench -- [--quick] [--only REGEX] [--threads 2] [--wait-quiet S]
//          [--retry-noisy N] [--both-blas] [--project-cli PATH] [--project-extra "ARGS"]
//          [--python /usr/bin/python3] [--out bench/RESULTS.md] [--keep-tmp] [--rounds 5]
//   (= node dist/bench/run.js ...; run `tsc -p .` first)
// --only REGEX   run only measurements whose id matches, ids are WORKLOAD/PEER, e.g.
//                '^infer-224/', 'torch', '^train-seed/project-native$'
//                peers: project-native project-ort ort-torch-export torch-default torch-channels-last torch-openblas;
//                'startup' is the CLI start-up section (bench/startup.ts), 'loader' the data-loader line,
//                'detect' the detection section (bench/detect.ts, its own process, ≤ 10 min)
// --quick        smoke run: few steps, short quiet-waits
// --rounds N     the inference measurements of the project and of ORT on PyTorch's export are
//                repeated N times, interleaved, and reported as the median (default 5; quick: 1):
//                one run of each on this VM varies by ±10 %, more than the gap being measured
// Every measurement runs in its own child process, one at a time. Before each, the
// harness waits (up to --wait-quiet s) for the machine to be idle, and while it runs
// it records how much CPU other processes used ("foreign") and hypervisor steal.
// Writes a markdown report to --out (default bench/RESULTS.md) and prints the table.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { lastJson, lastLines } from './child-output.js';
import { writeMainReport } from './sections.js';
import { machine, machineLine } from '../src/util/machine.js';
import { runStartupBench } from './startup.js';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { median } from '../src/util/stats.js';

// ---------------------------------------------------------------- configuration

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/run.js -> repo root
const ORT_BENCH_JS = fileURLToPath(new URL('./peers/ort_bench.js', import.meta.url));
const DETECT_JS = fileURLToPath(new URL('./detect.js', import.meta.url));
const TORCH_BENCH_PY = join(ROOT, 'bench', 'peers', 'torch_bench.py');
const EXPORT_PY = join(ROOT, 'bench', 'peers', 'export_torch_onnx.py');
// Trained weights for every peer (the PyTorch peer reads the same files: bench/peers/torch_models.py).
const TRAINED: Record<'seed' | 'imagenet', string> = {
  seed: join(ROOT, 'models', 'fashion-mnist', 'model.safetensors'),
  imagenet: join(ROOT, '..', 'shared', 'data', 'imagenet', 'weights', 'mobilenet_v2_imagenet_torchvision_qat_dequantized.safetensors'),
};
const OPENBLAS_DIR = '/usr/lib/x86_64-linux-gnu/openblas-openmp';
const OPENBLAS_LIB = join(OPENBLAS_DIR, 'libblas.so.3');
const SYSTEM_BLAS_LIB = '/usr/lib/x86_64-linux-gnu/libblas.so.3';

type WorkloadId = 'train-seed' | 'train-seed-sgd' | 'train-224' | 'infer-seed' | 'infer-224';
type PeerId = 'project-native' | 'project-ort' | 'ort-torch-export' | 'torch-default' | 'torch-channels-last' | 'torch-openblas';

interface Workload {
  id: WorkloadId;
  batch: number;
  warmup: number;
  steps: number;
  quickWarmup: number;
  quickSteps: number;
  onnx?: 'seed' | 'imagenet'; // model exported for the ORT peer (inference only)
  latency: boolean; // report median ms as a latency row
  timeoutS: number;
  title: string;
}

const WORKLOADS: Workload[] = [
  { id: 'train-seed', batch: 128, warmup: 2, steps: 5, quickWarmup: 1, quickSteps: 2, latency: false, timeoutS: 420,
    title: 'seed CIFAR MobileNetV2, train step b128 (fwd + softmax CE + bwd)' },
  { id: 'train-seed-sgd', batch: 128, warmup: 2, steps: 5, quickWarmup: 1, quickSteps: 2, latency: false, timeoutS: 420,
    title: 'seed CIFAR MobileNetV2, train step b128 + SGD (momentum 0.9, wd 5e-4)' },
  { id: 'train-224', batch: 32, warmup: 2, steps: 5, quickWarmup: 1, quickSteps: 2, latency: false, timeoutS: 420,
    title: 'torchvision mobilenet_v2 α1.0 224×224 (ReLU6), train step b32 (fwd + softmax CE + bwd)' },
  { id: 'infer-seed', batch: 128, warmup: 2, steps: 10, quickWarmup: 1, quickSteps: 3, onnx: 'seed', latency: false,
    timeoutS: 300, title: 'seed CIFAR MobileNetV2, eval inference b128' },
  { id: 'infer-224', batch: 1, warmup: 10, steps: 100, quickWarmup: 3, quickSteps: 10, onnx: 'imagenet', latency: true,
    timeoutS: 300, title: 'torchvision mobilenet_v2 α1.0 224×224, eval inference b1' },
];
// torch-default: NCHW, the default BLAS; torch-channels-last: the same in torch.channels_last. Both with trained
// weights (real BN statistics) and flush-denormal: PyTorch at its best (bench/peers/torch_bench.py).
const PEERS: PeerId[] = ['project-native', 'project-ort', 'ort-torch-export', 'torch-default', 'torch-channels-last', 'torch-openblas'];

interface Options {
  quick: boolean;
  only?: RegExp;
  threads: number;
  waitQuietS: number;
  retryNoisy: number;
  bothBlas: boolean;
  projectCli: string;
  projectExtra: string[];
  python: string;
  out: string;
  keepTmp: boolean;
  rounds: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    quick: false, threads: 2, waitQuietS: -1, retryNoisy: 0, bothBlas: false,
    projectCli: join(ROOT, 'dist', 'src', 'cli', 'main.js'), projectExtra: [],
    python: '/usr/bin/python3', out: join(ROOT, 'bench', 'RESULTS.md'), keepTmp: false, rounds: -1,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--quick': o.quick = true; break;
      case '--only': o.only = new RegExp(val()); break;
      case '--threads': o.threads = Number.parseInt(val(), 10); break;
      case '--wait-quiet': o.waitQuietS = Number.parseFloat(val()); break;
      case '--retry-noisy': o.retryNoisy = Number.parseInt(val(), 10); break;
      case '--both-blas': o.bothBlas = true; break;
      case '--project-cli': o.projectCli = val(); break;
      case '--project-extra': o.projectExtra = val().split(/\s+/).filter(Boolean); break;
      case '--python': o.python = val(); break;
      case '--out': o.out = val(); break;
      case '--keep-tmp': o.keepTmp = true; break;
      case '--rounds': o.rounds = Number.parseInt(val(), 10); break;
      case '-h': case '--help':
        console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n')
          .filter((l) => l.startsWith('//')).slice(0, 20).map((l) => l.slice(3)).join('\n'));
        process.exit(0);
        break;
      default: throw new Error(`unknown argument ${a} (try --help)`);
    }
  }
  if (o.waitQuietS < 0) o.waitQuietS = o.quick ? 5 : 20;
  if (o.rounds < 0) o.rounds = o.quick ? 1 : 5;
  if (!(o.rounds >= 1)) throw new Error('--rounds must be a positive integer');
  return o;
}

// ---------------------------------------------------------------- machine noise

interface CpuStat { busy: number; steal: number }
const HZ = 100; // USER_HZ on Linux x86-64

function readCpuStat(): CpuStat | undefined {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
    return { busy: (user + nice + system + irq + softirq) / HZ, steal: steal / HZ };
  } catch {
    return undefined;
  }
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until other processes use < 0.2 CPU (over 2 s), at most maxS seconds. */
async function waitQuiet(maxS: number): Promise<{ waitedS: number; busyCpus: number }> {
  const t0 = performance.now();
  let busy = Number.NaN;
  if (maxS <= 0) return { waitedS: 0, busyCpus: busy };
  for (;;) {
    const a = readCpuStat();
    await sleep(2000);
    const b = readCpuStat();
    if (!a || !b) return { waitedS: 0, busyCpus: Number.NaN };
    busy = (b.busy - a.busy) / 2;
    const waited = (performance.now() - t0) / 1e3;
    if (busy < 0.2 || waited >= maxS) return { waitedS: waited, busyCpus: busy };
  }
}

/** utime+stime (s) and peak RSS (MB) of a live process, from /proc. */
function procSample(pid: number): { cpuS: number; hwmMb: number } | undefined {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    const cpuS = (Number(f[11]) + Number(f[12])) / HZ;
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { cpuS, hwmMb: m ? Number(m[1]) / 1024 : Number.NaN };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- child processes

interface ChildResult {
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  spawnError?: string;
  stdout: string;
  stderr: string;
  wallS: number;
  ownCpuS: number; // sampled every 200 ms from /proc (slight undercount at the end)
  hwmMb: number; // observed peak RSS
  machineBusyS: number;
  stealS: number;
}

// Children run in their own process group (so a timeout kills all of it); if the harness itself
// is interrupted, take the running child down with it instead of leaving it orphaned.
let currentChildPid: number | undefined;
let tmpDirToRemove: string | undefined;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    if (currentChildPid !== undefined) {
      try { process.kill(-currentChildPid, 'SIGKILL'); } catch { /* already gone */ }
    }
    if (tmpDirToRemove) rmSync(tmpDirToRemove, { recursive: true, force: true });
    process.exit(130);
  });
}

function runChild(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutS: number): Promise<ChildResult> {
  return new Promise((resolve) => {
    const s0 = readCpuStat();
    const t0 = performance.now();
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let ownCpuS = 0;
    let hwmMb = Number.NaN;
    let spawnError: string | undefined;
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    currentChildPid = child.pid;
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
    });
    const poll = setInterval(() => {
      if (child.pid === undefined) return;
      const s = procSample(child.pid);
      if (s) { ownCpuS = s.cpuS; hwmMb = s.hwmMb; }
    }, 200);
    const killer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) {
        try { process.kill(-child.pid, 'SIGKILL'); } catch { child.kill('SIGKILL'); }
      }
    }, timeoutS * 1e3);
    child.on('error', (e) => { spawnError = e.message; });
    child.on('close', (code, signal) => {
      currentChildPid = undefined;
      clearInterval(poll);
      clearTimeout(killer);
      const s1 = readCpuStat();
      resolve({
        code, signal, timedOut, spawnError, stdout, stderr,
        wallS: (performance.now() - t0) / 1e3, ownCpuS, hwmMb,
        machineBusyS: s0 && s1 ? s1.busy - s0.busy : Number.NaN,
        stealS: s0 && s1 ? s1.steal - s0.steal : Number.NaN,
      });
    });
  });
}

// ---------------------------------------------------------------- measurements

interface Measurement {
  id: string;
  workload: Workload;
  peer: PeerId;
  cmd: string[];
  envNote: string;
  ok: boolean;
  error?: string;
  json?: Record<string, unknown>;
  imgPerS?: number;
  medianMs?: number;
  /** Fastest step over all rounds, and the largest spread (p90 − p10) / median of a round. */
  minMs?: number;
  spread?: number;
  peakRssMb?: number;
  noise?: { waitedS: number; busyBeforeCpus: number; foreignCpus: number; stealS: number; ownCpuUtil: number; wallS: number };
  noisy: boolean;
  attempts: number;
  skippedNote?: string;
  /** img/s of each successful round (repeated measurements only). */
  rounds: number[];
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

async function measure(
  m: Measurement, cmd: string, args: string[], env: NodeJS.ProcessEnv, opts: Options,
): Promise<void> {
  m.cmd = [cmd, ...args];
  const q = await waitQuiet(opts.waitQuietS);
  const r = await runChild(cmd, args, env, m.workload.timeoutS * (opts.quick ? 0.6 : 1));
  m.attempts++;
  const foreign = (r.machineBusyS - r.ownCpuS) / r.wallS;
  m.noise = {
    waitedS: q.waitedS, busyBeforeCpus: q.busyCpus, foreignCpus: foreign, stealS: r.stealS,
    ownCpuUtil: r.ownCpuS / r.wallS, wallS: r.wallS,
  };
  // More than a quarter of a CPU used by others on a 2-CPU box, or steal: suspect.
  m.noisy = foreign > 0.25 || r.stealS > 0.05 * r.wallS;
  const json = lastJson(r.stdout);
  m.json = json;
  if (r.spawnError) {
    m.ok = false; m.error = `spawn failed: ${r.spawnError}`;
  } else if (r.timedOut) {
    m.ok = false; m.error = `timeout after ${r.wallS.toFixed(0)} s`;
  } else if (r.code !== 0) {
    m.ok = false;
    m.error = `exit ${r.code ?? r.signal}: ${lastLines(r.stderr || r.stdout, 2) || '(no output)'}`;
  } else if (!json) {
    m.ok = false; m.error = `no JSON line in output: ${lastLines(r.stdout || r.stderr, 2) || '(no output)'}`;
  } else if (num(json.img_per_s) === undefined) {
    m.ok = false; m.error = `JSON has no numeric img_per_s: ${JSON.stringify(json).slice(0, 200)}`;
  } else {
    m.ok = true;
    m.error = undefined;
    m.imgPerS = num(json.img_per_s);
    m.medianMs = num(json.median_ms) ?? num(json.ms_per_step) ?? (m.workload.batch / m.imgPerS!) * 1e3;
    m.peakRssMb = num(json.peak_rss_mb) ?? (Number.isFinite(r.hwmMb) ? r.hwmMb : undefined);
    const minMs = num(json.min_ms);
    if (minMs !== undefined) m.minMs = Math.min(m.minMs ?? Infinity, minMs);
    const spread = num(json.spread);
    if (spread !== undefined) m.spread = Math.max(m.spread ?? 0, spread);
    if (json.workload !== undefined && json.workload !== m.workload.id) {
      m.error = `warning: child reported workload ${String(json.workload)}`;
    }
    if (json.batch !== undefined && json.batch !== m.workload.batch) {
      m.error = `${m.error ? `${m.error}; ` : ''}warning: child reported batch ${String(json.batch)}`;
    }
  }
}

// ---------------------------------------------------------------- formatting

/** What a table cell shows: img/s, the median or the fastest step in ms, peak RSS in MB. */
type Kind = 'img' | 'ms' | 'min' | 'mb';
/** Step-time spread (p90 − p10) / median above which a time is flagged ‡. */
const SPREAD_FLAG = 0.25;

const fmt = (v: number | undefined, kind: Kind): string => {
  if (v === undefined) return '—';
  if (kind === 'mb') return v.toFixed(0);
  if (kind === 'ms' || kind === 'min') return v < 10 ? v.toFixed(2) : v.toFixed(1);
  return v < 100 ? v.toFixed(1) : v.toFixed(0);
};
const esc = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
/** Paths inside the repo shown relative to it; everything else as is. */
const showPath = (c: string): string => (c.startsWith(ROOT) ? c.slice(ROOT.length) : c);
const short = (s: string, n = 70): string => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

function cell(m: Measurement | undefined, kind: Kind, firstRow = true): string {
  if (!m) return '—';
  if (m.skippedNote) return firstRow ? m.skippedNote : '〃';
  if (!m.ok) return firstRow ? `not available: ${esc(short(m.error ?? '?'))}` : 'not available';
  const v = { img: m.imgPerS, ms: m.medianMs, min: m.minMs, mb: m.peakRssMb }[kind];
  const spread = (kind === 'ms' || kind === 'min') && (m.spread ?? 0) > SPREAD_FLAG ? ' ‡' : '';
  return v === undefined ? '—' : `${fmt(v, kind)}${m.noisy ? ' †' : ''}${spread}`;
}

/** speed ratio a/b (>1: a faster); for 'mb' a plain memory ratio. */
function ratio(a: Measurement | undefined, b: Measurement | undefined, kind: Kind): string {
  if (!a?.ok || !b?.ok) return '—';
  let r: number | undefined;
  if (kind === 'img') r = a.imgPerS! / b.imgPerS!;
  else if (kind === 'ms') r = b.medianMs! / a.medianMs!;
  else if (kind === 'min') r = a.minMs !== undefined && b.minMs !== undefined ? b.minMs / a.minMs : undefined;
  else r = a.peakRssMb !== undefined && b.peakRssMb !== undefined ? a.peakRssMb / b.peakRssMb : undefined;
  if (r === undefined || !Number.isFinite(r)) return '—';
  const eng = a.peer === 'project-native' ? 'native' : 'ORT';
  return `${r.toFixed(2)}×${kind === 'mb' ? ' mem' : ''} (${eng})`;
}

function faster(...ms: (Measurement | undefined)[]): Measurement | undefined {
  const ok = ms.filter((m): m is Measurement => !!m?.ok);
  if (ok.length === 0) return ms.find((m) => m !== undefined);
  return ok.reduce((x, y) => (y.imgPerS! > x.imgPerS! ? y : x));
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const tStart = performance.now();
  const started = new Date();
  const cmdLine = process.env.npm_lifecycle_event === 'bench'
    ? `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`
    : `node ${relative(ROOT, fileURLToPath(import.meta.url))} ${process.argv.slice(2).join(' ')}`.trim();

  // Machine facts.
  const host = machine();
  const { cpuModel, nproc, isa: simd } = host;
  let ortVersion = '?';
  try {
    ortVersion = (JSON.parse(readFileSync(join(ROOT, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')) as
      { version: string }).version;
  } catch { /* ignore */ }
  const versions = await runChild(opts.python,
    ['-c', 'import torch, torchvision; print(torch.__version__, torchvision.__version__)'], process.env, 60);
  const [torchVersion = 'unavailable', tvVersion = 'unavailable'] =
    versions.code === 0 ? versions.stdout.trim().split(/\s+/) : [];
  let defaultBlas = '?';
  try { defaultBlas = realpathSync(SYSTEM_BLAS_LIB); } catch { /* ignore */ }
  const haveOpenblas = existsSync(OPENBLAS_LIB);
  let openblasReal = '';
  try { openblasReal = realpathSync(OPENBLAS_LIB); } catch { /* ignore */ }
  const sameBlas = haveOpenblas && defaultBlas === openblasReal;

  console.log(`# MobileNetV2 bench ${opts.quick ? '(QUICK smoke run) ' : ''}— ${started.toISOString()}`);
  console.log(`cpu: ${cpuModel} × ${nproc} [${simd.join(' ')}]; node ${process.version}; torch ${torchVersion}; ` +
    `onnxruntime-node ${ortVersion}; default libblas -> ${defaultBlas}`);

  // Measurement plan.
  const plan: Measurement[] = [];
  for (const w of WORKLOADS) {
    for (const p of PEERS) {
      if (p === 'ort-torch-export' && !w.onnx) continue;
      const id = `${w.id}/${p}`;
      if (opts.only && !opts.only.test(id)) continue;
      plan.push({ id, workload: w, peer: p, cmd: [], envNote: '', ok: false, noisy: false, attempts: 0, rounds: [] });
    }
  }
  if (plan.length === 0 && (opts.only?.test('startup') || opts.only?.test('detect'))) {
    if (opts.only.test('startup')) console.log(await runStartupBench(opts.quick ? 5 : 15, opts.quick ? 1 : 2, opts.out));
    if (opts.only.test('detect')) await runDetectSection(opts);
    return;
  }
  if (plan.length === 0) throw new Error(`--only ${String(opts.only)} matches nothing; ids look like infer-224/torch-default`);

  // ONNX export (PyTorch's own exporter), once, into a temp dir.
  const tmp = mkdtempSync(join(tmpdir(), 'mnv2-bench-'));
  if (!opts.keepTmp) tmpDirToRemove = tmp;
  let exportInfo: Record<string, unknown> | undefined;
  let exportError: string | undefined;
  if (plan.some((m) => m.peer === 'ort-torch-export')) {
    console.log(`exporting PyTorch ONNX (opset 17, dynamic batch) into ${tmp} ...`);
    const r = await runChild(opts.python, [EXPORT_PY, '--outdir', tmp, '--opset', '17', '--threads', String(opts.threads)],
      process.env, 600);
    exportInfo = lastJson(r.stdout);
    if (r.code !== 0 || !exportInfo) {
      exportError = `ONNX export failed: ${lastLines(r.stderr || r.stdout, 2) || `exit ${r.code}`}`;
      console.log(exportError);
    } else {
      console.log(`exported in ${r.wallS.toFixed(1)} s`);
    }
  }

  const projectCliExists = existsSync(opts.projectCli);
  // Inference against ORT on PyTorch's export is what run-to-run noise decides, so those runs repeat, interleaved.
  const repeated = (m: Measurement): boolean => m.workload.onnx !== undefined && !m.peer.startsWith('torch');
  const order = Array.from({ length: opts.rounds }, (_, r) => plan.filter((m) => r === 0 || repeated(m))).flat();
  for (const m of order) {
    const w = m.workload;
    const warmup = opts.quick ? w.quickWarmup : w.warmup;
    const steps = opts.quick ? w.quickSteps : w.steps;
    for (;;) {
      const t0 = performance.now();
      if (m.peer === 'project-native' || m.peer === 'project-ort') {
        if (!projectCliExists) {
          m.ok = false;
          m.error = `${showPath(opts.projectCli)} not found (build first: tsc -p .)`;
          m.cmd = ['node', opts.projectCli];
        } else {
          const trained = TRAINED[w.id.endsWith('-224') ? 'imagenet' : 'seed'];
          await measure(m, process.execPath, [opts.projectCli, 'bench', '--workload', w.id, '--batch', String(w.batch),
            '--steps', String(steps), '--engine', m.peer === 'project-native' ? 'native' : 'ort', '--json',
            ...(existsSync(trained) ? ['--weights', trained] : []), ...opts.projectExtra], process.env, opts);
        }
      } else if (m.peer === 'ort-torch-export') {
        if (exportError) {
          m.ok = false; m.error = exportError;
        } else {
          await measure(m, process.execPath, [ORT_BENCH_JS, '--model', join(tmp, `${w.onnx!}.onnx`),
            '--workload', w.id, '--batch', String(w.batch), '--steps', String(steps), '--warmup', String(warmup),
            '--threads', String(opts.threads)], process.env, opts);
        }
      } else {
        const openblas = m.peer === 'torch-openblas';
        if (openblas && !haveOpenblas) {
          m.skippedNote = `not available: ${OPENBLAS_LIB} missing`;
          break;
        }
        if (openblas && sameBlas && !opts.bothBlas) {
          m.skippedNote = 'same library as default (see notes)';
          break;
        }
        const env = { ...process.env };
        if (openblas) {
          env.LD_LIBRARY_PATH = env.LD_LIBRARY_PATH ? `${OPENBLAS_DIR}:${env.LD_LIBRARY_PATH}` : OPENBLAS_DIR;
          m.envNote = `LD_LIBRARY_PATH=${OPENBLAS_DIR} `;
        }
        await measure(m, opts.python, [TORCH_BENCH_PY, '--workload', w.id, '--batch', String(w.batch),
          '--steps', String(steps), '--warmup', String(warmup), '--threads', String(opts.threads),
          '--layout', m.peer === 'torch-channels-last' ? 'channels_last' : 'nchw'], env, opts);
      }
      const n = m.noise;
      console.log(`${m.id.padEnd(34)} ${m.ok ? `${fmt(m.imgPerS, 'img')} img/s, ${fmt(m.medianMs, 'ms')} ms/step` +
        `${m.peakRssMb !== undefined ? `, peak RSS ${fmt(m.peakRssMb, 'mb')} MB` : ''}` : `not available: ${m.error}`}` +
        (n ? `  [${n.wallS.toFixed(1)} s wall, own ${n.ownCpuUtil.toFixed(2)} CPU, foreign ${n.foreignCpus.toFixed(2)} CPU` +
          `${n.waitedS > 2.5 ? `, waited ${n.waitedS.toFixed(0)} s for quiet` : ''}${m.noisy ? ', NOISY' : ''}]` : '') +
        ` (${((performance.now() - t0) / 1e3).toFixed(0)} s)`);
      if (!(m.ok && m.noisy && m.attempts <= opts.retryNoisy)) break;
      console.log('  noisy: measuring again');
    }
    if (m.ok && repeated(m)) m.rounds.push(m.imgPerS!);
  }
  for (const m of plan) {
    if (m.rounds.length < 2) continue;
    m.imgPerS = median(m.rounds);
    m.medianMs = (m.workload.batch / m.imgPerS) * 1e3;
    m.ok = true;
  }
  if (!opts.keepTmp) rmSync(tmp, { recursive: true, force: true });

  // ------------------------------------------------------------ report
  const get = (w: WorkloadId, p: PeerId): Measurement | undefined => plan.find((m) => m.workload.id === w && m.peer === p);
  const header = '| workload | metric | project native | project ORT | ORT on torchvision/PyTorch export | PyTorch best ' +
    '| ratio project/PyTorch-best | ratio project/ORT-torchvision | PyTorch NCHW | PyTorch channels_last | PyTorch NCHW OpenBLAS |';
  const rows: string[] = [header, `|${'---|'.repeat(11)}`];
  const torchName: Partial<Record<PeerId, string>> = { 'torch-default': 'NCHW', 'torch-channels-last': 'channels_last', 'torch-openblas': 'OpenBLAS' };
  for (const w of WORKLOADS) {
    const ms = PEERS.map((p) => get(w.id, p));
    if (ms.every((m) => m === undefined)) continue;
    const [nat, pOrt, tvOrt, tDef, tCl, tOb] = ms;
    const tBest = faster(tDef, tCl, tOb);
    const proj = faster(nat, pOrt);
    const metrics: { label: string; kind: Kind }[] = w.latency
      ? [{ label: 'latency b1, ms (median)', kind: 'ms' }, { label: 'latency b1, ms (min)', kind: 'min' }, { label: 'img/s (b1)', kind: 'img' }]
      : [{ label: `img/s (b${w.batch})`, kind: 'img' }, { label: 'ms/step (median)', kind: 'ms' }];
    metrics.push({ label: 'peak RSS, MB', kind: 'mb' });
    metrics.forEach(({ label, kind }, i) => {
      const first = i === 0;
      const bestCell = tBest?.ok ? `${cell(tBest, kind)} (${torchName[tBest.peer]})` : cell(tBest, kind, first);
      rows.push(`| ${w.id} | ${label} | ${cell(nat, kind, first)} | ${cell(pOrt, kind, first)} ` +
        `| ${w.onnx ? cell(tvOrt, kind, first) : 'n/a (inference only)'} ` +
        `| ${bestCell} | ${ratio(proj, tBest, kind)} | ${w.onnx ? ratio(proj, tvOrt, kind) : '—'} ` +
        `| ${cell(tDef, kind, first)} | ${cell(tCl, kind, first)} | ${cell(tOb, kind, first)} |`);
    });
  }
  // The data pipeline alone, against what a training step consumes (target: >= 5x).
  const train = get('train-seed-sgd', 'project-native') ?? get('train-seed', 'project-native');
  let loaderLine = '';
  if (!opts.only || opts.only.test('loader')) {
    const r = await runChild(process.execPath, [opts.projectCli, 'bench', '--workload', 'loader', '--steps', '200', '--warmup', '5', '--json'], process.env, 300);
    const j = lastJson(r.stdout) as { img_per_s?: number } | undefined;
    const trainRate = train?.ok ? Number(train.json?.img_per_s) : NaN;
    loaderLine = j?.img_per_s
      ? `Data loader alone (Fashion-MNIST, seed augmentation, worker thread, batch 128): ${j.img_per_s.toFixed(0)} img/s` +
        (Number.isFinite(trainRate) ? ` = ${(j.img_per_s / trainRate).toFixed(0)}× the training step's ${trainRate.toFixed(0)} img/s.` : '.')
      : `Data loader: not available (${lastLines(r.stderr || r.stdout, 1) || `exit ${r.code}`})`;
  }
  const roundLines = plan.filter((m) => m.rounds.length > 1)
    .map((m) => `- ${m.id}: median of ${m.rounds.length} rounds, img/s ${m.rounds.map((v) => fmt(v, 'img')).join(', ')}`);
  const table = rows.join('\n') + (loaderLine ? `\n\n${loaderLine}` : '') +
    (roundLines.length ? `\n\nRepeated measurements (interleaved rounds; the table shows their median):\n${roundLines.join('\n')}` : '');

  // Sanity notes.
  const sanity: string[] = [];
  for (const m of plan) {
    const s = m.json?.sanity as Record<string, unknown> | undefined;
    if (m.peer === 'ort-torch-export' && m.ok && s) {
      sanity.push(`- ${m.id}: ORT output vs PyTorch eval output on the same reference input (batch ${String(s.ref_batch)}): ` +
        `max abs diff ${typeof s.max_abs_diff_vs_torch === 'number' ? s.max_abs_diff_vs_torch.toExponential(2) : String(s.max_abs_diff_vs_torch)}` +
        ` (largest |logit| ${num(s.max_abs_torch_logit)?.toFixed(3) ?? '?'}); outputs finite: ${String(s.outputs_finite)}`);
    } else if (m.peer.startsWith('torch') && m.ok && s) {
      const parts = [`params ${String(s.params)} (expected ${String(s.params_expected)}${s.params_ok ? ', ok' : ', MISMATCH'})`];
      if (s.loss_first !== undefined) {
        parts.push(`loss first ${num(s.loss_first)?.toFixed(4)} → last ${num(s.loss_last)?.toFixed(4)} (random labels: about ln of the class count)`);
      }
      if (s.outputs_finite !== undefined) parts.push(`outputs finite: ${String(s.outputs_finite)}`);
      const blas = (m.json?.blas_loaded as string[] | undefined)?.join(', ') || 'none mapped';
      parts.push(`BLAS mapped: ${blas}`);
      parts.push(`cpu_util ${num(m.json?.cpu_util)?.toFixed(2)}`);
      sanity.push(`- ${m.id}: ${parts.join('; ')}`);
    } else if (m.peer.startsWith('project') && m.ok && m.json) {
      const extra = Object.fromEntries(Object.entries(m.json).filter(([k]) =>
        !['workload', 'engine', 'batch', 'img_per_s', 'ms_per_step', 'peak_rss_mb'].includes(k)));
      sanity.push(`- ${m.id}: engine ${String(m.json.engine)}; other fields: ${Object.keys(extra).length ? JSON.stringify(extra) : '(none)'}`);
    }
  }

  const detail = plan.map((m) => {
    const n = m.noise;
    return `| ${m.id} | ${m.skippedNote ? esc(m.skippedNote) : m.ok ? 'ok' : `not available: ${esc(short(m.error ?? '?', 300))}`}` +
      `${m.ok && m.error ? ` (${esc(m.error)})` : ''} | ${n ? n.wallS.toFixed(1) : '—'} | ${n ? n.ownCpuUtil.toFixed(2) : '—'} ` +
      `| ${n ? n.foreignCpus.toFixed(2) : '—'}${m.noisy ? ' †' : ''} | ${n && Number.isFinite(n.stealS) ? n.stealS.toFixed(1) : '—'} ` +
      `| ${n ? n.waitedS.toFixed(0) : '—'} | \`${esc(m.envNote + m.cmd.map(showPath).join(' '))}\` |`;
  });

  const noisyCount = plan.filter((m) => m.noisy).length;
  const totalS = (performance.now() - tStart) / 1e3;
  const stepsNote = WORKLOADS.map((w) => `${w.id}: batch ${w.batch}, ${opts.quick ? w.quickWarmup : w.warmup} warm-up + ` +
    `${opts.quick ? w.quickSteps : w.steps} timed`).join('; ');
  const md = `# MobileNetV2 benchmark results${opts.quick ? ' (QUICK smoke run — few steps, not for comparison)' : ''}

- Date: ${started.toISOString()} (total ${(totalS / 60).toFixed(1)} min)
- Command: \`${cmdLine}\`
- Machine: ${machineLine(host)}
- Node ${process.version}; onnxruntime-node ${ortVersion}; PyTorch ${torchVersion} / torchvision ${tvVersion} (\`${opts.python}\`)
- Threads: PyTorch \`torch.set_num_threads(${opts.threads})\`; ORT peer intraOpNumThreads ${opts.threads}, interOp 1, sequential, graphOptimizationLevel 'all'; the project CLI picks its own.
- Default \`libblas.so.3\` resolves to \`${defaultBlas}\`${sameBlas ? ` — already OpenBLAS (Debian alternatives), so the separate OpenBLAS run was ${opts.bothBlas ? 'still done (--both-blas)' : 'skipped (force with --both-blas)'}` : ''}.
- Steps: ${stepsNote}. Median step time; img/s = batch / median. Inputs random (speed only). Weights: trained, the same file for
  every peer (\`${relative(ROOT, TRAINED.seed)}\` for the seed model; for α1.0@224 \`${relative(ROOT, TRAINED.imagenet)}\`${existsSync(TRAINED.imagenet) ? '' : ' — missing here, so random init, with BN statistics from forward passes on the PyTorch side'}):
  random-init eval-mode BN has activation ranges no trained model has. PyTorch with \`torch.set_flush_denormal(True)\`.

${noisyCount ? `> **${noisyCount} of ${plan.filter((m) => m.noise).length} runs were noisy (†)**: other processes used CPU while they ran. ` +
  'PyTorch (OpenMP) in particular slows down many-fold when it shares the 2 CPUs; rerun on an idle machine before quoting.\n\n' : ''}${table}

Legend: ratios are **speed** ratios, project ÷ peer (img/s ratio; for latency rows peer ms ÷ project ms), so > 1 means the project is faster;
the project side is the faster of its two engines (named in brackets). "× mem" rows are plain peak-RSS ratios (< 1: project uses less).
PyTorch best = the fastest of the NCHW, channels_last (model and input in \`torch.channels_last\`) and OpenBLAS runs, named in brackets.
‡ = the step times spread widely: (p90 − p10) / median > ${SPREAD_FLAG} in a run; the latency rows give the median and the fastest step.
"ORT on torchvision/PyTorch export" = onnxruntime-node on
\`torch.onnx.export\` (opset 17, dynamic batch) of the same model: torchvision's mobilenet_v2 for infer-224, the seed model for infer-seed.
† = noisy: other processes used > 0.25 CPU on average (or there was hypervisor steal) while it ran; treat with care.

## Sanity (is it apples to apples?)
${exportError ? `- ${exportError}\n` : ''}${sanity.join('\n') || '- (no successful peer runs)'}

## Runs (in order; each its own process)
| id | status | wall s | own CPU util | foreign CPUs | steal s | waited s for quiet | command |
|---|---|---|---|---|---|---|---|
${detail.join('\n')}

<details><summary>raw JSON per run</summary>

\`\`\`
${plan.map((m) => `${m.id}: ${m.json ? JSON.stringify(m.json) : 'null'}`).join('\n')}
\`\`\`
</details>
`;
  writeMainReport(opts.out, md);
  // Start-up of the CLI (summary, predict on one image): its own section of the report.
  if (!opts.only || opts.only.test('startup')) {
    console.log(`\n${await runStartupBench(opts.quick ? 5 : 15, opts.quick ? 1 : 2, opts.out)}`);
  }
  if (!opts.only || opts.only.test('detect')) await runDetectSection(opts);
  console.log(`\n${table}\n`);
  console.log(sanity.join('\n'));
  console.log(`\nwrote ${opts.out} (total ${(totalS / 60).toFixed(1)} min)`);
}

/** SSDLite detection (bench/detect.ts) in its own process: it writes its own section of the report. */
async function runDetectSection(opts: Options): Promise<void> {
  const r = await runChild(process.execPath, [DETECT_JS, '--threads', String(opts.threads), '--python', opts.python, '--out', opts.out,
    ...(opts.quick ? ['--quick'] : [])], process.env, 900);
  console.log(r.code === 0 ? `\n${r.stdout}` : `\ndetection bench failed (exit ${r.code ?? r.signal}): ${lastLines(r.stderr || r.stdout, 2)}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exit(1);
});
