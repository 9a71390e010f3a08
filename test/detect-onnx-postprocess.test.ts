/**
 * Detector ONNX export with the post-processing in the graph (src/engine/onnx/detect-postprocess.ts) against the
 * TS post-processing (src/detect/postprocess.ts) of the raw export's outputs, on ONNX Runtime: a tiny random
 * SSDLite (129 px, 483 anchors, 3 classes), a batch of 2.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { archConfig, buildModel } from '../src/model/registry.js';
import { initWeights } from '../src/model/weights.js';
import { saveWeights } from '../src/io/weights.js';
import { exportOnnx } from '../src/engine/onnx/export.js';
import { addDetectPostprocess } from '../src/engine/onnx/detect-postprocess.js';
import { ssdAnchors } from '../src/detect/anchors.js';
import { decodeBoxes } from '../src/detect/box-coder.js';
import { postprocessSsd, scoresOf, SSD_STYLES, STYLE_CODER, type SsdStyle } from '../src/detect/postprocess.js';
import { Rng } from '../src/util/rng.js';
import { loadImage } from '../src/data/preprocess.js';
import { detectorPreset, openSsdliteFile } from '../src/detect/ssdlite-detector.js';
import { maxAbsDiff } from './helpers/fixtures.js';
import { CLI } from './helpers/imagenet-photos.js';

const RES = 129;
const C = 3;
const graph = buildModel(archConfig('ssdlite', { resolution: RES, numClasses: C, alpha: 0.35 }));
const weights = initWeights(graph, 11);
// Random-init features are ~1e-4 here: scale the class predictors (×1e5) so both styles' scores spread out instead of crowding at 1/2 and 1/(C+1).
for (const [k, v] of weights) if (/^head\.classification_head\.module_list\.\d+\.1\.weight$/.test(k)) v.forEach((x, i) => (v[i] = 1e5 * x));
const anchors = ssdAnchors({ height: RES, width: RES });
const A = anchors.count;
const rng = new Rng(4);
const input = Float32Array.from({ length: 2 * 3 * RES * RES }, () => rng.uniform() * 2 - 1);

async function run(bytes: Uint8Array): Promise<ort.InferenceSession.OnnxValueMapType> {
  const s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1 });
  try {
    return await s.run({ input: new ort.Tensor('float32', input, [2, 3, RES, RES]) });
  } finally {
    await s.release();
  }
}

const raw = exportOnnx(graph, weights);

/** The midpoint of the first gap wider than 1e-5 between sorted scores above `from`. */
function gapAbove(scores: Float32Array, from: number): number {
  const v = Float32Array.from(scores).sort().filter((x) => x > from);
  for (let i = 1; i < v.length; i++) if (v[i]! - v[i - 1]! > 1e-5) return (v[i]! + v[i - 1]!) / 2;
  throw new Error(`no gap in the scores above ${from}`);
}

for (const style of SSD_STYLES) {
  test(`decode in the graph (${style} style) = decodeBoxes (its coder) and its scores of the raw outputs, per image`, async () => {
    const r = await run(raw);
    const codes = r['boxes']!.data as Float32Array;
    const logits = r['logits']!.data as Float32Array;
    const d = await run(addDetectPostprocess(raw, { mode: 'decode', style, anchors, numClasses: C }));
    assert.deepEqual(d['decoded_boxes']!.dims, [2, A, 4]);
    for (const b of [0, 1]) {
      const want = decodeBoxes(codes.subarray(b * A * 4, (b + 1) * A * 4), anchors.corners, STYLE_CODER[style]);
      const got = (d['decoded_boxes']!.data as Float32Array).subarray(b * A * 4, (b + 1) * A * 4);
      assert.ok(maxAbsDiff(got, want) < 2e-6, `image ${b}: boxes ${maxAbsDiff(got, want)}`);
    }
    assert.ok(maxAbsDiff(d['scores']!.data as Float32Array, scoresOf(logits, C + 1, style)) < 1e-6);
  });
}

