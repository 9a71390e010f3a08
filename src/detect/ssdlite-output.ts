/**
 * An SSDLite model's outputs as detections, with no Node dependency (the browser page runs exactly this): the
 * input preprocessing, the TF-style post-processing of one image's raw outputs, pixel boxes with labels, and the
 * post-processing options a model file's (or an ONNX export's) metadata carries.
 */
import type { Preset } from '../data/preprocess.js';
import { classNamesOf, POSTPROCESS_KEY } from '../io/metadata.js';
import { ssdAnchors } from './anchors.js';
import type { BoxCoder } from './box-coder.js';
import type { Detections } from './nms.js';
import { postprocessSsd } from './postprocess.js';
import type { SsdliteConfig } from '../model/ssdlite.js';

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

/** Pixel detections of one image of width × height from its raw outputs (codes [A, 4], logits [A, C+1]). */
export function pixelDetections(
  codes: Float32Array, logits: Float32Array, config: Pick<SsdliteConfig, 'resolution' | 'ssdStyle'>, width: number, height: number, o: DetectOptions = {},
): Detection[] {
  const d = postprocess(codes, logits, config, o);
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
