/**
 * Training checkpoints: one safetensors file holding the model weights (PyTorch names), the optimizer state
 * (`optim.<param>.<slot>`), the EMA shadows (`ema.<name>`), the training RNG (`train.rng`), and as metadata the
 * model's metadata (src/io/metadata.ts, so the file alone rebuilds the model), the recipe, the position (epoch, step) and
 * the running statistics of a partly done epoch (`mnv2.train`, JSON: exact doubles).
 *
 * Writes are atomic (temp file, fsync, rename, directory fsync — see writeSafetensors): a crash or kill -9 during
 * a save leaves the previous checkpoint intact.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { loadModelFile, saveWeights } from '../io/weights.js';
import type { Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import type { ModelInfo } from '../io/metadata.js';
import type { TrainRecipe } from './presets.js';
import { fail } from '../util/errors.js';

export const TRAIN_KEY = 'mnv2.train';
export const RNG_KEY = 'train.rng';

/** Where a run stands; stored as JSON metadata. */
export interface TrainPosition {
  /** Epoch to run next (0-based) — or the current epoch when `step` > 0. */
  epoch: number;
  /** Next batch within `epoch` (0 at epoch boundaries). */
  step: number;
  /** Optimizer steps done in all. */
  globalStep: number;
  /** Partial sums of the current epoch (for an exact metrics line after a mid-epoch resume). */
  epochLoss: number;
  epochCorrect: number;
  epochSeen: number;
  /** Seconds of training so far (all sessions). */
  elapsed: number;
  /** Best value so far of the task's best key (classification: val_top1; the name predates other tasks). */
  bestTop1: number;
  bestEpoch: number;
  recipe: TrainRecipe;
  /** Head-only fine-tuning (frozen backbone). */
  headOnly?: boolean;
  /** Engine threads of the session that wrote it: results depend on them (oneDNN splits reductions by thread). */
  threads?: number;
}

export interface Checkpoint {
  graph: Graph;
  weights: StateDict;
  optim: Map<string, Float32Array>;
  ema: Map<string, Float32Array>;
  rng: Uint32Array | null;
  position: TrainPosition | null;
  metadata: Record<string, string>;
  info: ModelInfo;
}

/** The 4-word RNG state as 8 float32 values (16-bit halves: exact in float32). */
export function encodeRng(state: Uint32Array): Float32Array {
  const out = new Float32Array(state.length * 2);
  for (let i = 0; i < state.length; i++) {
    out[2 * i] = state[i]! & 0xffff;
    out[2 * i + 1] = state[i]! >>> 16;
  }
  return out;
}

export function decodeRng(a: Float32Array, source: string): Uint32Array {
  if (a.length !== 8 || !a.every((v) => Number.isInteger(v) && v >= 0 && v < 65536)) {
    fail(source, `${RNG_KEY} must hold 8 integers in [0, 65536), got [${[...a].slice(0, 8).join(', ')}]`);
  }
  const s = new Uint32Array(4);
  for (let i = 0; i < 4; i++) s[i] = (a[2 * i]! + a[2 * i + 1]! * 65536) >>> 0;
  return s;
}

export interface SaveCheckpointOptions {
  optim?: ReadonlyMap<string, Float32Array>;
  ema?: ReadonlyMap<string, Float32Array>;
  rng?: Uint32Array;
  position?: TrainPosition;
  metadata?: Record<string, string>;
}

/** Writes a checkpoint atomically. */
export function saveCheckpoint(path: string, graph: Graph, weights: StateDict, opts: SaveCheckpointOptions = {}): void {
  const extra = new Map<string, Float32Array>();
  for (const [k, v] of opts.optim ?? []) extra.set(`optim.${k}`, v);
  for (const [k, v] of opts.ema ?? []) extra.set(`ema.${k}`, v);
  if (opts.rng) extra.set(RNG_KEY, encodeRng(opts.rng));
  const metadata: Record<string, string> = { ...opts.metadata };
  if (opts.position) metadata[TRAIN_KEY] = JSON.stringify(opts.position);
  saveWeights(path, graph, weights, extra, metadata);
}

/** `path` may be a checkpoint file or a run folder (then its last.safetensors). */
export function resolveCheckpointPath(path: string): string {
  if (!existsSync(path)) fail(path, `no such checkpoint file or run folder`);
  if (statSync(path).isDirectory()) {
    const last = join(path, 'last.safetensors');
    if (!existsSync(last)) fail(path, `run folder has no last.safetensors to resume from`);
    return last;
  }
  return path;
}

export function loadCheckpoint(path: string): Checkpoint {
  const file = resolveCheckpointPath(path);
  const l = loadModelFile(file);
  const optim = new Map<string, Float32Array>();
  const ema = new Map<string, Float32Array>();
  let rng: Uint32Array | null = null;
  for (const [k, v] of l.extra) {
    if (k.startsWith('optim.')) optim.set(k.slice(6), v);
    else if (k.startsWith('ema.')) ema.set(k.slice(4), v);
    else if (k === RNG_KEY) rng = decodeRng(v, file);
  }
  let position: TrainPosition | null = null;
  const raw = l.metadata[TRAIN_KEY];
  if (raw !== undefined) {
    try {
      position = JSON.parse(raw) as TrainPosition;
    } catch (e) {
      fail(file, `${TRAIN_KEY} metadata is not valid JSON (${(e as Error).message})`);
    }
    for (const k of ['epoch', 'step', 'globalStep'] as const) {
      if (!Number.isInteger(position[k]) || position[k] < 0) fail(file, `${TRAIN_KEY}.${k} must be an integer >= 0, got ${String(position[k])}`);
    }
    if (typeof position.recipe !== 'object' || position.recipe === null) fail(file, `${TRAIN_KEY} has no recipe`);
  }
  return { graph: l.graph, weights: l.weights, optim, ema, rng, position, metadata: l.metadata, info: l.info };
}
