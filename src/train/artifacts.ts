/**
 * What a run writes into its folder: recipe.json, metrics.jsonl (one fsynced line per epoch), the checkpoints
 * (last: everything to resume; best: the weights of the best evaluation by the task's key) and at the end the
 * model files (safetensors, ONNX) and training curves. Every file is written atomically.
 */
import { appendFileSync, closeSync, existsSync, fsyncSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.js';
import type { Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import { saveWeights } from '../io/weights.js';
import { exportOnnx } from '../engine/onnx/export.js';
import type { ModelInfoInput } from '../io/metadata.js';
import { saveCheckpoint, type SaveCheckpointOptions } from './checkpoint.js';
import { METRICS_FILE, plotRun, type EpochMetrics } from './plot.js';

/** The files a run writes into its folder (and that another run there would overwrite). */
const RUN_FILES = ['last.safetensors', 'best.safetensors', 'model.safetensors', 'model.onnx', 'model.int8.onnx', METRICS_FILE];

export function refuseRunFolder(runDir: string, force = false): void {
  const found = RUN_FILES.filter((f) => existsSync(join(runDir, f)));
  if (found.length && !force) {
    throw new Error(`${runDir} already holds a run (${found.join(', ')}); resume it with --resume ${runDir}, replace it with --force, or choose another --out`);
  }
}

function appendLine(file: string, line: string): void {
  appendFileSync(file, `${line}\n`);
  const fd = openSync(file, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The run folder of one model: its files by role, and the writes of a run. */
export class RunFolder {
  readonly files: Record<string, string>;
  constructor(readonly runDir: string, private readonly graph: Graph, private readonly metadata: () => Record<string, string>) {
    this.files = { runDir, metrics: join(runDir, METRICS_FILE), last: join(runDir, 'last.safetensors'), best: join(runDir, 'best.safetensors') };
  }

  writeRecipe(recipe: object): void {
    writeFileAtomic(join(this.runDir, 'recipe.json'), `${JSON.stringify(recipe, null, 2)}\n`);
  }

  /** Keeps only the metrics lines of completed epochs ≤ `epochs` (after a resume). */
  trimMetrics(epochs: number): void {
    const file = this.files.metrics!;
    if (!existsSync(file)) return;
    const keep = readFileSync(file, 'utf8').split('\n').filter((l) => {
      if (!l.trim()) return false;
      try {
        return (JSON.parse(l) as EpochMetrics).epoch <= epochs;
      } catch {
        return false;
      }
    });
    writeFileAtomic(file, keep.map((l) => `${l}\n`).join(''));
  }

  appendMetrics(row: EpochMetrics): void {
    appendLine(this.files.metrics!, JSON.stringify(row));
  }

  /** last.safetensors: the training weights and everything else a resume needs. */
  saveLast(weights: StateDict, state: Omit<SaveCheckpointOptions, 'metadata'>): void {
    saveCheckpoint(this.files.last!, this.graph, weights, { ...state, metadata: this.metadata() });
  }

  /** A model file (best.safetensors, model.safetensors) with the epoch and evaluation it was taken at. */
  saveModel(role: 'best' | 'model', weights: StateDict, epoch: number, evalMetadata: Record<string, string>): void {
    this.files[role] ??= join(this.runDir, `${role}.safetensors`);
    saveWeights(this.files[role], this.graph, weights, new Map(), { ...this.metadata(), 'mnv2.epoch': String(epoch), ...evalMetadata });
  }

  exportOnnx(weights: StateDict, info: Omit<ModelInfoInput, 'config'>): void {
    this.files.onnx = join(this.runDir, 'model.onnx');
    writeFileAtomic(this.files.onnx, exportOnnx(this.graph, weights, { info }));
  }

  /** model.int8.onnx: the QDQ model of quantization-aware training. */
  writeInt8Onnx(bytes: Uint8Array): void {
    this.files.int8 = join(this.runDir, 'model.int8.onnx');
    writeFileAtomic(this.files.int8, bytes);
  }

  async plotCurves(): Promise<void> {
    const p = await plotRun(this.runDir);
    this.files.curvesSvg = p.svg;
    this.files.curvesPng = p.png;
  }
}
