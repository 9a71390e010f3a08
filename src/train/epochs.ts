/**
 * The one epoch loop of every run, whatever the task and whichever parameters are trained: per batch of a
 * batch source, the trainable's step (forward, the task's loss, backward into its parameter set), the optimizer
 * update, the divergence check and EMA; per epoch an evaluation, a metrics line and the checkpoints (best by the
 * task's best key, then last). Stops cleanly after any step when asked, with a checkpoint to resume from.
 */
import type { Task, TaskLoss } from '../task/task.js';
import type { StateDict } from '../model/weights.js';
import type { Rng } from '../util/rng.js';
import type { StepOptions } from '../engine/native/model.js';
import { assertConverging } from './divergence.js';
import type { EMA } from './ema.js';
import type { Optimizer, ParamRef, Schedule } from './types.js';
import type { TrainPosition } from './checkpoint.js';
import type { EpochMetrics } from './plot.js';
import type { RunFolder } from './artifacts.js';
import { formatDuration, progressBar } from './progress.js';

/** A batch of model inputs with the task's target for them. */
export interface TaskBatch<T> {
  /** Batch number within the epoch. */
  index: number;
  size: number;
  input: Float32Array;
  target: T;
}

/** Batches in an order that depends only on (seed, epoch, batch), so a run resumes exactly mid-epoch. */
export interface BatchSource<T> {
  readonly batchesPerEpoch: number;
  epoch(epoch: number, opts: { startBatch: number }): AsyncIterable<TaskBatch<T>>;
  close(): Promise<void>;
}

/**
 * The parameter set a run trains: `step` leaves the gradients of `params` (only those; the rest is frozen) and
 * `weightsChanged` follows each in-place update of them. A NativeModel with all its parameters, or the
 * classifier alone on the features of a frozen backbone (head.ts).
 */
export interface Trainable {
  readonly params: readonly ParamRef[];
  /** The weights the run saves (the trained parameters live in them). */
  readonly weights: StateDict;
  step<T>(input: Float32Array, batch: number, task: Task<T>, target: T, opts: StepOptions): TaskLoss;
  weightsChanged(): void;
}

/** An evaluation as the loop records it; a task's evaluator may carry more (the full result for the report). */
export interface Evaluation {
  /** The validation columns of the metrics line (the task's best key among them), e.g. val_loss, val_top1. */
  metrics: Record<string, number>;
  /** The validation part of the epoch's log line. */
  summary: string;
  /** What the best and final model files record of it. */
  metadata: Record<string, string>;
}

export interface EpochLoopOptions<T, E extends Evaluation> {
  task: Task<T>;
  source: BatchSource<T>;
  trainable: Trainable;
  optimizer: Optimizer;
  schedule: Schedule;
  ema: EMA | null;
  rng: Rng;
  epochs: number;
  bnMomentum: number;
  /** Evaluates the weights to evaluate (the EMA's when EMA is on). */
  evaluate: () => Promise<E>;
  /** The position, advanced in place (it is what the checkpoints record). */
  pos: TrainPosition;
  folder: RunFolder;
  progress: boolean;
  log: (m: string) => void;
  /** Also save last.safetensors every N optimizer steps (0: at epoch ends only). */
  saveEvery?: number;
  /** Stop after this many optimizer steps of this session. */
  stopAfterSteps?: number;
  /** Polled after every step: stop (with a checkpoint) when true. */
  stopRequested: () => boolean;
}

