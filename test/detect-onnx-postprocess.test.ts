/**
 * Detector ONNX export with the post-processing in the graph (src/engine/onnx/detect-postprocess.ts) against the
 * TS post-processing (src/detect/postprocess.ts) of the raw export's outputs, on ONNX Runtime: a tiny random
 * SSDLite (129 px, 483 anchors, 3 classes), a batch of 2.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
import { postprocessSsd, scoresOf, SSD_STYLES, STYLE_CODER } from '../src/detect/postprocess.js';
import { Rng } from '../src/util/rng.js';
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

for (const style of SSD_STYLES) {
    test(`NonMaxSuppression in the graph = multiclassNms (${style}: clipped, background dropped, a score threshold, the style's IoU and per-class cap)`, async () => {
    const r = await run(raw);
    const codes = r['boxes']!.data as Float32Array;
    const logits = r['logits']!.data as Float32Array;
    // A threshold inside a gap of the scores, so float32 rounding in ORT's softmax cannot move a score across it.
    const scoreThreshold = gapAbove(scoresOf(logits, C + 1, style), 0.3);
    const n = await run(addDetectPostprocess(raw, { mode: 'nms', style, anchors, numClasses: C, scoreThreshold }));
    const batch = Array.from(n['detection_batch']!.data as BigInt64Array, Number);
    const classes = Array.from(n['detection_classes']!.data as BigInt64Array, Number);
    const scores = n['detection_scores']!.data as Float32Array;
    const boxes = n['detection_boxes']!.data as Float32Array;
    for (const b of [0, 1]) {
      const want = postprocessSsd(codes.subarray(b * A * 4, (b + 1) * A * 4), logits.subarray(b * A * (C + 1), (b + 1) * A * (C + 1)), anchors.corners, style, {
        scoreThreshold, maxDetections: Infinity,
      });
      assert.ok(want.count > 20, `${want.count} detections`);
      const key = (c: number, s: number) => c * 10 - s;
      const wantRows = Array.from({ length: want.count }, (_, i) => ({ c: want.classes[i]!, s: want.scores[i]!, box: Array.from(want.boxes.subarray(4 * i, 4 * i + 4)) }))
        .sort((p, q) => key(p.c, p.s) - key(q.c, q.s));
      const gotRows = batch.flatMap((bb, i) => (bb === b ? [{ c: classes[i]!, s: scores[i]!, box: Array.from(boxes.subarray(4 * i, 4 * i + 4)) }] : []));
      assert.equal(gotRows.length, wantRows.length, `image ${b}: detections`);
      gotRows.forEach((g, i) => {
        const w = wantRows[i]!;
        assert.equal(g.c, w.c, `image ${b} #${i}: class`);
        assert.ok(Math.abs(g.s - w.s) < 1e-6, `image ${b} #${i}: score ${g.s} vs ${w.s}`);
        assert.ok(maxAbsDiff(g.box, w.box) < 2e-6, `image ${b} #${i}: box ${g.box} vs ${w.box}`);
      });
    }
  });
}

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
