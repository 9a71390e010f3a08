/**
 * `mnv2 bench`: one workload of the project alone, printed as one JSON line (bench/run.ts compares it
 * with PyTorch and ONNX Runtime side by side). Inputs are random; weights are random init unless --weights gives
 * trained ones (bench/run.ts does, as for its PyTorch peer: random-init BN statistics are unlike a trained model's).
 */
import { Command, Option } from 'commander';
import { mobilenetV2 } from '../model/mobilenetv2.js';
import { initWeights, type StateDict } from '../model/weights.js';
import { loadModelFile } from '../io/weights.js';
import { familyOf } from '../model/registry.js';
import type { NativeModel } from '../engine/native/model.js';
import { createClassifier, type EngineName } from '../engine/classifier.js';
import { SGD, paramRefs } from '../train/optim.js';
import { Rng } from '../util/rng.js';
import { median, timeStats } from '../util/stats.js';
import { BATCH, int, THREADS } from './args.js';

export type Workload = 'train-seed' | 'train-seed-sgd' | 'train-224' | 'infer-seed' | 'infer-224' | 'loader';

export interface BenchResult {
  /** Kernel counts by oneDNN implementation (native engine). */
  implementations?: Record<string, number>;
  /** Training: median ms of the engine's step (forward + loss + backward) and of the optimizer update. */
  phase_ms?: { train_step: number; optimizer: number };
  workload: Workload;
  engine: EngineName;
  /** The weights file, or 'random init'. */
  weights: string;
  /** The model timed (the workload's, or the weights file's own). */
  model: string;
  batch: number;
  steps: number;
  img_per_s: number;
  ms_per_step: number;
  /** Step-time statistics (ms): median, min, max, p10, p90, and spread = (p90 − p10) / median. */
  median_ms: number;
  min_ms: number;
  max_ms: number;
  p10_ms: number;
  p90_ms: number;
  spread: number;
  peak_rss_mb: number;
}

/**
 * The training data pipeline alone: Fashion-MNIST train, seed augmentation, worker-thread prefetch, as
 * `mnv2 train` feeds the engine. A "step" is one batch; compare its img/s with train-seed's.
 */
async function loaderStep(batch: number): Promise<() => Promise<void>> {
  const [{ BatchLoader }, { loadFashionMnist }] = await Promise.all([import('../data/loader.js'), import('../data/idx.js')]);
  const loader = new BatchLoader({ dataset: loadFashionMnist(undefined, 'train'), batchSize: batch, augment: 'seed', seed: 0 });
  let epoch = 0;
  let it = loader.epoch(epoch)[Symbol.asyncIterator]();
  return async () => {
    let r = await it.next();
    if (r.done) {
      it = loader.epoch(++epoch)[Symbol.asyncIterator]();
      r = await it.next();
    }
  };
}

