/**
 * keras.applications.MobileNetV2 and MobileNet rebuilt with the tfjs-layers API, layer for layer (names,
 * ZeroPadding2D ((0, 1), (0, 1)) + 'valid' before stride-2 depthwise convs, stems 'same', BN eps 1e-3, ReLU(6)),
 * so the import tests have a reference that shares no code with src/model. Weights are seeded random, BN
 * statistics non-trivial.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { Rng } from '../../src/util/rng.js';

await tf.setBackend('cpu');

export { tf, tfl };

/** Keras's _make_divisible (the same rule as torchvision's, written out again here on purpose). */
function makeDivisible(v: number, divisor = 8): number {
  let nv = Math.max(divisor, Math.floor((v + divisor / 2) / divisor) * divisor);
  if (nv < 0.9 * v) nv += divisor;
  return nv;
}

export interface KerasModelOptions {
  alpha: number;
  rows: number;
  /** Dense head size; 0 = include_top=False. */
  classes: number;
  headName?: string;
  /** Put the backbone in a nested model with GlobalAveragePooling + Dropout + Dense outside (transfer learning). */
  nested?: boolean;
  /** Use 'same' instead of ZeroPadding2D + 'valid' on stride-2 depthwise convs (equivalent on even sizes). */
  samePadding?: boolean;
  /** Break the model: symmetric (1, 1) padding before stride-2 depthwise convs. */
  symmetricPad?: boolean;
  /** Nested only: Dense layers between the pooling and the classifier (as nsfwjs's 1280 -> 256 -> 128 -> 5 head). */
  hidden?: HiddenDense[];
  /** Activation of the classifier Dense (default linear: logits). */
  finalActivation?: 'linear' | 'softmax';
}

/** A hidden Dense layer; `activationLayer` puts its activation in a separate ReLU layer after a linear Dense. */
export interface HiddenDense {
  units: number;
  activation: 'relu' | 'relu6' | 'sigmoid' | 'linear' | 'tanh';
  dropout?: number;
  activationLayer?: boolean;
}

type SymT = tfl.SymbolicTensor;

