/**
 * Runs experiment jobs as `mnv2` child processes, a few at a time (two one-thread jobs use two cores better than
 * one two-thread job: no barrier waits). A job that finished before with the same command is skipped, so an
 * interrupted suite continues where it stopped; a failed job stops its dependents, not the others.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Job } from './jobs.js';
import { formatDuration } from '../train/progress.js';
import { fail } from '../util/errors.js';

export interface RunnerOptions {
  /** Jobs at a time. */
  parallel: number;
  /** `--threads` of each job. */
  threads: number;
  /** The `mnv2` entry script the jobs run (node runs it). */
  cli: string;
  log: (m: string) => void;
}

/** What the runner keeps beside each job's output: the command it ran and how long it took. */
export interface JobRecord {
  argv: string[];
  /** The `--threads` it ran with (absent: the command takes none). */
  threads?: number;
  /** How many jobs ran at a time beside it (the runner's `parallel`; a timing job ran alone). */
  parallel?: number;
  seconds: number;
}

export const recordFile = (j: Job): string => `${j.output}.job.json`;

export function readRecord(j: Job): JobRecord | undefined {
  const f = recordFile(j);
  if (!existsSync(f) || !existsSync(j.output)) return undefined;
  return readJsonFile<JobRecord>(f);
}

/** A JSON file a job left; a damaged one is an error naming it (deleting it reruns its job). */
export function readJsonFile<T>(f: string): T {
  try {
    return JSON.parse(readFileSync(f, 'utf8')) as T;
  } catch (e) {
    fail(f, `not valid JSON (${(e as Error).message}); delete it to rerun the job that wrote it`);
  }
}

const sameCommand = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** Runs every job not done yet; throws, naming each failed job and its log, when any failed. */
export async function runJobs(jobs: readonly Job[], o: RunnerOptions): Promise<void> {
  const done = new Set<string>();
  const failed = new Map<string, string>();
  for (const j of jobs) {
    const r = readRecord(j);
    if (r && sameCommand(r.argv, j.argv)) done.add(j.id);
  }
  const todo = jobs.filter((j) => !done.has(j.id));
  o.log(`${jobs.length} jobs: ${done.size} done before, ${todo.length} to run, ${o.parallel} at a time with ${o.threads} thread(s) each`);
  const running = new Map<Job, Promise<void>>();
  const total = todo.length;
  let finished = 0;
  const aloneRunning = (): boolean => [...running.keys()].some((j) => j.exclusive);
  while (todo.length || running.size) {
    for (let i = 0; i < todo.length && running.size < o.parallel && !aloneRunning();) {
      const j = todo[i];
      const blocked = j.after.find((a) => failed.has(a));
      if (blocked) {
        failed.set(j.id, `not run: ${blocked} failed`);
        todo.splice(i, 1);
        continue;
      }
      // A timing job runs alone, after everything else that can run now (not before the jobs that wait for it).
      const ready = (t: Job): boolean => t.after.every((a) => done.has(a));
      const waits = !ready(j) || (j.exclusive && (running.size > 0 || todo.some((t) => !t.exclusive && ready(t))));
      if (waits) { i++; continue; }
      todo.splice(i, 1);
      o.log(`start ${j.id}: mnv2 ${j.argv.join(' ')}`);
      running.set(j, runOne(j, o).then((seconds) => {
        done.add(j.id);
        o.log(`[${++finished}/${total}] done ${j.id} in ${formatDuration(seconds)}`);
      }, (e: Error) => {
        failed.set(j.id, e.message);
        o.log(`FAILED ${j.id}: ${e.message}`);
      }).finally(() => running.delete(j)));
    }
    if (!running.size) {
      // Nothing can start: the rest wait for jobs that are not in the list.
      for (const j of todo.splice(0)) failed.set(j.id, `not run: waits for ${j.after.filter((a) => !done.has(a)).join(', ')}`);
      break;
    }
    await Promise.race(running.values());
  }
  if (failed.size) throw new Error(`${failed.size} experiment job(s) failed:\n${[...failed].map(([id, m]) => `  ${id}: ${m}`).join('\n')}`);
}

/** One job: stdout to its output (atomically) or to its log, stderr to its log; resolves with the wall time. */
function runOne(j: Job, o: RunnerOptions): Promise<number> {
  mkdirSync(dirname(j.output), { recursive: true });
  const logFile = `${j.output}.log`;
  const tmp = `${j.output}.tmp-${process.pid}`;
  const argv = j.threads ? [...j.argv, '--threads', String(o.threads)] : j.argv;
  const err = openSync(logFile, 'w');
  const out = j.stdoutToOutput ? openSync(tmp, 'w') : err;
  const t0 = performance.now();
  return new Promise<number>((resolve, reject) => {
    const child = spawn(process.execPath, [o.cli, ...argv], { stdio: ['ignore', out, err] });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      closeSync(err);
      if (out !== err) closeSync(out);
      const seconds = (performance.now() - t0) / 1000;
      if (code !== 0) {
        rmSync(tmp, { force: true });
        reject(new Error(`exit ${signal ?? code}; see ${logFile}`));
        return;
      }
      if (j.stdoutToOutput) renameSync(tmp, j.output);
      else if (!existsSync(j.output)) {
        reject(new Error(`finished without writing ${j.output}; see ${logFile}`));
        return;
      }
      writeFileSync(recordFile(j), JSON.stringify({ argv: j.argv, ...(j.threads ? { threads: o.threads } : {}), parallel: j.exclusive ? 1 : o.parallel, seconds } satisfies JobRecord));
      resolve(seconds);
    });
  });
}
