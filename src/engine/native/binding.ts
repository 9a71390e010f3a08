/** Loads the compiled oneDNN addon (build/Release/mnv2.node) with one clear message when it is missing. */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** Where a buffer lives: engine-chosen activation layout, plain row-major, or a primitive's workspace. */
export type BufferLayout = 'act' | 'plain' | 'ws';
export interface BufferSpec {
  layout: BufferLayout;
  dims?: number[];
  /** A plain buffer can wrap caller-owned memory (weights, gradients, inputs, logits). */
  data?: Float32Array;
  /**
   * An act buffer sharing arena k with others that are never live at the same time (gradients): the addon
   * allocates each arena once, at its largest member's size. Members may not have blocked channel padding.
   */
  arena?: number;
}
export type OpSpec = Record<string, unknown> & { op: string; name?: string };
export interface ProgramSpec {
  actFormat: ActFormat;
  /** Make weight layouts once and again only after `weightsChanged()` (inference), not on every run. */
  cacheWeights?: boolean;
  buffers: BufferSpec[];
  segments: OpSpec[][];
}
export type ActFormat = 'nhwc' | 'nChw16c' | 'nChw8c' | 'nchw';

export interface NativeProgram {
  run(segment: number): void;
  /** Runs the segment on a libuv worker thread; until it settles, run/runAsync/weightsChanged throw. */
  runAsync(segment: number): Promise<void>;
  weightsChanged(): void;
  implementations(): string[];
  /** Bytes of memory the program allocated (activations, workspaces, weight layouts). */
  bytes(): number;
  /** Free the program's primitives and memory now; run() throws afterwards. */
  release(): void;
}
interface Addon {
  Program: new (spec: ProgramSpec) => NativeProgram;
  setNumThreads(n: number): void;
  info(): { onednn: string; maxThreads: number; actFormat: ActFormat; maxTensorElements: number };
}

let addon: Addon | null = null;

function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('mnv2: cannot find the package root');
    dir = up;
  }
  return dir;
}

/** How to get the native engine, for messages. */
export const ENABLE_NATIVE = 'install oneDNN (apt-get install -y libdnnl-dev) and rebuild the addon (npm rebuild mobilenetv2-ts; in a clone: npm run install)';

export function native(): Addon {
  if (addon) return addon;
  const file = path.join(findRoot(), 'build', 'Release', 'mnv2.node');
  if (!existsSync(file)) {
    throw new Error(`mnv2: the native engine is not built (${file} missing): ${ENABLE_NATIVE}`);
  }
  passiveWaitByDefault();
  addon = createRequire(import.meta.url)(file) as Addon;
  return addon;
}

/** Whether the oneDNN addon is built and loads. */
export function nativeAvailable(): boolean {
  try {
    native();
    return true;
  } catch {
    return false;
  }
}

/**
 * libgomp's default is to spin for ~300k iterations at every barrier. When another process is busy on the
 * same cores, a spinning thread holds a core its descheduled partner needs, and each of the ~60 parallel
 * regions of a forward pass waits out a scheduler time slice (measured: 2 ms -> 460 ms per image on 2 cores).
 * Passive waiting sleeps instead. libgomp reads the variables once, when it is loaded with the addon, so this
 * must run before the first require; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
 */
function passiveWaitByDefault(): void {
  if (process.env.OMP_WAIT_POLICY === undefined && process.env.GOMP_SPINCOUNT === undefined) process.env.OMP_WAIT_POLICY = 'PASSIVE';
}

/** Set oneDNN's thread count (OpenMP); default is all cores. */
export function setThreads(n: number): void {
  native().setNumThreads(n);
}
