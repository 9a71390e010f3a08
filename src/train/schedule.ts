/**
 * Learning-rate schedules: pure functions of (epoch, step within epoch, steps per epoch).
 *
 *  - cosine:      PyTorch CosineAnnealingLR (T_max = epochs), per epoch or per step (fractional epoch)
 *  - exponential: staircase decay base·gamma^floor(epoch/every) (the paper: 0.98 per epoch; TF-slim's
 *                 train_image_classifier decays every num_epochs_per_decay = 2.5 epochs, counted in steps)
 *  - step:        PyTorch MultiStepLR
 *  - constant
 *  - warmup(s):   linear warm-up multiplying any schedule over its first epochs
 */
import type { Schedule } from './types.js';
import { fail } from '../util/errors.js';


function num(where: string, key: string, v: unknown, min = -Infinity, max = Infinity, minOpen = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (minOpen && v === min)) {
    fail(where, `${key} must be a finite number ${minOpen ? '>' : '≥'} ${min}${max < Infinity ? ` and ≤ ${max}` : ''}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Fractional epoch of a step: epoch + stepInEpoch / stepsPerEpoch. */
function fractional(epoch: number, stepInEpoch: number, stepsPerEpoch: number): number {
  return stepsPerEpoch > 0 ? epoch + stepInEpoch / stepsPerEpoch : epoch;
}

export interface CosineOptions {
  base: number;
  /** T_max, in epochs. */
  epochs: number;
  /** Anneal per step (fractional epoch) instead of once per epoch. */
  perStep?: boolean;
  /** eta_min (default 0). */
  min?: number;
}

/**
 * lr = min + (base − min)·(1 + cos(π·t/T))/2, t = epoch (PyTorch stepping the scheduler once per epoch) or the
 * fractional epoch (perStep). Past T the lr stays at min (PyTorch's formula would climb back up; training
 * beyond T_max is not a cosine schedule anyone wants).
 */
export function cosine(opts: CosineOptions): Schedule {
  const where = 'cosine schedule';
  const base = num(where, 'base', opts.base, 0);
  const T = num(where, 'epochs', opts.epochs, 0, Infinity, true);
  const min = num(where, 'min', opts.min ?? 0, 0);
  const perStep = opts.perStep ?? false;
  return (epoch, stepInEpoch, stepsPerEpoch) => {
    const t = perStep ? fractional(epoch, stepInEpoch, stepsPerEpoch) : epoch;
    if (t >= T) return min;
    return min + ((base - min) * (1 + Math.cos((Math.PI * t) / T))) / 2;
  };
}

export interface ExponentialOptions {
  base: number;
  /** Decay factor per `every` epochs (the paper: 0.98). */
  gamma: number;
  /** Epochs between decays (default 1; TF-slim: 2.5). Fractional values decay mid-epoch, counted in steps. */
  every?: number;
}

/** Staircase exponential decay: base·gamma^floor(t/every), t the fractional epoch (TF's global_step/decay_steps). */
export function exponential(opts: ExponentialOptions): Schedule {
  const where = 'exponential schedule';
  const base = num(where, 'base', opts.base, 0);
  const gamma = num(where, 'gamma', opts.gamma, 0, 1, true);
  const every = num(where, 'every', opts.every ?? 1, 0, Infinity, true);
  return (epoch, stepInEpoch, stepsPerEpoch) => {
    // In steps, like TF's floor(global_step / decay_steps); the tiny slack absorbs float error at boundaries.
    const spe = stepsPerEpoch > 0 ? stepsPerEpoch : 1;
    const steps = epoch * spe + (stepsPerEpoch > 0 ? stepInEpoch : 0);
    const k = Math.floor(steps / (every * spe) + 1e-9);
    return base * Math.pow(gamma, k);
  };
}

export interface StepOptions {
  base: number;
  /** Epochs at which the lr is multiplied by gamma (PyTorch MultiStepLR milestones). */
  milestones: readonly number[];
  gamma?: number;
}

/** PyTorch MultiStepLR stepped per epoch: base·gamma^(number of milestones ≤ epoch). */
export function step(opts: StepOptions): Schedule {
  const where = 'step schedule';
  const base = num(where, 'base', opts.base, 0);
  const gamma = num(where, 'gamma', opts.gamma ?? 0.1, 0, Infinity, true);
  if (!Array.isArray(opts.milestones)) fail(where, `milestones must be an array of epochs, got ${JSON.stringify(opts.milestones)}`);
  const ms = opts.milestones.map((m, i) => num(where, `milestones[${i}]`, m, 0)).sort((a, b) => a - b);
  return (epoch) => {
    let k = 0;
    for (const m of ms) if (epoch >= m) k++;
    return base * Math.pow(gamma, k);
  };
}

export function constant(base: number): Schedule {
  const lr = num('constant schedule', 'base', base, 0);
  return () => lr;
}

export interface WarmupOptions {
  /** Warm-up length in epochs (fractional allowed; progress is counted per step). */
  epochs: number;
  /** lr factor at the very first step (default 0.1), rising linearly to 1 at `epochs`. */
  startFactor?: number;
}

/** Linear warm-up: schedule(t)·(f + (1 − f)·t/epochs) for t < epochs, t the fractional epoch; then schedule(t). */
export function warmup(schedule: Schedule, opts: WarmupOptions): Schedule {
  const where = 'warm-up';
  const W = num(where, 'epochs', opts.epochs, 0);
  const f = num(where, 'startFactor', opts.startFactor ?? 0.1, 0, 1);
  if (W === 0) return schedule;
  return (epoch, stepInEpoch, stepsPerEpoch) => {
    const lr = schedule(epoch, stepInEpoch, stepsPerEpoch);
    const t = fractional(epoch, stepInEpoch, stepsPerEpoch);
    return t >= W ? lr : lr * (f + ((1 - f) * t) / W);
  };
}

interface WarmupSpec {
  /** Linear warm-up over this many epochs (0/absent: none). */
  warmupEpochs?: number;
  /** Warm-up start factor (default 0.1). */
  warmupStartFactor?: number;
}

/** A JSON-able schedule description (CLI flags, checkpoint metadata). */
export type ScheduleSpec =
  | ({ kind: 'cosine' } & CosineOptions & WarmupSpec)
  | ({ kind: 'exponential' } & ExponentialOptions & WarmupSpec)
  | ({ kind: 'step' } & StepOptions & WarmupSpec)
  | ({ kind: 'constant'; base: number } & WarmupSpec);

const SPEC_KEYS: Record<ScheduleSpec['kind'], readonly string[]> = {
  cosine: ['base', 'epochs', 'perStep', 'min'],
  exponential: ['base', 'gamma', 'every'],
  step: ['base', 'milestones', 'gamma'],
  constant: ['base'],
};

/** Builds a schedule from a spec, rejecting unknown kinds and keys with a message naming `source`. */
export function makeSchedule(spec: ScheduleSpec, source = 'schedule'): Schedule {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) fail(source, `schedule spec must be an object, got ${JSON.stringify(spec)}`);
  const kind = (spec as { kind?: unknown }).kind;
  if (typeof kind !== 'string' || !Object.prototype.hasOwnProperty.call(SPEC_KEYS, kind)) {
    fail(source, `unknown schedule kind ${JSON.stringify(kind)} (expected ${Object.keys(SPEC_KEYS).join(', ')})`);
  }
  const allowed = new Set(['kind', 'warmupEpochs', 'warmupStartFactor', ...SPEC_KEYS[kind as ScheduleSpec['kind']]]);
  const bad = Object.keys(spec).filter((k) => !allowed.has(k));
  if (bad.length) fail(source, `${kind} schedule: unknown key${bad.length > 1 ? 's' : ''} ${bad.join(', ')} (allowed: ${[...allowed].join(', ')})`);
  if (spec.kind === 'cosine' && spec.perStep !== undefined && typeof spec.perStep !== 'boolean') {
    fail(source, `cosine schedule: perStep must be a boolean, got ${JSON.stringify(spec.perStep)}`);
  }
  let s: Schedule;
  try {
    switch (spec.kind) {
      case 'cosine':
        s = cosine(spec);
        break;
      case 'exponential':
        s = exponential(spec);
        break;
      case 'step':
        s = step(spec);
        break;
      case 'constant':
        s = constant(spec.base);
        break;
    }
    if (spec.warmupEpochs !== undefined && spec.warmupEpochs !== 0) {
      s = warmup(s, { epochs: spec.warmupEpochs, startFactor: spec.warmupStartFactor });
    } else if (spec.warmupStartFactor !== undefined) {
      num('warm-up', 'startFactor', spec.warmupStartFactor, 0, 1);
    }
  } catch (e) {
    fail(source, (e as Error).message, { cause: e });
  }
  return s;
}
