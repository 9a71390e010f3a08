/**
 * The `mnv2` commands an experiment needs, as jobs with their dependencies and the file each leaves behind.
 * Models shared by several experiments (V2 is in four) are trained once: a job's id names its model and step.
 */
import { join } from 'node:path';
import { EXPERIMENTS, VARIANTS, type Budget, type ExperimentName, type Measure, type VariantId } from './plan.js';

export interface Job {
  /** `<variant>-s<seed>/<step>`, or `<variant>/<step>` for seed-free steps. */
  id: string;
  /** Arguments of `mnv2` (threads excluded: the runner adds `--threads`). */
  argv: string[];
  /** Whether the command takes `--threads`. */
  threads: boolean;
  /** The file that exists once the job has succeeded. */
  output: string;
  /** The job's stdout goes to `output` (JSON printing commands). */
  stdoutToOutput?: boolean;
  after: string[];
  /** A timing: runs alone, once nothing else is left to run. */
  exclusive?: boolean;
}

/** The dataset the models train and are scored on: Fashion-MNIST (the default) or CIFAR-10, at its usual place or `dir`. */
export interface DataChoice {
  name: 'fashion-mnist' | 'cifar10';
  dir?: string;
}
export const FASHION_MNIST: DataChoice = { name: 'fashion-mnist' };

/** `flag NAME [--data DIR]`; for training on Fashion-MNIST nothing, the recipe's own dataset. */
function dataArgs(d: DataChoice, flag: '--dataset' | '--calib-dataset', train = false): string[] {
  if (train && d.name === 'fashion-mnist' && d.dir === undefined) return [];
  return [flag, d.name, ...(d.dir === undefined ? [] : ['--data', d.dir])];
}

/** Where a variant's runs and measurements live under the runs folder. */
export const runDir = (runs: string, v: VariantId, seed: number): string => join(runs, `${v}-s${seed}`);
export const qatDir = (runs: string, v: VariantId, seed: number): string => join(runs, `${v}-s${seed}-qat`);

/** The files a measurement leaves (read by the report). */
export const files = {
  fp32: (runs: string, v: VariantId, s: number) => join(runDir(runs, v, s), 'eval-fp32.json'),
  fp16: (runs: string, v: VariantId, s: number) => join(runDir(runs, v, s), 'eval-fp16.json'),
  ptq: (runs: string, v: VariantId, s: number) => join(runDir(runs, v, s), 'eval-int8.json'),
  qat: (runs: string, v: VariantId, s: number) => join(qatDir(runs, v, s), 'eval-int8.json'),
  dead: (runs: string, v: VariantId, s: number) => join(runDir(runs, v, s), 'diagnose.json'),
  deadQat: (runs: string, v: VariantId, s: number) => join(qatDir(runs, v, s), 'diagnose.json'),
  cost: (runs: string, v: VariantId) => join(runs, `${v}-cost.json`),
  infer: (runs: string, v: VariantId, s: number) => join(runDir(runs, v, s), 'bench-infer.json'),
  trainSpeed: (runs: string, v: VariantId, s: number) => join(runDir(runs, v, s), 'bench-train.json'),
};

/** Every job the experiments `names` need, each once, in an order that respects `after`. */
export function planJobs(names: readonly ExperimentName[], budget: Budget, runs: string, data: DataChoice = FASHION_MNIST): Job[] {
  const jobs = new Map<string, Job>();
  const add = (j: Job): string => {
    if (!jobs.has(j.id)) jobs.set(j.id, j);
    return j.id;
  };
  for (const name of names) {
    const exp = EXPERIMENTS[name];
    for (const v of exp.variants) {
      if (exp.measures.includes('cost')) add(costJob(v, budget, runs));
      for (const seed of budget.seeds) for (const m of exp.measures) measureJobs(m, v, seed, budget, runs, data, exp.measures, add);
    }
  }
  return [...jobs.values()];
}

const model = (runs: string, v: VariantId, s: number): string => join(runDir(runs, v, s), 'model.safetensors');
const qatModel = (runs: string, v: VariantId, s: number): string => join(qatDir(runs, v, s), 'model.safetensors');

function trainJob(v: VariantId, seed: number, b: Budget, runs: string, d: DataChoice): Job {
  const variant = VARIANTS[v];
  return {
    id: `${v}-s${seed}/train`,
    argv: ['train', ...dataArgs(d, '--dataset', true), '--arch', variant.arch, ...variant.flags, '--alpha', String(b.alpha), '--train-limit', String(b.trainLimit),
      '--epochs', String(b.epochs), '--eval-limit', String(b.evalLimit), '--seed', String(seed),
      '--out', runDir(runs, v, seed), '--force', '--no-onnx', '--no-progress'],
    threads: true, output: model(runs, v, seed), after: [],
  };
}

