/** `mnv2 experiment NAME...`: the seed's claims as reruns (src/experiments), each ending in a committed report. */
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import type { DataChoice } from '../experiments/jobs.js';
import { EXPERIMENT_NAMES, FULL_BUDGET, QUICK_BUDGET, type ExperimentName } from '../experiments/plan.js';
import { int, THREADS } from './args.js';

interface ExperimentOpts {
  quick?: boolean;
  dataset: DataChoice['name'];
  data?: string;
  runs?: string;
  out?: string;
  jobs?: string;
  threads?: string;
  reportOnly?: boolean;
}

export function registerExperimentCommand(program: Command): void {
  program
    .command('experiment')
    .description(`rerun one of the paper's or the seed's claims and write its report (${EXPERIMENT_NAMES.join(', ')}, or all)`)
    .argument('<names...>', `experiments: ${EXPERIMENT_NAMES.join(', ')} or all`)
    .option('--quick', 'tiny budgets (minutes, not hours): checks the whole pipeline, numbers mean nothing')
    .addOption(new Option('--dataset <name>', 'what the models train and are scored on').choices(['fashion-mnist', 'cifar10']).default('fashion-mnist'))
    .option('--data <dir>', 'where the dataset is (default: its usual place; CIFAR-10: mnv2 data fetch cifar10)')
    .option('--runs <dir>', 'where the trained models and measurements go (default runs/experiments[-quick][-cifar10])')
    .option('--out <dir>', 'where the reports go: <dir>/<name>/README.md (default experiments, or experiments-cifar10)')
    .option('--jobs <n>', 'jobs at a time (default: one per core)')
    .option('--threads <n>', 'engine threads per job (default: cores / jobs)')
    .option('--report-only', 'write the reports from the finished jobs; run nothing')
    .action(async (names: string[], o: ExperimentOpts) => {
      const chosen = experimentNames(names);
      const cores = availableParallelism();
      const parallel = int(o.jobs, '--jobs', { min: 1, max: 64 }) ?? cores;
      const threads = int(o.threads, '--threads', THREADS) ?? Math.max(1, Math.floor(cores / parallel));
      const budget = o.quick ? QUICK_BUDGET : FULL_BUDGET;
      const data: DataChoice = { name: o.dataset, ...(o.data === undefined ? {} : { dir: resolve(o.data) }) };
      const runs = resolve(o.runs ?? `runs/experiments${o.quick ? '-quick' : ''}${o.dataset === 'fashion-mnist' ? '' : `-${o.dataset}`}`);
      const [{ planJobs }, { runJobs }, { writeReports }] = await Promise.all([
        import('../experiments/jobs.js'), import('../experiments/runner.js'), import('../experiments/report.js'),
      ]);
      const jobs = planJobs(chosen, budget, runs, data);
      const log = (m: string): void => console.error(`[${new Date().toISOString().slice(11, 19)}] ${m}`);
      if (!o.reportOnly) await runJobs(jobs, { parallel, threads, cli: process.argv[1], log });
      for (const f of await writeReports(chosen, { budget, runs, data, out: resolve(o.out ?? (o.dataset === 'fashion-mnist' ? 'experiments' : `experiments-${o.dataset}`)), quick: o.quick ?? false })) console.log(`wrote ${f}`);
    });
}

function experimentNames(names: readonly string[]): ExperimentName[] {
  if (names.includes('all')) return [...EXPERIMENT_NAMES];
  const bad = names.filter((n) => !(EXPERIMENT_NAMES as readonly string[]).includes(n));
  if (bad.length) throw new Error(`unknown experiment ${bad.map((b) => `'${b}'`).join(', ')} (expected ${EXPERIMENT_NAMES.join(', ')} or all)`);
  return [...new Set(names)] as ExperimentName[];
}