/** One image's in-graph detections against postprocessSsd of its raw outputs: same rows in the same order (by score). */
function sameAsTs(
  n: ort.InferenceSession.OnnxValueMapType, raw: ort.InferenceSession.OnnxValueMapType, b: number, ts: Parameters<typeof postprocessSsd>[4], style: SsdStyle = 'tf',
): { count: number; perClass: number[] } {
  const codes = raw['boxes']!.data as Float32Array;
  const logits = raw['logits']!.data as Float32Array;
  const want = postprocessSsd(codes.subarray(b * A * 4, (b + 1) * A * 4), logits.subarray(b * A * (C + 1), (b + 1) * A * (C + 1)), anchors.corners, style, ts);
  const batch = Array.from(n['detection_batch']!.data as BigInt64Array, Number);
  const classes = Array.from(n['detection_classes']!.data as BigInt64Array, Number);
  const scores = n['detection_scores']!.data as Float32Array;
  const boxes = n['detection_boxes']!.data as Float32Array;
  const rows = batch.flatMap((bb, i) => (bb === b ? [i] : []));
  assert.equal(rows.length, want.count, `image ${b}: detections`);
  rows.forEach((r, i) => {
    assert.equal(classes[r], want.classes[i], `image ${b} #${i}: class`);
    assert.ok(Math.abs(scores[r]! - want.scores[i]!) < 1e-6, `image ${b} #${i}: score ${scores[r]} vs ${want.scores[i]}`);
    const box = boxes.subarray(4 * r, 4 * r + 4);
    assert.ok(maxAbsDiff(box, want.boxes.subarray(4 * i, 4 * i + 4)) < 2e-6, `image ${b} #${i}: box ${box} vs ${want.boxes.subarray(4 * i, 4 * i + 4)}`);
  });
  // Image by image: this image's rows are contiguous.
  if (rows.length) assert.equal(rows[rows.length - 1]! - rows[0]! + 1, rows.length);
  return { count: want.count, perClass: Array.from({ length: C }, (_, c) => Array.from(want.classes).filter((k) => k === c + 1).length) };
}

for (const style of SSD_STYLES) {
  test(`NonMaxSuppression in the graph = multiclassNms (${style}: clipped, background dropped, a score threshold, the style's IoU and caps), row for row by score`, async () => {
    const r = await run(raw);
    // A threshold inside a gap of the scores, so float32 rounding in ORT's softmax cannot move a score across it.
    const scoreThreshold = gapAbove(scoresOf(r['logits']!.data as Float32Array, C + 1, style), 0.3);
    const n = await run(addDetectPostprocess(raw, { mode: 'nms', style, anchors, numClasses: C, scoreThreshold, maxDetections: 1000 }));
    for (const b of [0, 1]) {
      const { count } = sameAsTs(n, r, b, { scoreThreshold, maxDetections: Infinity }, style);
      assert.ok(count > 20, `${count} detections`);
    }
  });
}

test('the caps in the graph are the TS ones: ≤ 100 per class, then ≤ maxDetections per image (default 100)', async (t) => {
  const r = await run(raw);
  // Score 1e-8 keeps every anchor: NonMaxSuppression keeps 100 of each class, the image cap cuts to its best.
  const uncapped = await run(addDetectPostprocess(raw, { mode: 'nms', anchors, numClasses: C, maxDetections: 1000 }));
  const capped = await run(addDetectPostprocess(raw, { mode: 'nms', anchors, numClasses: C }));
  const few = await run(addDetectPostprocess(raw, { mode: 'nms', anchors, numClasses: C, scoreThreshold: 0.3, maxDetections: 7 }));
  for (const b of [0, 1]) {
    const all = sameAsTs(uncapped, r, b, { maxDetections: Infinity });
    assert.deepEqual(all.perClass, [100, 100, 100], `image ${b}: the per-class cap binds`);
    assert.equal(sameAsTs(capped, r, b, {}).count, 100);
    assert.equal(sameAsTs(few, r, b, { scoreThreshold: 0.3, maxDetections: 7 }).count, 7);
    t.diagnostic(`image ${b}: ${all.count} detections under the per-class cap, 100 and 7 under the image caps`);
  }
  // No detection at all (nothing scores above 0.999999): empty outputs, no error.
  const none = await run(addDetectPostprocess(raw, { mode: 'nms', anchors, numClasses: C, scoreThreshold: 0.999999 }));
  assert.deepEqual(none['detection_boxes']!.dims, [0, 4]);
  assert.equal((none['detection_classes']!.data as BigInt64Array).length, 0);
});

