/**
 * Detection with an SSDLite model (src/model/ssdlite.ts), the TF OD API way: the photo resized to the input size
 * without a crop, pixels to [-1, 1]; the model run by ONNX Runtime (the ONNX export) or the native oneDNN engine;
 * box codes decoded against the anchors with the (10, 10, 5, 5) coder, sigmoid scores, TF's per-class NMS.
 * Boxes come back in image pixels.
 */
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import type { Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import { BOXES, DETECTION_LOGITS, SSDLITE, type SsdliteConfig } from '../model/ssdlite.js';
import { exportOnnx, ONNX_INPUT } from '../engine/onnx/export.js';
import { NativeModel } from '../engine/native/model.js';
import type { EngineName } from '../engine/classifier.js';
import { loadImage, type Preset } from '../data/preprocess.js';
import { loadModelFile, type LoadedWeights } from '../io/weights.js';
import { classNamesOf } from '../io/metadata.js';
import { ssdAnchors } from './anchors.js';
import type { BoxCoder } from './box-coder.js';
import type { Detections } from './nms.js';
import { postprocessSsd } from './postprocess.js';

export interface Detection {
  /** [x1, y1, x2, y2] in image pixels. */
  box: [number, number, number, number];
  score: number;
  /** Foreground class, 1-based (TF's label map ids; column 0 of the logits is background). */
  classId: number;
  label: string;
}

export interface DetectOptions {
  /** Keep detections scoring above this (default 0.3, the zoo pipeline's). */
  scoreThreshold?: number;
  /** At most this many detections (default 100). */
  maxDetections?: number;
  iouThreshold?: number;
  /** Box coder scales (y, x, h, w), e.g. from TFLite_Detection_PostProcess. */
  scales?: BoxCoder['scales'];
  /** Names of classes 1..C (default `class N`). */
  classNames?: readonly string[];
  threads?: number;
}

/** Width and height of an image file or buffer as displayed (after its EXIF orientation, as loadImage reads it). */
export async function orientedSize(image: string | Buffer): Promise<{ width: number; height: number }> {
  const m = await sharp(image).metadata();
  const width = m.autoOrient?.width ?? m.width;
  const height = m.autoOrient?.height ?? m.height;
  if (!width || !height) throw new Error(`${typeof image === 'string' ? image : 'image'}: cannot read the image size`);
  return { width, height };
}

/** TF OD API's fixed_shape_resizer + [-1, 1]: a direct (aspect-changing) bilinear resize. */
export function detectorPreset(size: number): Preset {
  return { name: 'keras', size, channels: 3, greyscale: false, background: 'white', mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] };
}

/** Decode, score and suppress one image's raw outputs (boxes [A, 4] codes, logits [A, C+1]) into normalized boxes, in the model's SSD style. */
export function postprocess(codes: Float32Array, logits: Float32Array, config: Pick<SsdliteConfig, 'resolution' | 'ssdStyle'>, o: DetectOptions = {}): Detections {
  const anchors = ssdAnchors({ height: config.resolution, width: config.resolution });
  const { maxDetections, iouThreshold, scales } = o;
  return postprocessSsd(codes, logits, anchors.corners, config.ssdStyle, { scoreThreshold: o.scoreThreshold ?? 0.3, maxDetections, iouThreshold, scales });
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

  static async create(graph: Graph<SsdliteConfig>, weights: StateDict, threads = 1, engine: EngineName = 'ort'): Promise<SsdliteDetector> {
    if (engine === 'native') {
      const m = new NativeModel(graph, weights, { threads });
      const run = async (input: Float32Array, batch: number): Promise<RawDetections> => {
        const out = await m.forwardOutputs(input, batch);
        return { codes: out.get(BOXES)!, logits: out.get(DETECTION_LOGITS)! };
      };
      return new SsdliteDetector(graph, engine, { run, release: async () => {} });
    }
    if (engine !== 'ort') throw new Error(`unknown engine '${String(engine)}' (expected native or ort)`);
    const session = await ort.InferenceSession.create(exportOnnx(graph, weights), { intraOpNumThreads: threads, interOpNumThreads: 1 });
    const { resolution: r, inChannels: c } = graph.config;
    const run = async (input: Float32Array, batch: number): Promise<RawDetections> => {
      const out = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', input, [batch, c, r, r]) });
      return { codes: out[BOXES]!.data as Float32Array, logits: out[DETECTION_LOGITS]!.data as Float32Array };
    };
    return new SsdliteDetector(graph, engine, { run, release: () => session.release() });
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
    const d = postprocess(codes, logits, this.graph.config, o);
    return Array.from({ length: d.count }, (_, i): Detection => {
      const b = d.boxes.subarray(4 * i, 4 * i + 4);
      const classId = d.classes[i]!;
      return {
        box: [b[0]! * width, b[1]! * height, b[2]! * width, b[3]! * height],
        score: d.scores[i]!,
        classId,
        label: o.classNames?.[classId - 1] ?? `class ${classId}`,
      };
    });
  }

  async detect(image: string, o: DetectOptions = {}): Promise<{ width: number; height: number; detections: Detection[] }> {
    const r = this.graph.config.resolution;
    const { width, height } = await orientedSize(image);
    const { codes, logits } = await this.forward(await loadImage(image, detectorPreset(r)));
    const detections = this.toDetections(codes, logits, width, height, o);
    return { width, height, detections };
  }

  async release(): Promise<void> {
    await this.runner.release();
  }
}

/** Metadata key of an imported detector's TFLite_Detection_PostProcess options (JSON). */
export const POSTPROCESS_KEY = 'mnv2.postprocess';

/**
 * An SSDLite model file on ONNX Runtime or the native engine, with the options its file carries: an imported TFLite export's box
 * coder scales and NMS IoU, and the class names.
 */
export async function openSsdliteFile(file: string, threads = 1, engine: EngineName = 'ort'): Promise<{ detector: SsdliteDetector; options: DetectOptions }> {
  return openSsdlite(loadModelFile(file), file, threads, engine);
}

/** {@link openSsdliteFile} on a model file already read. */
export async function openSsdlite(m: LoadedWeights, file: string, threads = 1, engine: EngineName = 'ort'): Promise<{ detector: SsdliteDetector; options: DetectOptions }> {
  if (m.graph.config.family !== SSDLITE) throw new Error(`${file}: a ${m.graph.config.family} model, not an SSDLite detector`);
  return { detector: await SsdliteDetector.create(m.graph as Graph<SsdliteConfig>, m.weights, threads, engine), options: detectOptionsOf(m, file) };
}

/** The post-processing options a model file carries: an imported TFLite export's coder scales and NMS IoU, class names. */
export function detectOptionsOf(m: { metadata: Readonly<Record<string, string>>; info: Parameters<typeof classNamesOf>[0] }, file: string): DetectOptions {
  let post: Record<string, number> = {};
  try {
    post = m.metadata[POSTPROCESS_KEY] ? (JSON.parse(m.metadata[POSTPROCESS_KEY]) as Record<string, number>) : {};
  } catch (e) {
    throw new Error(`${file}: metadata ${POSTPROCESS_KEY} is not JSON (${(e as Error).message})`);
  }
  const options: DetectOptions = {};
  if (post['y_scale']) options.scales = [post['y_scale'], post['x_scale']!, post['h_scale']!, post['w_scale']!];
  if (post['nms_iou_threshold']) options.iouThreshold = post['nms_iou_threshold'];
  const classNames = classNamesOf(m.info);
  if (classNames) options.classNames = classNames;
  return options;
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
