/** The generic TFLite reader: a flatbuffer written by test/helpers/tflite-builder.ts, corrupt files, the real TF-slim model. */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { dequantize, parseTflite, readTflite } from '../src/io/tflite.js';
import { buildTflite } from './helpers/tflite-builder.js';

const f32 = (xs: number[]) => new Uint8Array(Float32Array.from(xs).buffer);
const spec = {
  tensors: [
    { name: 'input', shape: [1, 4, 4, 2], type: 3, quant: { scale: [1 / 128], zeroPoint: [128] } },
    // per-tensor uint8 weights [O=2, H=1, W=1, I=2]
    { name: 'conv/weights', shape: [2, 1, 1, 2], type: 3, data: Uint8Array.of(0, 10, 20, 255), quant: { scale: [0.5], zeroPoint: [10] } },
    // per-axis int8 weights, scales along axis 0
    { name: 'dw/weights', shape: [2, 3], type: 9, data: new Uint8Array(Int8Array.of(-1, 0, 1, -128, 2, 127).buffer), quant: { scale: [0.25, 2], zeroPoint: [0, 0], axis: 0 } },
    { name: 'bias', shape: [2], type: 0, data: f32([1.5, -2]) },
    { name: 'out', shape: [1, 2, 2, 2], type: 3 },
    { name: 'boxes', shape: [1, 10, 4], type: 0 },
  ],
  ops: [
    { builtin: 3, inputs: [0, 1, 3], outputs: [4], options: { type: 1, ints: [0, 2, 2, 3] } },
    { builtin: 32, custom: 'TFLite_Detection_PostProcess', inputs: [4, 2, -1], outputs: [5], customOptions: { max_detections: 10, nms_iou_threshold: 0.5, use_regular_nms: false } },
  ],
  inputs: [0],
  outputs: [5],
};

test('tensors, quantization (per tensor and per axis), builtin and custom ops with FlexBuffers options', () => {
  const m = parseTflite(buildTflite(spec), 'mem.tflite');
  assert.equal(m.version, 3);
  assert.equal(m.description, 'test model');
  const g = m.subgraphs[0]!;
  assert.equal(g.name, 'main');
  assert.deepEqual([g.inputs, g.outputs], [[0], [5]]);
  assert.deepEqual(g.tensors.map((t) => [t.name, t.type, t.shape.join('x'), t.data?.length ?? 0]), [
    ['input', 'uint8', '1x4x4x2', 0], ['conv/weights', 'uint8', '2x1x1x2', 4], ['dw/weights', 'int8', '2x3', 6],
    ['bias', 'float32', '2', 8], ['out', 'uint8', '1x2x2x2', 0], ['boxes', 'float32', '1x10x4', 0],
  ]);
  assert.deepEqual(g.tensors[0]!.quantization, { scale: Float32Array.of(1 / 128), zeroPoint: [128], axis: 0 });
  assert.deepEqual([...dequantize(g.tensors[1]!, 'mem')], [-5, 0, 5, 122.5]);
  assert.deepEqual([...dequantize(g.tensors[2]!, 'mem')], [-0.25, 0, 0.25, -256, 4, 254]);
  assert.deepEqual([...dequantize(g.tensors[3]!, 'mem')], [1.5, -2]);
  const [conv, post] = g.operators;
  assert.equal(conv!.opcode, 'CONV_2D');
  assert.deepEqual(conv!.options, { padding: 'SAME', strideW: 2, strideH: 2, activation: 'RELU6', dilationW: 1, dilationH: 1 });
  assert.deepEqual(conv!.inputs, [0, 1, 3]);
  assert.equal(post!.opcode, 'TFLite_Detection_PostProcess');
  assert.equal(post!.custom, true);
  assert.deepEqual(post!.inputs, [4, 2, -1]);
  assert.deepEqual(post!.customOptions, { max_detections: 10, nms_iou_threshold: 0.5, use_regular_nms: false });
});

test('corrupt TFLite files are clear errors naming the file', () => {
  const good = buildTflite(spec);
  assert.throws(() => parseTflite(good.subarray(0, 6), 'short.tflite'), /^Error: short.tflite: not a TFLite model/);
  assert.throws(() => parseTflite(Uint8Array.of(8, 0, 0, 0, 0x54, 0x46, 0x4c, 0x33), 'x.tflite'), /x.tflite: corrupt flatbuffer/);
  // cut anywhere past the header: an error about the file, never a RangeError or garbage
  for (const n of [12, 40, Math.floor(good.length / 2), good.length - 20]) {
    assert.throws(() => parseTflite(good.slice(0, n), 'cut.tflite'), (e: Error) => e.message.startsWith('cut.tflite: '), `cut at ${n}`);
  }
  assert.throws(() => readTflite('/nonexistent/m.tflite'), /\/nonexistent\/m.tflite: cannot read file/);
});

const REAL = '../shared/data/imagenet/weights/mobilenet_v2_1.0_224_quant.tflite';
test('the real TF-slim MobileNetV2 uint8 model', { skip: existsSync(REAL) ? false : `${REAL} not present` }, () => {
  const g = readTflite(REAL).subgraphs[0]!;
  assert.equal(g.operators.length, 66);
  const count = (op: string) => g.operators.filter((o) => o.opcode === op).length;
  assert.deepEqual([count('CONV_2D'), count('DEPTHWISE_CONV_2D'), count('ADD'), count('AVERAGE_POOL_2D'), count('RESHAPE'), count('SOFTMAX')], [36, 17, 10, 1, 1, 1]);
  const input = g.tensors[g.inputs[0]!]!;
  assert.deepEqual([input.shape, input.type, input.quantization!.zeroPoint], [[1, 224, 224, 3], 'uint8', [128]]);
  assert.ok(Math.abs(input.quantization!.scale[0]! - 1 / 128) < 1e-6);
  assert.deepEqual(g.tensors[g.outputs[0]!]!.shape, [1, 1001]);
});
