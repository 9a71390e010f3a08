/**
 * SSD post-processing inside an exported ONNX graph, in the model's SSD style as src/detect/postprocess.ts does
 * it in TS (tf: codes (ty, tx, th, tw), sigmoid scores; torchvision: codes (dx, dy, dw, dh) with the log-size
 * clamp, softmax scores, its NMS thresholds), by choice:
 * - `decode`: the raw `boxes` codes decoded against the anchors (constants in the graph) into
 *   `decoded_boxes` [batch, A, 4] as normalized [x1, y1, x2, y2], and `scores` [batch, A, C+1].
 * - `nms`: then boxes clipped to [0, 1] (zero-area ones scored 0, as TF drops them), the background column
 *   dropped, and ONNX NonMaxSuppression per image and class; the kept detections as flat lists
 *   `detection_boxes` [K, 4], `detection_scores` [K], `detection_classes` [K] (int64, 1-based like the label
 *   map) and `detection_batch` [K] (int64, the image of each), per image and class by decreasing score.
 *   NonMaxSuppression caps each class (maxPerClass), not each image: keep an image's top N outside if needed.
 */
import onnxProto from 'onnx-proto';
import { attrInt, attrInts, decodeOnnx, tensor, valueInfo } from './export.js';
import { BOXES, DETECTION_LOGITS } from '../../model/ssdlite.js';
import type { Anchors } from '../../detect/anchors.js';
import type { BoxCoder } from '../../detect/box-coder.js';
import { STYLE_CODER, STYLE_NMS, type SsdStyle } from '../../detect/postprocess.js';

const { onnx } = onnxProto;
type INodeProto = onnxProto.onnx.INodeProto;
const INT64 = onnx.TensorProto.DataType.INT64;
const FLOAT = onnx.TensorProto.DataType.FLOAT;

export type DetectPostprocess = 'none' | 'decode' | 'nms';
export const DETECT_POSTPROCESS: readonly DetectPostprocess[] = ['none', 'decode', 'nms'];

export interface GraphPostprocessOptions {
  mode: Exclude<DetectPostprocess, 'none'>;
  /** The model's SSD style (its config's ssdStyle). Default tf. */
  style?: SsdStyle;
  anchors: Anchors;
  /** Foreground classes C. */
  numClasses: number;
  /** Box coder scales (y, x, h, w); default (10, 10, 5, 5). */
  scales?: BoxCoder['scales'];
  /** nms: keep scores > this, suppress IoU > iouThreshold, ≤ maxPerClass per class (defaults: the style's, tf 1e-8, 0.6, 100). */
  scoreThreshold?: number;
  iouThreshold?: number;
  maxPerClass?: number;
}