/** A QAT fine-tune of the trained model: fake-quantized from the first step, BN frozen as `--qat-freeze-bn`'s default says. */
function qatJob(v: VariantId, seed: number, b: Budget, runs: string, d: DataChoice): Job {
  return {
    id: `${v}-s${seed}/qat`,
    argv: ['train', ...dataArgs(d, '--dataset', true), '--weights', model(runs, v, seed), '--qat', '--epochs', String(b.qatEpochs), '--lr', String(b.qatLr),
      '--train-limit', String(b.qatLimit), '--eval-limit', String(b.evalLimit), '--seed', String(seed),
      '--out', qatDir(runs, v, seed), '--force', '--no-progress'],
    threads: true, output: join(qatDir(runs, v, seed), 'model.int8.onnx'), after: [`${v}-s${seed}/train`],
  };
}

const testLimit = (b: Budget): string[] => ['--limit', String(b.testLimit)];

function measureJobs(m: Measure, v: VariantId, seed: number, b: Budget, runs: string, d: DataChoice, all: readonly Measure[], add: (j: Job) => string): void {
  const trained = add(trainJob(v, seed, b, runs, d));
  const id = (step: string): string => `${v}-s${seed}/${step}`;
  const json = (step: string, argv: string[], output: string, after: string[], threads = true, exclusive = false): string =>
    add({ id: id(step), argv, threads, output, stdoutToOutput: true, after, exclusive });
  const dir = runDir(runs, v, seed);
  switch (m) {
    case 'fp32':
      json('fp32', ['eval', '--weights', model(runs, v, seed), ...dataArgs(d, '--dataset'), ...testLimit(b), '--engine', 'native', '--json', '--no-progress'], files.fp32(runs, v, seed), [trained]);
      return;
    case 'fp16': {
      const onnx = join(dir, 'model.fp16.onnx');
      const exported = add({ id: id('export-fp16'), argv: ['export', 'onnx', '--weights', model(runs, v, seed), '--fp16', '--out', onnx], threads: false, output: onnx, after: [trained] });
      json('fp16', onnxEval(onnx, b, d), files.fp16(runs, v, seed), [exported]);
      return;
    }
    case 'ptq': {
      const int8 = join(dir, 'model.int8.onnx');
      const quantized = add({ id: id('quantize'), argv: ['quantize', model(runs, v, seed), '--out', int8, '--calib-images', String(b.calibImages), ...dataArgs(d, '--calib-dataset', true)], threads: true, output: int8, after: [trained] });
      json('ptq', onnxEval(int8, b, d), files.ptq(runs, v, seed), [quantized]);
      return;
    }
    case 'qat': {
      const q = add(qatJob(v, seed, b, runs, d));
      json('qat-eval', onnxEval(join(qatDir(runs, v, seed), 'model.int8.onnx'), b, d), files.qat(runs, v, seed), [q]);
      if (all.includes('dead')) json('qat-diagnose', diagnoseArgv(qatModel(runs, v, seed), b, d), files.deadQat(runs, v, seed), [q], false);
      return;
    }
    case 'dead':
      json('diagnose', diagnoseArgv(model(runs, v, seed), b, d), files.dead(runs, v, seed), [trained], false);
      return;
    case 'speed': {
      const bench = (workload: string, output: string): string =>
        json(`bench-${workload}`, ['bench', '--workload', workload, '--weights', model(runs, v, seed), '--batch', String(b.benchBatch), '--steps', String(b.benchSteps), '--json'], output, [trained], true, true);
      bench('infer-seed', files.infer(runs, v, seed));
      bench('train-seed', files.trainSpeed(runs, v, seed));
      return;
    }
    case 'cost': // seed-free: planJobs adds it once per model
      return;
  }
}

/** Top-1 of an ONNX file (float16 or int8) on ONNX Runtime, on the same test images as the float32 model. */
function onnxEval(file: string, b: Budget, d: DataChoice): string[] {
  return ['eval', '--onnx', file, ...dataArgs(d, '--dataset'), ...testLimit(b), '--json', '--no-progress'];
}

function diagnoseArgv(weights: string, b: Budget, d: DataChoice): string[] {
  return ['diagnose', '--weights', weights, ...dataArgs(d, '--dataset'), '--limit', String(b.diagnoseLimit), '--json', '--png', weights.replace(/\.safetensors$/, '.dead.png')];
}

function costJob(v: VariantId, b: Budget, runs: string): Job {
  const variant = VARIANTS[v];
  return {
    id: `${v}/cost`, argv: ['summary', '--arch', variant.arch, ...variant.flags, '--alpha', String(b.alpha), '--classes', '10', '--json'],
    threads: false, output: files.cost(runs, v), stdoutToOutput: true, after: [],
  };
}
