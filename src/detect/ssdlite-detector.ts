/**
 * Detection with an SSDLite model (src/model/ssdlite.ts), the TF OD API way: the photo resized to the input size
 * without a crop, pixels to [-1, 1]; the model run by ONNX Runtime (the ONNX export) or the native oneDNN engine;
 * box codes decoded against the anchors with the (10, 10, 5, 5) coder, sigmoid scores, TF's per-class NMS.
 * Boxes come back in image pixels.
 */
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import type { Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import { buildModel } from '../model/registry.js';
import { BOXES, DETECTION_LOGITS, SSDLITE, type SsdliteConfig } from '../model/ssdlite.js';
import { decodeOnnx, exportOnnx, ONNX_INPUT, onnxProps, readOnnxInfo } from '../engine/onnx/export.js';
import { NativeModel } from '../engine/native/model.js';
import type { EngineName } from '../engine/classifier.js';
import { loadImage } from '../data/preprocess.js';
import { loadModelFile, type LoadedWeights } from '../io/weights.js';
import { POSTPROCESS_KEY } from '../io/metadata.js';
import { fail } from '../util/errors.js';
import { ssdAnchors } from './anchors.js';
import type { ImageDetector } from './evaluate.js';
import { detectOptionsOf, detectorPreset, pixelDetections, type Detection, type DetectOptions } from './ssdlite-output.js';

export { detectOptionsOf, detectorPreset, postprocess, type Detection, type DetectOptions } from './ssdlite-output.js';

/** Width and height of an image file or buffer as displayed (after its EXIF orientation, as loadImage reads it). */
export async function orientedSize(image: string | Buffer): Promise<{ width: number; height: number }> {
  const m = await sharp(image).metadata();
  const width = m.autoOrient?.width ?? m.width;
  const height = m.autoOrient?.height ?? m.height;
  if (!width || !height) throw new Error(`${typeof image === 'string' ? image : 'image'}: cannot read the image size`);
  return { width, height };
}

/** Raw outputs of a batch: box codes [batch, A, 4] and logits [batch, A, C+1]. */
export interface RawDetections {
  codes: Float32Array;
  logits: Float32Array;
}

interface Runner {
  run(input: Float32Array, batch: number): Promise<RawDetections>;
  release(): Promise<void>;
}

/** An SSDLite model on ONNX Runtime or the native engine: photo in, detections out. */
export class SsdliteDetector {
  private constructor(
    readonly graph: Graph<SsdliteConfig>,
    readonly engine: EngineName,
    private runner: Runner,
  ) {}

  /** `threads` undefined: all cores. */
  static async create(graph: Graph<SsdliteConfig>, weights: StateDict, threads?: number, engine: EngineName = 'ort'): Promise<SsdliteDetector> {
    if (engine === 'native') {
      const m = new NativeModel(graph, weights, { threads });
      const run = async (input: Float32Array, batch: number): Promise<RawDetections> => {
        const out = await m.forwardOutputs(input, batch);
        return { codes: out.get(BOXES)!, logits: out.get(DETECTION_LOGITS)! };
      };
      return new SsdliteDetector(graph, engine, { run, release: async () => {} });
    }
    if (engine !== 'ort') throw new Error(`unknown engine '${String(engine)}' (expected native or ort)`);
    return SsdliteDetector.fromOnnx(exportOnnx(graph, weights), graph, threads);
  }

  /** An exported SSDLite (raw `boxes` and `logits` outputs, float32 or int8 QDQ) on ONNX Runtime. */
  static async fromOnnx(bytes: Uint8Array, graph: Graph<SsdliteConfig>, threads?: number): Promise<SsdliteDetector> {
    const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: threads ?? 0, interOpNumThreads: 1 });
    const { resolution: r, inChannels: c } = graph.config;
    const run = async (input: Float32Array, batch: number): Promise<RawDetections> => {
      const out = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', input, [batch, c, r, r]) });
      return { codes: out[BOXES]!.data as Float32Array, logits: out[DETECTION_LOGITS]!.data as Float32Array };
    };
    return new SsdliteDetector(graph, 'ort', { run, release: () => session.release() });
  }

  /** Raw outputs of `batch` preprocessed images [batch, 3, R, R]: box codes [batch, A, 4] and logits [batch, A, C+1]. */
  forward(input: Float32Array, batch = 1): Promise<RawDetections> {
    return this.runner.run(input, batch);
  }

  /** Anchors A of the model's input size. */
  get anchorCount(): number {
    return ssdAnchors({ height: this.graph.config.resolution, width: this.graph.config.resolution }).count;
  }

  /** Floats per image of {@link forwardRows}: A·4 codes then A·(C+1) logits. */
  get rowSize(): number {
    return this.anchorCount * (4 + this.graph.config.numClasses + 1);
  }

  /** The raw outputs of a batch as one row per image (codes, then logits): the shape the server's batcher splits. */
  async forwardRows(input: Float32Array, batch: number): Promise<Float32Array> {
    const { codes, logits } = await this.forward(input, batch);
    const nc = codes.length / batch;
    const nl = logits.length / batch;
    const out = new Float32Array(batch * (nc + nl));
    for (let i = 0; i < batch; i++) {
      out.set(codes.subarray(i * nc, (i + 1) * nc), i * (nc + nl));
      out.set(logits.subarray(i * nl, (i + 1) * nl), i * (nc + nl) + nc);
    }
    return out;
  }

  /** Pixel detections of one image from its {@link forwardRows} row. */
  rowDetections(row: Float32Array, width: number, height: number, o: DetectOptions = {}): Detection[] {
    const nc = this.anchorCount * 4;
    return this.toDetections(row.subarray(0, nc), row.subarray(nc), width, height, o);
  }

  /** Pixel detections of one image of width × height from its raw outputs (one image's codes and logits). */
  toDetections(codes: Float32Array, logits: Float32Array, width: number, height: number, o: DetectOptions = {}): Detection[] {
    return pixelDetections(codes, logits, this.graph.config, width, height, o);
  }

  async detect(image: string, o: DetectOptions = {}): Promise<{ width: number; height: number; detections: Detection[] }> {
    const r = this.graph.config.resolution;
    const { width, height } = await orientedSize(image);
    const { codes, logits } = await this.forward(await loadImage(image, detectorPreset(r)));
    const detections = this.toDetections(codes, logits, width, height, o);
    return { width, height, detections };
  }

  /** This detector as the evaluation takes it (src/detect/evaluate.ts), post-processing with `o`. */
  imageDetector(o: DetectOptions = {}): ImageDetector {
    return { numClasses: this.graph.config.numClasses, detect: async (file) => (await this.detect(file, o)).detections };
  }

  async release(): Promise<void> {
    await this.runner.release();
  }
}