/** The Keras model (Dense with a linear activation, so outputs are logits). */
export function kerasMobileNetV2(o: KerasModelOptions): tfl.LayersModel {
  const { alpha, rows } = o;
  const bn = (name: string) => tfl.layers.batchNormalization({ epsilon: 1e-3, momentum: 0.999, name });
  const relu6 = (name: string) => tfl.layers.reLU({ maxValue: 6, name });
  const input = tfl.input({ shape: [rows, rows, 3], name: 'input_1' });
  let x = tfl.layers.conv2d({ filters: makeDivisible(32 * alpha), kernelSize: 3, strides: 2, padding: 'same', useBias: false, name: 'Conv1' }).apply(input) as SymT;
  x = relu6('Conv1_relu').apply(bn('bn_Conv1').apply(x)) as SymT;

  const block = (inp: SymT, filters: number, stride: number, expansion: number, id: number): SymT => {
    const inC = inp.shape[3]!;
    const outC = makeDivisible(Math.trunc(filters * alpha));
    let y = inp;
    let prefix = `block_${id}_`;
    if (id) {
      y = tfl.layers.conv2d({ filters: expansion * inC, kernelSize: 1, padding: 'same', useBias: false, name: `${prefix}expand` }).apply(y) as SymT;
      y = relu6(`${prefix}expand_relu`).apply(bn(`${prefix}expand_BN`).apply(y)) as SymT;
    } else {
      prefix = 'expanded_conv_';
    }
    let padding: 'same' | 'valid' = 'same';
    if (stride === 2 && !o.samePadding) {
      // imagenet_utils.correct_pad on an even size: ((0, 1), (0, 1)).
      const pad: [[number, number], [number, number]] = o.symmetricPad ? [[1, 1], [1, 1]] : [[0, 1], [0, 1]];
      y = tfl.layers.zeroPadding2d({ padding: pad, name: `${prefix}pad` }).apply(y) as SymT;
      padding = 'valid';
    }
    y = tfl.layers.depthwiseConv2d({ kernelSize: 3, strides: stride, padding, useBias: false, name: `${prefix}depthwise` }).apply(y) as SymT;
    y = relu6(`${prefix}depthwise_relu`).apply(bn(`${prefix}depthwise_BN`).apply(y)) as SymT;
    y = tfl.layers.conv2d({ filters: outC, kernelSize: 1, padding: 'same', useBias: false, name: `${prefix}project` }).apply(y) as SymT;
    y = bn(`${prefix}project_BN`).apply(y) as SymT;
    return inC === outC && stride === 1 ? (tfl.layers.add({ name: `${prefix}add` }).apply([inp, y]) as SymT) : y;
  };
  const settings: [number, number, number, number][] = [
    [16, 1, 1, 0], [24, 2, 6, 1], [24, 1, 6, 2], [32, 2, 6, 3], [32, 1, 6, 4], [32, 1, 6, 5], [64, 2, 6, 6], [64, 1, 6, 7], [64, 1, 6, 8],
    [64, 1, 6, 9], [96, 1, 6, 10], [96, 1, 6, 11], [96, 1, 6, 12], [160, 2, 6, 13], [160, 1, 6, 14], [160, 1, 6, 15], [320, 1, 6, 16],
  ];
  for (const [f, s, t, id] of settings) x = block(x, f, s, t, id);
  x = tfl.layers.conv2d({ filters: alpha > 1 ? makeDivisible(1280 * alpha) : 1280, kernelSize: 1, useBias: false, name: 'Conv_1' }).apply(x) as SymT;
  x = relu6('out_relu').apply(bn('Conv_1_bn').apply(x)) as SymT;
  const name = `mobilenetv2_${alpha.toFixed(2)}_${rows}`;
  const head = (y: SymT): SymT => {
    y = tfl.layers.globalAveragePooling2d({}).apply(y) as SymT;
    return tfl.layers.dense({ units: o.classes, name: o.headName ?? 'predictions' }).apply(y) as SymT;
  };
  if (!o.nested) return tfl.model({ inputs: input, outputs: o.classes ? head(x) : x, name });
  const base = tfl.model({ inputs: input, outputs: x, name });
  const hidden = (o.hidden ?? []).flatMap((h) => {
    const sep = h.activationLayer && (h.activation === 'relu' || h.activation === 'relu6');
    const dense = tfl.layers.dense({ units: h.units, activation: sep ? 'linear' : h.activation });
    const act = sep ? [tfl.layers.reLU(h.activation === 'relu6' ? { maxValue: 6 } : {})] : [];
    return [dense, ...act, ...(h.dropout ? [tfl.layers.dropout({ rate: h.dropout })] : [])];
  });
  return tfl.sequential({
    layers: [base, tfl.layers.globalAveragePooling2d({}), tfl.layers.dropout({ rate: 0.25 }), ...hidden,
      tfl.layers.dense({ units: o.classes, name: o.headName ?? 'dense', activation: o.finalActivation ?? 'linear' })],
  });
}

export interface KerasV1Options {
  alpha: number;
  rows: number;
  /** conv_preds size; 0 = include_top=False. */
  classes: number;
  /** Keras 2.2's stem: ZeroPadding2D conv1_pad ((0, 1), (0, 1)) + 'valid' instead of 'same'. */
  stemPad?: boolean;
  /** Break the model: symmetric (1, 1) padding before stride-2 depthwise convs. */
  symmetricPad?: boolean;
}

/**
 * keras.applications.MobileNet (V1): _conv_block conv1, 13 _depthwise_conv_block (conv_pad_N before the stride-2
 * ones, conv_dw_N, conv_pw_N, each with BN `_bn` and ReLU6 `_relu`), then GlobalAveragePooling2D, Reshape,
 * Dropout(1e-3), the 1x1 Conv2D conv_preds with bias, Reshape to logits (the softmax left out).
 */
