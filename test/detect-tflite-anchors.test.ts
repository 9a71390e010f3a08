/** The anchors against the ones a real TF OD API export carries: the clownfish SSDLite-MobileNetV2's TFLite file. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dequantize, readTflite } from '../src/io/tflite.js';
import { toObject } from 'flatbuffers/js/flexbuffers.js';
import { ssdAnchors } from '../src/detect/anchors.js';
import { TF_BOX_CODER } from '../src/detect/box-coder.js';
import { SSDLITE_NMS } from '../src/detect/nms.js';

const MODEL = new URL('../../../shared/data/detection/clownfish-ssdlite/ssdlite_mobilenet_v2_clownfish.tflite', import.meta.url).pathname;
const skip = existsSync(MODEL) ? false : `${MODEL} is absent (the shared reference data is not on this machine)`;

test('1917 anchors at 300×300 equal the model\'s TFLite_Detection_PostProcess anchor input up to its uint8 rounding', { skip }, () => {
  const sg = readTflite(MODEL).subgraphs[0]!;
  const op = sg.operators.find((o) => o.opcode === 'TFLite_Detection_PostProcess');
  assert.ok(op, 'the model has a TFLite_Detection_PostProcess op');
  const t = sg.tensors[op.inputs[2]!]!;
  assert.deepEqual(t.shape, [1917, 4]);
  assert.equal(t.type, 'uint8');
  const ref = dequantize(t, MODEL);
  const step = t.quantization!.scale[0]!;
  const ours = ssdAnchors({ height: 300, width: 300 }).center;
  let worst = 0;
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ours[i]! - ref[i]!));
  // Every value within half a quantization step (0.00323) of the formula: the same anchors, in the same order.
  assert.ok(worst <= step / 2 + 1e-6, `max |diff| ${worst} > half step ${step / 2}`);
  // Stronger: quantized with the model's own scale (zero point 0), all 7668 values give exactly the stored bytes.
  assert.equal(t.quantization!.zeroPoint[0], 0);
  let equal = 0;
  for (let i = 0; i < ours.length; i++) if (Math.round(ours[i]! / step) === t.data![i]) equal++;
  assert.equal(equal, 4 * 1917);
});

test('the model\'s post-process options are the box coder\'s scales and SSDLITE_NMS', { skip }, () => {
  const op = readTflite(MODEL).subgraphs[0]!.operators.find((o) => o.opcode === 'TFLite_Detection_PostProcess')!;
  // Decoded from a copy of the bytes: FlexBuffers reads from the end of the ArrayBuffer it is given.
  const opt = toObject(new Uint8Array(op.customOptionsBytes!).buffer) as Record<string, number | boolean>;
  assert.deepEqual([opt.y_scale, opt.x_scale, opt.h_scale, opt.w_scale], [...TF_BOX_CODER.scales]);
  assert.ok(Math.abs((opt.nms_iou_threshold as number) - SSDLITE_NMS.iouThreshold) < 1e-7);
  assert.ok(Math.abs((opt.nms_score_threshold as number) - SSDLITE_NMS.scoreThreshold) < 1e-15);
  assert.equal(opt.detections_per_class, SSDLITE_NMS.maxPerClass);
  assert.equal(opt.num_classes, 1);
});
