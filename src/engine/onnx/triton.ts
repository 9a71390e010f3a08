/**
 * A Triton Inference Server model repository for an exported model: `<dir>/<name>/config.pbtxt` (protobuf text
 * format of Triton's ModelConfig, platform onnxruntime_onnx) and `<dir>/<name>/1/model.onnx` (version 1), plus
 * the class names in `labels.txt` when they are known (Triton's classification extension reads them).
 * Triton batches along the first dimension, which the config leaves out of `dims`: our export's symbolic batch.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { BaseConfig } from '../../model/family.js';
import type { Graph } from '../../model/graph.js';
import type { StateDict } from '../../model/weights.js';
import { exportOnnx, ONNX_INPUT, ONNX_OUTPUT, type ExportOptions } from './export.js';

export const TRITON_LABEL_FILE = 'labels.txt';

export interface TritonConfigOptions {
  /** Model name = the model's directory name in the repository. */
  name: string;
  maxBatch: number;
  /** Batch sizes the dynamic batcher aims for (each <= maxBatch). */
  preferredBatch: readonly number[];
  /** How long the dynamic batcher may hold a request to fill a batch. */
  maxQueueDelayUs: number;
  /** CPU instances of the model. */
  instances: number;
  /** Names the label file on the output (written next to config.pbtxt). */
  labelFile?: string;
  /** Lines for the comment at the top (e.g. how inputs must be preprocessed). */
  notes?: readonly string[];
  /** The model's outputs, per image (default: a classifier's `logits` [classes], which gets the label file). */
  outputs?: readonly TritonOutput[];
}

export interface TritonOutput {
  name: string;
  /** Per-image dims (Triton leaves the batch dimension out). */
  dims: readonly number[];
}

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

function checkOptions(o: TritonConfigOptions): void {
  if (!NAME_RE.test(o.name)) throw new Error(`model name '${o.name}' must be letters, digits, '_', '.' or '-' (it becomes a directory name)`);
  const posInt = (v: number): boolean => Number.isInteger(v) && v >= 1;
  if (!posInt(o.maxBatch)) throw new Error(`max batch must be a positive integer, got ${o.maxBatch}`);
  for (const b of o.preferredBatch) {
    if (!posInt(b) || b > o.maxBatch) throw new Error(`preferred batch size ${b} must be an integer in 1..${o.maxBatch} (the max batch)`);
  }
  if (!Number.isInteger(o.maxQueueDelayUs) || o.maxQueueDelayUs < 0) throw new Error(`max queue delay must be a whole number of microseconds >= 0, got ${o.maxQueueDelayUs}`);
  if (!posInt(o.instances)) throw new Error(`instance count must be a positive integer, got ${o.instances}`);
}

const list = (xs: readonly number[]): string => `[ ${xs.join(', ')} ]`;

/** config.pbtxt for the model `cfg` as exported by exportOnnx (input float32 [N, C, H, W], output float32 [N, classes]). */
export function tritonConfig(cfg: BaseConfig, o: TritonConfigOptions): string {
  checkOptions(o);
  const lines = [
    ...(o.notes ?? []).map((n) => `# ${n}`),
    `name: "${o.name}"`,
    'platform: "onnxruntime_onnx"',
    `max_batch_size: ${o.maxBatch}`,
    'input [',
    '  {',
    `    name: "${ONNX_INPUT}"`,
    '    data_type: TYPE_FP32',
    `    dims: ${list([cfg.inChannels, cfg.resolution, cfg.resolution])}`,
    '  }',
    ']',
    'output [',
    ...(o.outputs ?? [{ name: ONNX_OUTPUT, dims: [cfg.numClasses] }]).flatMap((out, i, all) => [
      '  {',
      `    name: "${out.name}"`,
      '    data_type: TYPE_FP32',
      `    dims: ${list(out.dims)}`,
      ...(o.labelFile && !o.outputs ? [`    label_filename: "${o.labelFile}"`] : []),
      i < all.length - 1 ? '  },' : '  }',
    ]),
    ']',
    'dynamic_batching {',
    ...(o.preferredBatch.length ? [`  preferred_batch_size: ${list(o.preferredBatch)}`] : []),
    `  max_queue_delay_microseconds: ${o.maxQueueDelayUs}`,
    '}',
    'instance_group [',
    '  {',
    `    count: ${o.instances}`,
    '    kind: KIND_CPU',
    '  }',
    ']',
  ];
  return lines.join('\n') + '\n';
}

export interface TritonExportOptions extends Omit<TritonConfigOptions, 'labelFile'> {
  labels?: readonly string[];
  fp16?: boolean;
  /** Replace an existing non-empty model directory. */
  force?: boolean;
  /** Preprocessing, labels and provenance for model.onnx's metadata. */
  info?: ExportOptions['info'];
  /** Applied to the exported ONNX bytes before writing (e.g. a detector's post-processing in the graph). */
  transform?: (onnx: Uint8Array) => Uint8Array;
}

/**
 * Write `<dir>/<name>/` (config.pbtxt, 1/model.onnx, labels.txt) into a temporary directory beside it and
 * rename it into place, so a reader never sees a half-written model. Returns the model directory.
 */
export function exportTriton(dir: string, graph: Graph, weights: StateDict, o: TritonExportOptions): string {
  const cfg = graph.config;
  if (o.labels && o.labels.length !== cfg.numClasses) throw new Error(`${o.labels.length} labels for a model with ${cfg.numClasses} classes`);
  if (o.labels?.some((l) => /[\r\n]/.test(l))) throw new Error('labels must not contain line breaks (labels.txt has one per line)');
  const config = tritonConfig(cfg, { ...o, labelFile: o.labels ? TRITON_LABEL_FILE : undefined });
  const modelDir = path.join(dir, o.name);
  const replace = existsSync(modelDir);
  if (replace) {
    if (!statSync(modelDir).isDirectory()) throw new Error(`${modelDir} exists and is not a directory`);
    if (readdirSync(modelDir).length > 0 && !o.force) throw new Error(`${modelDir} already exists and is not empty; pass --force to replace it`);
  }
  const exported = exportOnnx(graph, weights, { fp16: o.fp16, info: o.info });
  const onnx = o.transform ? o.transform(exported) : exported;
  mkdirSync(dir, { recursive: true });
  const tmp = mkdtempSync(path.join(dir, `.${o.name}.tmp-`));
  const old = `${tmp}.old`;
  try {
    mkdirSync(path.join(tmp, '1'));
    writeFileSync(path.join(tmp, '1', 'model.onnx'), onnx);
    writeFileSync(path.join(tmp, 'config.pbtxt'), config);
    if (o.labels) writeFileSync(path.join(tmp, TRITON_LABEL_FILE), o.labels.join('\n') + '\n');
    if (replace) renameSync(modelDir, old);
    try {
      renameSync(tmp, modelDir);
    } catch (e) {
      if (replace) renameSync(old, modelDir);
      throw e;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(old, { recursive: true, force: true });
  }
  return modelDir;
}