/** The exported detector (ONNX bytes with `boxes` and `logits` outputs) with its post-processing in the graph. */
export function addDetectPostprocess(bytes: Uint8Array, o: GraphPostprocessOptions): Uint8Array {
  const model = decodeOnnx(bytes, 'detector export');
  const g = model.graph as onnxProto.onnx.GraphProto;
  const outs = new Set(g.output.map((v) => v.name));
  if (!outs.has(BOXES) || !outs.has(DETECTION_LOGITS)) throw new Error(`detector post-processing: the model has no '${BOXES}' and '${DETECTION_LOGITS}' outputs`);
  const A = o.anchors.count;
  const nodes: INodeProto[] = [];
  const add = (opType: string, input: string[], output: string, attribute: onnxProto.onnx.IAttributeProto[] = []): string => {
    nodes.push({ name: output, opType, input, output: [output], attribute });
    return output;
  };
  const f32 = (name: string, dims: number[], data: ArrayLike<number>): string => {
    g.initializer.push(onnx.TensorProto.create(tensor(name, dims, data, false)));
    return name;
  };
  const i64 = (name: string, values: readonly number[], dims = [values.length]): string => {
    g.initializer.push(onnx.TensorProto.create({ name, dims, dataType: INT64, rawData: new Uint8Array(BigInt64Array.from(values, BigInt).buffer) }));
    return name;
  };

  // Decode: t = codes / scales, split into the four components [B, A, 1] in the coder's order; anchors as ya, xa, ha, wa [A, 1].
  const style = o.style ?? 'tf';
  const coder = STYLE_CODER[style];
  const [sy, sx, sh, sw] = o.scales ?? coder.scales;
  const yxhw = coder.order === 'yxhw';
  const t = add('Div', [BOXES, f32('pp.scales', [4], yxhw ? [sy, sx, sh, sw] : [sx, sy, sw, sh])], 'pp.t');
  const parts = yxhw ? ['pp.ty', 'pp.tx', 'pp.th', 'pp.tw'] : ['pp.tx', 'pp.ty', 'pp.tw', 'pp.th'];
  nodes.push({ name: 'pp.split', opType: 'Split', input: [t, i64('pp.split4', [1, 1, 1, 1])], output: parts, attribute: [attrInt('axis', 2)] });
  const [ya, xa, ha, wa] = [0, 1, 2, 3].map((k) => f32(`pp.anchor${'yxhw'[k]}`, [A, 1], Float32Array.from({ length: A }, (_, a) => o.anchors.center[4 * a + k]!)));
  const yc = add('Add', [add('Mul', ['pp.ty', ha!], 'pp.ty_ha'), ya!], 'pp.yc');
  const xc = add('Add', [add('Mul', ['pp.tx', wa!], 'pp.tx_wa'), xa!], 'pp.xc');
  const half = f32('pp.half', [], [0.5]);
  // torchvision clamps the log-sizes before exp (bbox_xform_clip); TF does not.
  const logSize = (v: string): string => (Number.isFinite(coder.maxLogScale) ? add('Min', [v, f32(`${v}.max`, [], [coder.maxLogScale])], `${v}.clamped`) : v);
  const hh = add('Mul', [add('Mul', [add('Exp', [logSize('pp.th')], 'pp.exp_th'), ha!], 'pp.h'), half], 'pp.h2');
  const hw = add('Mul', [add('Mul', [add('Exp', [logSize('pp.tw')], 'pp.exp_tw'), wa!], 'pp.w'), half], 'pp.w2');
  const corners = [add('Sub', [xc, hw], 'pp.x1'), add('Sub', [yc, hh], 'pp.y1'), add('Add', [xc, hw], 'pp.x2'), add('Add', [yc, hh], 'pp.y2')];
  const scores = style === 'tf' ? add('Sigmoid', [DETECTION_LOGITS], 'scores') : add('Softmax', [DETECTION_LOGITS], 'scores', [attrInt('axis', 2)]);
  const nmsDefaults = STYLE_NMS[style];
  const newOutputs = [];
  if (o.mode === 'decode') {
    add('Concat', corners, 'decoded_boxes', [attrInt('axis', 2)]);
    newOutputs.push(valueInfo('decoded_boxes', ['batch', A, 4]), valueInfo(scores, ['batch', A, o.numClasses + 1]));
  } else {
    const [lo, hi] = [f32('pp.zero', [], [0]), f32('pp.one', [], [1])];
    const [x1, y1, x2, y2] = corners.map((c) => add('Clip', [c, lo, hi], `${c}.clip`)) as [string, string, string, string];
    const boxes = add('Concat', [x1, y1, x2, y2], 'pp.boxes', [attrInt('axis', 2)]);
    const positive = (a: string, b: string, name: string): string => add('Greater', [add('Sub', [a, b], `${name}.d`), lo], name);
    const valid = add('Cast', [add('And', [positive(x2, x1, 'pp.wpos'), positive(y2, y1, 'pp.hpos')], 'pp.valid')], 'pp.validf', [attrInt('to', FLOAT)]);
    const fg = add('Slice', [scores, i64('pp.fg.start', [1]), i64('pp.fg.end', [o.numClasses + 1]), i64('pp.fg.axis', [2])], 'pp.fg');
    const masked = add('Mul', [fg, valid], 'pp.fg.masked');
    const byClass = add('Transpose', [masked], 'pp.scores_bca', [attrInts('perm', [0, 2, 1])]);
    const sel = add('NonMaxSuppression', [
      boxes, byClass, i64('pp.max_per_class', [o.maxPerClass ?? Math.min(A, nmsDefaults.maxPerClass)]),
      f32('pp.iou', [1], [o.iouThreshold ?? nmsDefaults.iouThreshold]), f32('pp.score', [1], [o.scoreThreshold ?? nmsDefaults.scoreThreshold]),
    ], 'pp.selected', [attrInt('center_point_box', 0)]);
    add('GatherND', [boxes, add('Gather', [sel, i64('pp.batch_box', [0, 2])], 'pp.sel_bb', [attrInt('axis', 1)])], 'detection_boxes');
    add('GatherND', [byClass, sel], 'detection_scores');
    add('Add', [add('Gather', [sel, i64('pp.col1', [1], [])], 'pp.class0', [attrInt('axis', 1)]), i64('pp.one_i', [1], [])], 'detection_classes');
    add('Gather', [sel, i64('pp.col0', [0], [])], 'detection_batch', [attrInt('axis', 1)]);
    newOutputs.push(
      valueInfo('detection_boxes', ['detections', 4]), valueInfo('detection_scores', ['detections']),
      valueInfo('detection_classes', ['detections'], INT64), valueInfo('detection_batch', ['detections'], INT64),
    );
  }
  g.node.push(...nodes.map((n) => onnx.NodeProto.create(n)));
  // The raw outputs stay values of the graph; the post-processed ones replace them as outputs.
  g.output = newOutputs.map((v) => onnx.ValueInfoProto.create(v));
  return onnx.ModelProto.encode(model).finish();
}
