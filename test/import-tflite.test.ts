/**
 * `mnv2 import tflite`: the real TF-slim uint8 MobileNetV2 (../shared/data, when present) classifies the 14 real
 * photos into their accepted classes on both engines, and agrees with Arm NN (python3-pyarmnn) running the
 * TFLite file itself; a TFLite file that is not a MobileNetV2 is a clear error.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { createClassifier, topK } from '../src/engine/classifier.js';
import { IMAGENET_BACKGROUND_LABELS } from '../src/data/labels.js';
import { loadImages, preset } from '../src/data/preprocess.js';
import { importTflite } from '../src/io/tflite-mobilenetv2.js';
import { loadWeights } from '../src/io/weights.js';
import { buildTflite } from './helpers/tflite-builder.js';
import { assertAllAccepted, CLI, photos, predictPhotos, REPO, sharedSkip, SHARED_IMAGENET } from './helpers/imagenet-photos.js';

const MODEL = 'weights/mobilenet_v2_1.0_224_quant.tflite';
const skip = sharedSkip(MODEL);
const tmp = mkdtempSync(path.join(tmpdir(), 'mnv2-tflite-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const out = path.join(tmp, 'tflite.safetensors');
let imported = false;
function importOnce(): string {
  if (!imported) {
    execFileSync(process.execPath, [CLI, 'import', 'tflite', path.join(SHARED_IMAGENET, MODEL), '--out', out], { stdio: 'pipe' });
    imported = true;
  }
  return out;
}

for (const engine of ['native', 'ort'] as const) {
  test(`TF-slim uint8 TFLite: all 14 photos in their accepted classes (${engine})`, { skip }, () => {
    const w = importOnce();
    const m = loadWeights(w);
    assert.deepEqual([m.graph.config.numClasses, m.graph.config.padding, m.metadata['mnv2.preprocess']], [1001, 'keras', 'tf-slim']);
    const probs = assertAllAccepted(predictPhotos(['--weights', w, '--engine', engine]), IMAGENET_BACKGROUND_LABELS, 1);
    console.error(`${engine}: top-1 probabilities ${probs.map((p) => p.toFixed(3)).join(' ')}`);
  });
}

// Arm NN needs its CpuRef backend package besides python3-pyarmnn
const ARMNN_PROBE = 'import warnings; warnings.simplefilter("ignore"); import pyarmnn as a; r = a.IRuntime(a.CreationOptions()); assert "CpuRef" in str(r.GetDeviceSpec())';
const pyarmnn = spawnSync('/usr/bin/python3', ['-c', ARMNN_PROBE], { stdio: 'ignore' }).status === 0;
test('agrees with Arm NN running the TFLite file (python3-pyarmnn) on 3 photos', { skip: skip || (pyarmnn ? false : 'python3-pyarmnn with libarmnn-cpuref-backend22 is not installed') }, async () => {
  const w = importOnce();
  const files = photos().slice(0, 3).map((p) => p.file);
  const p = preset('tf-slim');
  const nchw = await loadImages(files, p);
  // The model's uint8 input is x · 128 + 128 (scale 1/128, zero point 128), NHWC
  const plane = p.size * p.size;
  const q = new Uint8Array(files.length * plane * 3);
  for (let n = 0; n < files.length; n++) {
    for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) q[(n * plane + i) * 3 + c] = Math.min(255, Math.max(0, Math.round(nchw[(n * 3 + c) * plane + i]! * 128 + 128)));
  }
  // Our model gets the same quantized input back in [-1, 1]
  const input = new Float32Array(nchw.length);
  for (let n = 0; n < files.length; n++) {
    for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) input[(n * 3 + c) * plane + i] = (q[(n * plane + i) * 3 + c]! - 128) / 128;
  }
  writeFileSync(path.join(tmp, 'in.bin'), q);
  execFileSync('/usr/bin/python3', [path.join(REPO, 'tools', 'tflite-reference.py'), path.join(SHARED_IMAGENET, MODEL), path.join(tmp, 'in.bin'), String(files.length), path.join(tmp, 'ref.json')], { stdio: 'pipe' });
  const ref = (JSON.parse(readFileSync(path.join(tmp, 'ref.json'), 'utf8')) as { outputs: number[][] }).outputs;
  const m = loadWeights(w);
  const clf = await createClassifier(m.graph, m.weights, 'native');
  const logits = await clf.run(input, files.length);
  await clf.release();
  let worst = 0;
  for (let n = 0; n < files.length; n++) {
    const ours = topK(logits, 1001, n, 1001);
    const probs = new Float64Array(1001);
    for (const t of ours) probs[t.index] = t.prob;
    const theirs = [...ref[n]!.keys()].sort((a, b) => ref[n]![b]! - ref[n]![a]!);
    assert.equal(ours[0]!.index, theirs[0], `${path.basename(files[n]!)}: top-1 ${ours[0]!.index} vs Arm NN ${theirs[0]}`);
    // the top 3 hold > 99 % of the mass on these photos; further down Arm NN's uint8 output is mostly 0 and ties
    assert.deepEqual(ours.slice(0, 3).map((t) => t.index).sort(), theirs.slice(0, 3).sort(), `${path.basename(files[n]!)}: top-3 classes`);
    for (let k = 0; k < 1001; k++) worst = Math.max(worst, Math.abs(probs[k]! - ref[n]![k]!));
  }
  console.error(`max |p - p_armnn| = ${worst.toFixed(4)}`);
  // float32 inference of the dequantized weights vs Arm NN's uint8 arithmetic (outputs in steps of 1/256); measured 0.028
  assert.ok(worst < 0.05, `max probability difference ${worst}`);
});

test('a TFLite file whose convs are not MobileNetV2 layers is refused, naming the file and the op', () => {
  const file = path.join(tmp, 'other.tflite');
  writeFileSync(file, buildTflite({
    tensors: [
      { name: 'input', shape: [1, 8, 8, 3], type: 0 },
      { name: 'my_net/conv/weights', shape: [4, 3, 3, 3], type: 0, data: new Uint8Array(4 * 27 * 4) },
      { name: 'out', shape: [1, 4, 4, 4], type: 0 },
    ],
    ops: [{ builtin: 3, inputs: [0, 1, -1], outputs: [2], options: { type: 1, ints: [0, 2, 2, 3] } }],
    inputs: [0],
    outputs: [2],
  }));
  assert.throws(() => importTflite(file), (e: Error) => {
    assert.ok(e.message.startsWith(`${file}: operator 0 (CONV_2D, weights 'my_net/conv/weights'): not a MobileNetV2 layer name`), e.message);
    return true;
  });
});