export function kerasMobileNetV1(o: KerasV1Options): tfl.LayersModel {
  const { alpha, rows } = o;
  const bnRelu6 = (x: SymT, name: string): SymT =>
    tfl.layers.reLU({ maxValue: 6, name: `${name}_relu` }).apply(tfl.layers.batchNormalization({ epsilon: 1e-3, momentum: 0.99, name: `${name}_bn` }).apply(x)) as SymT;
  const input = tfl.input({ shape: [rows, rows, 3], name: 'input_1' });
  const stemIn = o.stemPad ? (tfl.layers.zeroPadding2d({ padding: [[0, 1], [0, 1]], name: 'conv1_pad' }).apply(input) as SymT) : input;
  const conv1 = tfl.layers.conv2d({ filters: Math.trunc(32 * alpha), kernelSize: 3, strides: 2, padding: o.stemPad ? 'valid' : 'same', useBias: false, name: 'conv1' });
  let x = bnRelu6(conv1.apply(stemIn) as SymT, 'conv1');
  // [pointwise filters, stride] of block_id 1..13, as keras's mobilenet.py lists them.
  const blocks: [number, number][] = [[64, 1], [128, 2], [128, 1], [256, 2], [256, 1], [512, 2], [512, 1], [512, 1], [512, 1], [512, 1], [512, 1], [1024, 2], [1024, 1]];
  blocks.forEach(([filters, stride], i) => {
    const id = i + 1;
    if (stride === 2) {
      const pad: [[number, number], [number, number]] = o.symmetricPad ? [[1, 1], [1, 1]] : [[0, 1], [0, 1]];
      x = tfl.layers.zeroPadding2d({ padding: pad, name: `conv_pad_${id}` }).apply(x) as SymT;
    }
    x = tfl.layers.depthwiseConv2d({ kernelSize: 3, strides: stride, padding: stride === 1 ? 'same' : 'valid', useBias: false, name: `conv_dw_${id}` }).apply(x) as SymT;
    x = bnRelu6(x, `conv_dw_${id}`);
    x = tfl.layers.conv2d({ filters: Math.trunc(filters * alpha), kernelSize: 1, padding: 'same', useBias: false, name: `conv_pw_${id}` }).apply(x) as SymT;
    x = bnRelu6(x, `conv_pw_${id}`);
  });
  const name = `mobilenet_${alpha.toFixed(2)}_${rows}`;
  if (!o.classes) return tfl.model({ inputs: input, outputs: x, name });
  const c = x.shape[3]!;
  x = tfl.layers.globalAveragePooling2d({}).apply(x) as SymT;
  x = tfl.layers.reshape({ targetShape: [1, 1, c], name: 'reshape_1' }).apply(x) as SymT;
  x = tfl.layers.dropout({ rate: 1e-3, name: 'dropout' }).apply(x) as SymT;
  x = tfl.layers.conv2d({ filters: o.classes, kernelSize: 1, padding: 'same', name: 'conv_preds' }).apply(x) as SymT;
  x = tfl.layers.reshape({ targetShape: [o.classes], name: 'reshape_2' }).apply(x) as SymT;
  return tfl.model({ inputs: input, outputs: x, name });
}

/** Seeded weights: He-normal kernels, BN gamma in [0.5, 1.5), beta/mean N(0, 0.2), variance in [0.5, 2). */
export function randomizeWeights(model: tfl.LayersModel, seed: number): void {
  const rng = new Rng(seed);
  const values = model.weights.map((w) => {
    const shape = w.shape as number[];
    const n = shape.reduce((a, b) => a * b, 1);
    const kind = w.originalName.split('/').pop()!;
    const v = new Float32Array(n);
    const fanIn = shape.length === 4 ? shape[0]! * shape[1]! * (kind === 'depthwise_kernel' ? 1 : shape[2]!) : shape[0]!;
    for (let i = 0; i < n; i++) {
      if (kind === 'kernel' || kind === 'depthwise_kernel') v[i] = rng.normal() * Math.sqrt(2 / fanIn);
      else if (kind === 'gamma') v[i] = 0.5 + rng.uniform();
      else if (kind === 'moving_variance') v[i] = 0.5 + 1.5 * rng.uniform();
      else v[i] = 0.2 * rng.normal();
    }
    return tf.tensor(v, shape);
  });
  model.setWeights(values);
  tf.dispose(values);
}

/** The model's artifacts as tfjs saves them (topology, weight specs, one weight buffer). */
export async function saveArtifacts(model: tfl.LayersModel): Promise<tf.io.ModelArtifacts> {
  let art: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      art = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  return art!;
}

/** Logits [N, classes] of NHWC input, by tfjs-layers on the CPU backend. */
export function tfjsPredict(model: tfl.LayersModel, nhwc: Float32Array, batch: number, rows: number): Float32Array {
  return tf.tidy(() => (model.predict(tf.tensor(nhwc, [batch, rows, rows, 3])) as tf.Tensor).dataSync() as Float32Array);
}

/** NCHW -> NHWC. */
export function toNhwc(nchw: Float32Array, batch: number, c: number, h: number, w: number): Float32Array {
  const out = new Float32Array(nchw.length);
  for (let n = 0; n < batch; n++)
    for (let ch = 0; ch < c; ch++)
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[((n * h + y) * w + x) * c + ch] = nchw[((n * c + ch) * h + y) * w + x]!;
  return out;
}