/** Yield to the event loop (queued batches resolve as microtasks, which would starve timers and signals). */
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Trains from `pos` to `epochs`; `final` is the last epoch's evaluation of this session. */
export async function trainEpochs<T, E extends Evaluation>(o: EpochLoopOptions<T, E>): Promise<{ stopped: boolean; final: E | null }> {
  const { pos, source, trainable, optimizer, ema, folder } = o;
  const stepsPerEpoch = source.batchesPerEpoch;
  const sessionStart = performance.now();
  const elapsedAtStart = pos.elapsed;
  const elapsed = (): number => elapsedAtStart + (performance.now() - sessionStart) / 1000;
  const saveLast = (): void => folder.saveLast(trainable.weights, { optim: optimizer.stateDict(), ema: ema?.stateDict(), rng: o.rng.state(), position: pos });
  let final: E | null = null;
  let sessionSteps = 0;
  let stopped = false;
  const countsCorrect = o.task.countsCorrect === true;
  while (pos.epoch < o.epochs && !stopped) {
    const epoch = pos.epoch;
    const epochStart = performance.now();
    let epochImages = 0;
    // {acc} carries its own label: a task without top-1 hits (detection) shows no accuracy rather than 0 %.
    const pb = progressBar(o.progress, `epoch ${epoch + 1}/${o.epochs} |{bar}| {value}/{total} | loss {loss}{acc} | {speed} img/s | lr {lr} | ETA {eta_formatted}`);
    pb?.start(stepsPerEpoch, pos.step, { loss: '-', acc: '', speed: '-', lr: '-' });
    try {
      for await (const b of source.epoch(epoch, { startBatch: pos.step })) {
        const lr = o.schedule(epoch, b.index, stepsPerEpoch);
        const r = trainable.step(b.input, b.size, o.task, b.target, { bnMomentum: o.bnMomentum, rng: o.rng });
        optimizer.step(trainable.params, lr);
        assertConverging(r.loss, trainable.params, epoch, b.index);
        trainable.weightsChanged();
        ema?.update(trainable.weights);
        pos.epochLoss += r.loss * b.size;
        pos.epochCorrect += r.counts['correct'] ?? 0;
        pos.epochSeen += b.size;
        pos.globalStep++;
        pos.step++;
        epochImages += b.size;
        sessionSteps++;
        pb?.update(pos.step, {
          loss: (pos.epochLoss / pos.epochSeen).toFixed(4),
          acc: countsCorrect ? ` | acc ${((100 * pos.epochCorrect) / pos.epochSeen).toFixed(1)}%` : '',
          speed: (epochImages / ((performance.now() - epochStart) / 1000)).toFixed(1),
          lr: lr.toPrecision(3),
        });
        stopped = o.stopRequested() || (o.stopAfterSteps !== undefined && sessionSteps >= o.stopAfterSteps);
        if (stopped || (o.saveEvery && pos.globalStep % o.saveEvery === 0)) {
          pos.elapsed = elapsed();
          saveLast();
        }
        if (stopped) break;
        await tick(); // let timers (progress output) and signal handlers run
      }
    } finally {
      pb?.stop();
    }
    if (stopped && pos.step < stepsPerEpoch) break;
    // ---- end of epoch: evaluate, log, checkpoint ----
    const trainTime = (performance.now() - epochStart) / 1000;
    const ev = await o.evaluate();
    final = ev;
    pos.elapsed = elapsed();
    const row: EpochMetrics = {
      epoch: epoch + 1,
      lr: o.schedule(epoch, Math.max(0, stepsPerEpoch - 1), stepsPerEpoch),
      train_loss: pos.epochLoss / Math.max(1, pos.epochSeen),
      // A task without top-1 hits (detection) has no training accuracy: no key rather than a meaningless 0.
      ...(countsCorrect ? { train_acc: pos.epochCorrect / Math.max(1, pos.epochSeen) } : {}),
      ...ev.metrics,
      img_per_s: epochImages / Math.max(1e-9, trainTime),
      time: (performance.now() - epochStart) / 1000,
      elapsed: pos.elapsed,
      steps: stepsPerEpoch,
      images: pos.epochSeen,
    };
    folder.appendMetrics(row);
    const acc = row.train_acc !== undefined ? ` acc ${(100 * row.train_acc).toFixed(2)}%` : '';
    o.log(`epoch ${epoch + 1}/${o.epochs}: train loss ${row.train_loss.toFixed(4)}${acc} | ` +
      `${ev.summary} | ${row.img_per_s.toFixed(1)} img/s, ${formatDuration(row.time)}`);
    pos.epoch++;
    pos.step = 0;
    pos.epochLoss = 0;
    pos.epochCorrect = 0;
    pos.epochSeen = 0;
    const score = ev.metrics[o.task.bestKey];
    if (score === undefined) throw new Error(`the ${o.task.name} evaluation has no ${o.task.bestKey} (its best key)`);
    if (score > pos.bestTop1) {
      pos.bestTop1 = score;
      pos.bestEpoch = epoch + 1;
      folder.saveModel('best', ema ? ema.weights() : trainable.weights, epoch + 1, ev.metadata);
    }
    saveLast();
  }
  return { stopped, final };
}