export { POSTPROCESS_KEY };

/**
 * An SSDLite model file on ONNX Runtime or the native engine, with the options its file carries: an imported TFLite export's box
 * coder scales and NMS IoU, and the class names. An `.onnx` file (an `mnv2 export onnx` or `mnv2 quantize` of a
 * detector, raw outputs) runs on ONNX Runtime with the options its metadata carries.
 */
export async function openSsdliteFile(file: string, threads?: number, engine: EngineName = 'ort'): Promise<{ detector: SsdliteDetector; options: DetectOptions }> {
  if (file.toLowerCase().endsWith('.onnx')) return openSsdliteOnnx(file, threads, engine);
  return openSsdlite(loadModelFile(file), file, threads, engine);
}

/** An ONNX export of an SSDLite (raw outputs) on ONNX Runtime, with the post-processing options its metadata carries. */
export async function openSsdliteOnnx(file: string, threads?: number, engine: EngineName = 'ort'): Promise<{ detector: SsdliteDetector; options: DetectOptions }> {
  if (engine !== 'ort') fail(file, 'an ONNX file runs on ONNX Runtime: use --engine ort, or the model file (.safetensors) for the native engine');
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    fail(file, (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message);
  }
  const info = readOnnxInfo(bytes, file);
  if (info.config.family !== SSDLITE) fail(file, `a ${info.config.family} model, not an SSDLite detector`);
  const model = decodeOnnx(bytes, file);
  const outputs = new Set((model.graph?.output ?? []).map((o) => o.name));
  if (!outputs.has(BOXES) || !outputs.has(DETECTION_LOGITS)) fail(file, `no raw '${BOXES}' and '${DETECTION_LOGITS}' outputs (export it with --detect-postprocess none)`);
  const graph = buildModel(info.config) as Graph<SsdliteConfig>;
  return { detector: await SsdliteDetector.fromOnnx(bytes, graph, threads), options: detectOptionsOf({ metadata: onnxProps(model), info }, file) };
}

/** {@link openSsdliteFile} on a model file already read. */
export async function openSsdlite(m: LoadedWeights, file: string, threads?: number, engine: EngineName = 'ort'): Promise<{ detector: SsdliteDetector; options: DetectOptions }> {
  if (m.graph.config.family !== SSDLITE) throw new Error(`${file}: a ${m.graph.config.family} model, not an SSDLite detector`);
  return { detector: await SsdliteDetector.create(m.graph as Graph<SsdliteConfig>, m.weights, threads, engine), options: detectOptionsOf(m, file) };
}

const escapeXml = (s: string): string => s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);

/** The photo with each detection's box and `label score` drawn over it, as PNG. */
export async function drawDetections(image: string, width: number, height: number, detections: readonly Detection[]): Promise<Buffer> {
  const stroke = Math.max(2, Math.round(Math.min(width, height) / 200));
  const font = Math.max(12, Math.round(Math.min(width, height) / 30));
  const marks = detections.map((d) => {
    const [x1, y1, x2, y2] = d.box;
    const text = escapeXml(`${d.label} ${d.score.toFixed(2)}`);
    return `<rect x="${x1}" y="${y1}" width="${x2 - x1}" height="${y2 - y1}" fill="none" stroke="#ff2d55" stroke-width="${stroke}"/>`
      + `<text x="${x1 + stroke}" y="${Math.max(font, y1 - stroke)}" font-family="sans-serif" font-size="${font}" fill="#ff2d55" stroke="white" stroke-width="${stroke / 2}" paint-order="stroke">${text}</text>`;
  });
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${marks.join('')}</svg>`;
  return sharp(image).composite([{ input: Buffer.from(svg), top: 0, left: 0 }]).png().toBuffer();
}
