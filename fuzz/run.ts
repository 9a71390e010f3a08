/**
 * `npm run fuzz -- --seconds N --seed S [--only NAME] [--json]`: every loader of fuzz/loaders.ts on seeded mutations
 * of a valid input, each loader in its own child process with a per-input timeout, so that a hang or a crash is
 * counted, not fatal. Outcomes per input: a clear error (an Error whose message names the file or its folder),
 * accepted, an unclear error (a TypeError, RangeError, or a message naming no file), a hang, a crash. Exits 1
 * unless the last three are zero.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/util/rng.js';
import { LOADERS, type FuzzLoader, type Seed } from './loaders.js';
import { mutate } from './mutate.js';
import type { Job, Outcome } from './child.js';

export const KINDS = ['clear', 'accepted', 'unclear', 'hang', 'crash'] as const;
export type Kind = (typeof KINDS)[number];

export interface LoaderReport {
  loader: string;
  inputs: number;
  counts: Record<Kind, number>;
  /** The first few inputs that were not a clear error or accepted: what was done and what happened. */
  failures: string[];
}

interface Options {
  seconds: number;
  seed: number;
  timeoutMs: number;
  only?: RegExp;
}

function parseArgs(argv: string[]): Options & { json: boolean } {
  const o = { seconds: 60, seed: 1, timeoutMs: 10_000, json: false } as Options & { json: boolean };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--seconds') o.seconds = Number(v());
    else if (a === '--seed') o.seed = Number(v());
    else if (a === '--timeout-ms') o.timeoutMs = Number(v());
    else if (a === '--only') o.only = new RegExp(v());
    else if (a === '--json') o.json = true;
    else throw new Error(`unknown argument ${a} (--seconds N --seed S --timeout-ms T --only REGEX --json)`);
  }
  if (!(o.seconds > 0) || !Number.isInteger(o.seed) || !(o.timeoutMs > 0)) throw new Error('--seconds and --timeout-ms must be > 0, --seed an integer');
  return o;
}

const CHILD = fileURLToPath(new URL('./child.js', import.meta.url));

/** A loader's child process, restarted after a hang or a crash. */
class Worker {
  private child: ChildProcess | null = null;
  constructor(private readonly timeoutMs: number) {}

  /** Starts the child (loading every loader's modules takes a while): before the clock starts. */
  async ready(): Promise<void> {
    this.child ??= await this.start();
  }

  private async start(): Promise<ChildProcess> {
    const c = fork(CHILD, [], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      c.once('message', () => resolve());
      c.once('exit', (code) => reject(new Error(`fuzz child exited (${code}) before it was ready`)));
    });
    return c;
  }

  async run(job: Job): Promise<{ kind: 'hang' | 'crash'; detail: string } | Outcome> {
    const c = (this.child ??= await this.start());
    return new Promise((resolve) => {
      const done = (r: { kind: 'hang' | 'crash'; detail: string } | Outcome): void => {
        clearTimeout(timer);
        c.off('message', onMessage);
        c.off('exit', onExit);
        resolve(r);
      };
      const onMessage = (m: Outcome): void => done(m);
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
        this.child = null;
        done({ kind: 'crash', detail: `child died (${signal ?? `exit ${code}`})` });
      };
      const timer = setTimeout(() => {
        c.off('exit', onExit);
        c.kill('SIGKILL');
        this.child = null;
        done({ kind: 'hang', detail: `no answer in ${this.timeoutMs} ms` });
      }, this.timeoutMs);
      c.on('message', onMessage);
      c.once('exit', onExit);
      c.send(job);
    });
  }

  stop(): void {
    this.child?.kill('SIGKILL');
    this.child = null;
  }
}

function classify(r: Awaited<ReturnType<Worker['run']>>, dir: string, target: string): { kind: Kind; detail: string } {
  if ('kind' in r) return r;
  if (r.accepted) return { kind: 'accepted', detail: '' };
  const names = r.message!.includes(basename(target)) || r.message!.includes(dir);
  const plain = r.error === 'Error' || r.error === 'FetchError';
  return names && plain ? { kind: 'clear', detail: '' } : { kind: 'unclear', detail: `${r.error}: ${r.message!.slice(0, 300)}` };
}

function writeSeed(dir: string, seed: Seed, target?: Buffer): void {
  for (const [name, bytes] of Object.entries(seed.files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), name === seed.target && target ? target : bytes);
  }
}

/** Fuzzes the loaders round-robin until the time is up. */
export async function fuzz(o: Options, loaders: readonly FuzzLoader[] = LOADERS): Promise<LoaderReport[]> {
  const root = mkdtempSync(join(tmpdir(), 'mnv2-fuzz-'));
  const rng = new Rng(o.seed);
  const chosen = loaders.filter((l) => !o.only || o.only.test(l.name));
  const state = await Promise.all(chosen.map(async (l, i) => {
    const dir = join(root, String(i));
    mkdirSync(dir);
    const seed = await l.seed(root);
    writeSeed(dir, seed);
    const report: LoaderReport = { loader: l.name, inputs: 0, counts: Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>, failures: [] };
    return { l, dir, seed, report, worker: new Worker(o.timeoutMs) };
  }));
  await Promise.all(state.map((s) => s.worker.ready()));
  let end = Infinity; // the clock starts after the seeds: their first load also loads the loader's modules
  try {
    // The unmutated seed first: a loader must accept its own valid input.
    for (let round = 0; round === 0 || performance.now() < end; round++) {
      for (const s of state) {
        const m = round === 0 ? { bytes: Buffer.from(s.seed.files[s.seed.target]!), what: 'seed' } : mutate(s.seed.files[s.seed.target]!, rng);
        writeSeed(s.dir, s.seed, m.bytes);
        const r = classify(await s.worker.run({ loader: s.l.name, dir: s.dir, target: s.seed.target }), s.dir, s.seed.target);
        s.report.inputs++;
        s.report.counts[r.kind]++;
        if (round === 0 && r.kind !== 'accepted') s.report.failures.push(`seed not accepted: ${r.kind} ${r.detail}`);
        if ((r.kind === 'unclear' || r.kind === 'hang' || r.kind === 'crash') && s.report.failures.length < 5) s.report.failures.push(`${m.what} (${m.bytes.length} bytes): ${r.kind}: ${r.detail}`);
      }
      if (round === 0) end = performance.now() + o.seconds * 1000;
    }
  } finally {
    for (const s of state) s.worker.stop();
    rmSync(root, { recursive: true, force: true });
  }
  return state.map((s) => s.report);
}

function format(reports: LoaderReport[]): string {
  const rows = [['loader', 'inputs', ...KINDS], ...reports.map((r) => [r.loader, String(r.inputs), ...KINDS.map((k) => String(r.counts[k]))])];
  const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const lines = rows.map((r) => r.map((x, c) => (c === 0 ? x.padEnd(w[c]!) : x.padStart(w[c]!))).join('  '));
  for (const r of reports) for (const f of r.failures) lines.push(`  ${r.loader}: ${f}`);
  return lines.join('\n');
}

const bad = (r: LoaderReport): boolean => r.counts.unclear + r.counts.hang + r.counts.crash > 0 || r.failures.some((f) => f.startsWith('seed'));

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const o = parseArgs(process.argv.slice(2));
  const reports = await fuzz(o);
  console.log(o.json ? JSON.stringify({ seed: o.seed, seconds: o.seconds, reports }) : format(reports));
  if (reports.some(bad)) process.exitCode = 1;
}