test('mnv2 export onnx --detect-postprocess nms|decode|none: the outputs ORT sees; a classifier is refused', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'detect-onnx-'));
  try {
    const file = path.join(dir, 'tiny.safetensors');
    saveWeights(file, graph, weights);
    for (const [mode, names] of [['nms', ['detection_boxes', 'detection_scores', 'detection_classes', 'detection_batch']], ['decode', ['decoded_boxes', 'scores']], ['none', ['boxes', 'logits']]] as const) {
      const out = path.join(dir, `${mode}.onnx`);
      execFileSync('node', [CLI, 'export', 'onnx', '--weights', file, '--out', out, '--detect-postprocess', mode], { stdio: 'pipe' });
      const s = await ort.InferenceSession.create(readFileSync(out));
      assert.deepEqual(s.outputNames, names, mode);
      await s.release();
    }
    assert.throws(() => execFileSync('node', [CLI, 'export', 'onnx', '--random-init', '--arch', 'seed-cifar', '--out', path.join(dir, 'c.onnx'), '--detect-postprocess', 'nms'], { stdio: 'pipe' }),
      (e: { stderr: Buffer }) => /--detect-postprocess is for SSDLite detectors/.test(e.stderr.toString()));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const FISH = new URL('../../../shared/data/detection/clownfish-ssdlite/', import.meta.url).pathname;
const fishSkip = existsSync(path.join(FISH, 'ssdlite_mobilenet_v2_clownfish.tflite')) ? false : `${FISH} is absent (the shared reference data is not on this machine)`;

test('the real clownfish SSDLite on its photo: export --detect-postprocess nms gives the TS detections (its coder scales and IoU from the metadata)', { skip: fishSkip }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'detect-onnx-fish-'));
  try {
    const file = path.join(dir, 'fish.safetensors');
    const onnxFile = path.join(dir, 'fish-nms.onnx');
    execFileSync('node', [CLI, 'import', 'tflite', path.join(FISH, 'ssdlite_mobilenet_v2_clownfish.tflite'), '--out', file], { stdio: 'pipe' });
    execFileSync('node', [CLI, 'export', 'onnx', '--weights', file, '--out', onnxFile, '--detect-postprocess', 'nms', '--score', '0.3', '--max-detections', '5'], { stdio: 'pipe' });
    const photo = path.join(FISH, 'clownfish.jpg');
    const s = await ort.InferenceSession.create(readFileSync(onnxFile), { intraOpNumThreads: 2 });
    const out = await s.run({ input: new ort.Tensor('float32', await loadImage(photo, detectorPreset(300)), [1, 3, 300, 300]) });
    await s.release();
    const { detector, options } = await openSsdliteFile(file, 2);
    const want = await detector.detect(photo, { ...options, scoreThreshold: 0.3, maxDetections: 5 });
    await detector.release();
    const scores = out['detection_scores']!.data as Float32Array;
    const classes = Array.from(out['detection_classes']!.data as BigInt64Array, Number);
    const boxes = out['detection_boxes']!.data as Float32Array;
    assert.equal(scores.length, 5);
    assert.deepEqual(classes, want.detections.map((d) => d.classId));
    want.detections.forEach((d, i) => {
      assert.ok(Math.abs(scores[i]! - d.score) < 1e-6, `#${i}: score ${scores[i]} vs ${d.score}`);
      const px = Array.from(boxes.subarray(4 * i, 4 * i + 4), (v, k) => v * (k % 2 === 0 ? want.width : want.height));
      assert.ok(maxAbsDiff(px, d.box) < 0.01, `#${i}: box ${px} vs ${d.box}`);
    });
    t.diagnostic(`in-graph: ${Array.from(scores, (v) => v.toFixed(3)).join(', ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