/** Warm-up then `steps` timed steps; the median step time gives img/s. */
export async function bench(workload: Workload, engine: EngineName, batch: number, steps: number, warmup: number, threads?: number, weightsFile?: string): Promise<BenchResult> {
  // A weights file brings its own model (any family); the engines check names and shapes against it.
  const file = weightsFile ? loadModelFile(weightsFile) : undefined;
  const graph = file?.graph ?? (workload.endsWith('-224') ? mobilenetV2('imagenet') : mobilenetV2('seed-cifar'));
  const weights: StateDict = file?.weights ?? initWeights(graph, 0);
  const rng = new Rng(1);
  const x = Float32Array.from({ length: batch * 3 * graph.config.resolution ** 2 }, () => rng.normal());
  let step: () => Promise<void>;
  let native: NativeModel | undefined;
  // Training: the engine's step (forward + loss + backward, with its TypeScript-side copies) and the optimizer, apart.
  const phases: { train_step: number[]; optimizer: number[] } = { train_step: [], optimizer: [] };
  if (workload === 'loader') {
    step = await loaderStep(batch);
  } else if (workload.startsWith('train')) {
    if (engine !== 'native') throw new Error(`${workload} runs on the native engine only (ONNX Runtime here is inference-only)`);
    const { NativeModel } = await import('../engine/native/model.js');
    const model = new NativeModel(graph, weights, { threads });
    native = model;
    const labels = Array.from({ length: batch }, () => rng.int(graph.config.numClasses));
    const sgd = workload === 'train-seed-sgd' ? new SGD({ momentum: 0.9, weightDecay: 5e-4 }) : null;
    const params = paramRefs(model);
    step = async () => {
      const t0 = performance.now();
      model.trainStep(x, labels, batch, { rng }); // rng: the dropout masks of models that have dropout
      const t1 = performance.now();
      if (sgd) {
        sgd.step(params, 0.01);
        model.weightsChanged();
      }
      phases.train_step.push(t1 - t0);
      phases.optimizer.push(performance.now() - t1);
    };
  } else {
    const clf = await createClassifier(graph, weights, engine, threads);
    step = async () => {
      await clf.run(x, batch);
    };
  }
  for (let i = 0; i < warmup; i++) await step();
  phases.train_step.length = phases.optimizer.length = 0;
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    await step();
    times.push(performance.now() - t0);
  }
  const stats = timeStats(times);
  const ms = stats.median_ms;
  const implementations: Record<string, number> = {};
  for (const s of native?.implementations() ?? []) {
    const impl = s.slice(s.lastIndexOf(': ') + 2);
    implementations[impl] = (implementations[impl] ?? 0) + 1;
  }
  return {
    ...(native ? { implementations, phase_ms: { train_step: median(phases.train_step), optimizer: median(phases.optimizer) } } : {}),
    workload, engine, weights: weightsFile ?? 'random init', model: familyOf(graph.config).describe(graph.config), batch, steps,
    img_per_s: (batch * 1000) / ms,
    ms_per_step: ms,
    ...stats,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
  };
}

export function registerBenchCommand(program: Command): void {
  program
    .command('bench')
    .description('time one workload of the project (warm-up, then the median of --steps)')
    .addOption(new Option('--workload <name>', 'what to time').choices(['train-seed', 'train-seed-sgd', 'train-224', 'infer-seed', 'infer-224', 'loader']).makeOptionMandatory())
    .addOption(new Option('--engine <engine>', 'engine').choices(['native', 'ort']).default('native'))
    .option('--batch <n>', 'batch size (default: 128; 1 for infer-224, 32 for train-224)')
    .option('--steps <n>', 'timed steps', '5')
    .option('--warmup <n>', 'untimed steps first', '2')
    .option('--threads <n>', 'threads (default: all cores)')
    .option('--weights <file>', "a model file: time its own model (any family) with its weights (default: the workload's model, random init, seed 0)")
    .option('--json', 'print one JSON line')
    .action(async (o: { workload: Workload; engine: EngineName; batch?: string; steps: string; warmup: string; threads?: string; weights?: string; json?: boolean }) => {
      const batch = int(o.batch, '--batch', BATCH) ?? (o.workload === 'infer-224' ? 1 : o.workload === 'train-224' ? 32 : 128);
      const steps = int(o.steps, '--steps', { min: 1, max: 100_000 })!;
      const warmup = int(o.warmup, '--warmup', { min: 0, max: 100_000 })!;
      const r = await bench(o.workload, o.engine, batch, steps, warmup, int(o.threads, '--threads', THREADS), o.weights);
      if (o.json) console.log(JSON.stringify(r));
      else {
        console.log(`${r.workload} on ${r.engine}, batch ${r.batch}: ${r.img_per_s.toFixed(1)} img/s, ${r.ms_per_step.toFixed(1)} ms/step (median of ${r.steps}), peak RSS ${r.peak_rss_mb.toFixed(0)} MB`);
        // Which oneDNN kernels ran ("ref:" would be a slow reference fallback).
        for (const [impl, n] of Object.entries(r.implementations ?? {})) console.log(`  ${String(n).padStart(4)}  ${impl}`);
      }
    });
}
