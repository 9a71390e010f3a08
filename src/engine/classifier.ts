/**
 * One interface over both engines: the native oneDNN engine and ONNX Runtime on the project's own export.
 * Both run the same weights and must agree (tests check it).
 */
import { ENABLE_NATIVE, nativeAvailable } from './native/binding.js';
import type { ProgramCacheStats } from './native/program-cache.js';
import type { Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import type { ModelInfo } from '../io/metadata.js';
import { readFileSync } from 'node:fs';

export type EngineName = 'native' | 'ort';

export interface Classifier {
  readonly engine: EngineName;
  /** Eval-mode logits [N, classes] for an NCHW float32 batch. */
  run(input: Float32Array, batch: number): Promise<Float32Array>;
  release(): Promise<void>;
  /** Native engine: the compiled programs it keeps (one per batch size, bounded by a byte budget). */
  programs?(): ProgramCacheStats;
}

let noticed = false;

/** The engine asked for, else native when the addon is built, else ONNX Runtime with a one-line notice. */
export function resolveEngine(engine?: EngineName): EngineName {
  if (engine) return engine;
  if (nativeAvailable()) return 'native';
  if (!noticed) console.error(`mnv2: native engine not built, using ONNX Runtime (to enable it: ${ENABLE_NATIVE})`);
  noticed = true;
  return 'ort';
}

export async function createClassifier(graph: Graph, weights: StateDict, requested: EngineName | undefined, threads?: number): Promise<Classifier> {
  const engine = resolveEngine(requested);
  // Each engine's modules load only when it is used (ONNX Runtime and the ONNX encoder cost start-up time).
  if (engine === 'native') {
    const { NativeModel } = await import('./native/model.js');
    const m = new NativeModel(graph, weights, { threads });
    // On a worker thread: the event loop stays free while a batch runs (serve --engine native).
    return { engine, run: async (x, n) => (await m.forward(x, n)).logits, release: async () => {}, programs: () => m.programStats() };
  }
  if (engine === 'ort') return ortClassifier((await import('./onnx/export.js')).exportOnnx(graph, weights), threads);
  throw new Error(`unknown engine '${String(engine)}' (expected native or ort)`);
}

/** ONNX Runtime on an ONNX model given as bytes or a file path. */
export async function ortClassifier(model: Uint8Array | string, threads?: number): Promise<Classifier> {
  const { OrtModel } = await import('./onnx/session.js');
  const m = await OrtModel.create(model, { threads });
  return { engine: 'ort', run: (x, n) => m.run(x, n), release: () => m.release() };
}

/**
 * ONNX Runtime on a classifier's ONNX file (`mnv2 export onnx`, or `mnv2 quantize`'s int8), with the model
 * description its metadata carries; `use` says what to do with a detector instead.
 */
export async function onnxFileClassifier(file: string, threads: number | undefined, use: string): Promise<{ classifier: Classifier; info: ModelInfo }> {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    throw new Error(`${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  const { readOnnxInfo } = await import('./onnx/export.js');
  const info = readOnnxInfo(bytes, file);
  if (info.config.family === 'ssdlite') throw new Error(`${file}: an SSDLite detector; ${use}`);
  return { classifier: await ortClassifier(bytes, threads), info };
}

/** Top-k decoding of a classifier's logits (the classification task's). */
export { topK } from '../task/classification.js';
