/** A small wrapper over onnxruntime-node for exported MobileNetV2 models (float32 NCHW in, logits out). */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { ONNX_FEATURES, ONNX_INPUT, ONNX_OUTPUT, readOnnxConfig } from './export.js';
import { assertFiniteInput } from '../../util/finite.js';
import { fail } from '../../util/errors.js';

export interface OrtModelOptions {
  /** Intra-op threads (default: os.availableParallelism()). */
  threads?: number;
}

export class OrtModel {
  /** Per-image input shape [C, H, W]. */
  readonly inputShape: readonly [number, number, number];
  readonly numClasses: number;
  readonly inputName: string;
  readonly outputName: string;
  private session: ort.InferenceSession | null;

  private constructor(session: ort.InferenceSession, inputShape: readonly [number, number, number], numClasses: number) {
    this.session = session;
    this.inputShape = inputShape;
    this.numClasses = numClasses;
    this.inputName = session.inputNames.includes(ONNX_INPUT) ? ONNX_INPUT : session.inputNames[0]!;
    this.outputName = session.outputNames.includes(ONNX_OUTPUT) ? ONNX_OUTPUT : session.outputNames[0]!;
  }

  /** Load a model from bytes or a file path. */
  static async create(model: Uint8Array | string, opts: OrtModelOptions = {}): Promise<OrtModel> {
    const source = typeof model === 'string' ? model : '<onnx bytes>';
    const bytes = typeof model === 'string' ? new Uint8Array(await readFile(model)) : model;
    const threads = opts.threads ?? os.availableParallelism();
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`OrtModel: threads must be a positive integer, got ${threads}`);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, {
        graphOptimizationLevel: 'all',
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
      });
    } catch (e) {
      fail(source, `onnxruntime could not load the model (${(e as Error).message})`);
    }
    // Shapes: from the mnv2 metadata when present, else from the model's declared input/output shapes.
    let inputShape: [number, number, number] | null = null;
    let numClasses: number | null = null;
    try {
      const cfg = readOnnxConfig(bytes, source);
      inputShape = [cfg.inChannels, cfg.resolution, cfg.resolution];
      numClasses = cfg.numClasses;
    } catch {
      const inMeta = session.inputMetadata[0];
      const outMeta = session.outputMetadata[0];
      if (inMeta?.isTensor && inMeta.shape.length === 4 && inMeta.shape.slice(1).every((d) => typeof d === 'number')) {
        inputShape = inMeta.shape.slice(1) as [number, number, number];
      }
      if (outMeta?.isTensor && outMeta.shape.length === 2 && typeof outMeta.shape[1] === 'number') numClasses = outMeta.shape[1];
    }
    if (!inputShape || numClasses === null) {
      await session.release();
      fail(source, `cannot determine the model's input shape [N, C, H, W] and class count`);
    }
    return new OrtModel(session, inputShape, numClasses);
  }

  /** Run a batch: `input` is float32 NCHW of length batch·C·H·W; returns logits [batch, numClasses] row-major. */
  async run(input: Float32Array, batch: number): Promise<Float32Array> {
    return (await this.forward(input, batch)).logits;
  }

  /** Logits, and the pooled features [batch, C] of a model exported with `features: true` (else undefined). */
  async forward(input: Float32Array, batch: number): Promise<{ logits: Float32Array; features?: Float32Array }> {
    if (!this.session) throw new Error('OrtModel: run() after release()');
    if (!Number.isInteger(batch) || batch < 1) throw new Error(`OrtModel.run: batch must be a positive integer, got ${batch}`);
    const [c, h, w] = this.inputShape;
    const expected = batch * c * h * w;
    if (input.length !== expected) {
      throw new Error(`OrtModel.run: input has ${input.length} values, expected batch·C·H·W = ${batch}·${c}·${h}·${w} = ${expected}`);
    }
    assertFiniteInput(input, batch);
    const feeds = { [this.inputName]: new ort.Tensor('float32', input, [batch, c, h, w]) };
    const out = await this.session.run(feeds);
    const logits = floatOutput(out, this.outputName);
    if (logits.length !== batch * this.numClasses) {
      throw new Error(`OrtModel.run: output has ${logits.length} values, expected ${batch}·${this.numClasses}`);
    }
    return { logits, features: out[ONNX_FEATURES] ? floatOutput(out, ONNX_FEATURES) : undefined };
  }

  async release(): Promise<void> {
    if (this.session) {
      const s = this.session;
      this.session = null;
      await s.release();
    }
  }
}

function floatOutput(out: ort.InferenceSession.OnnxValueMapType, name: string): Float32Array {
  const t = out[name];
  if (!t) throw new Error(`OrtModel.run: the model produced no output ${name}`);
  if (t.type !== 'float32') throw new Error(`OrtModel.run: output ${name} is ${t.type}, expected float32`);
  return t.data as Float32Array;
}
