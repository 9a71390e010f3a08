/**
 * `mnv2 import tf-graph`: TF OD API frozen graphs of an SSDLite-MobileNetV2 written by test/helpers/tf-graph-writer.ts
 * from known weights (α 0.35, 3 classes, 160 px): the import is bit-identical to the source weights in every
 * float form, both engines give the source model's outputs, and OpenCV's DNN module (an independent TF runtime)
 * running the .pb itself agrees with both. Bad files are clear errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildSsdlite, makeSsdliteConfig } from '../src/model/ssdlite.js';
import { importTfGraphSsdlite, tfConvVariable, tfScopesByConv } from '../src/io/tf-graph-ssdlite.js';
import { halfBitsToNumber } from '../src/io/safetensors.js';
import { loadModelFile } from '../src/io/weights.js';
import { detectOptionsOf, SsdliteDetector, type RawDetections } from '../src/detect/ssdlite-detector.js';
import { COCO_LABELS } from '../src/data/labels.js';
import type { Graph } from '../src/model/graph.js';
import type { SsdliteConfig } from '../src/model/ssdlite.js';
import type { StateDict } from '../src/model/weights.js';
import { halfBits, writeTfGraph, type TfGraphOptions } from './helpers/tf-graph-writer.js';
import { randomInput, randomWeights } from './helpers/random-model.js';
import { maxAbs, maxAbsDiff } from './helpers/fixtures.js';
import { CLI, REPO } from './helpers/imagenet-photos.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'mnv2-tfgraph-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));
const graph = buildSsdlite(makeSsdliteConfig({ alpha: 0.35, resolution: 160, numClasses: 3 }));
const weights = randomWeights(graph, 5);
let files = 0;
const pbOf = (o: TfGraphOptions = {}, g: Graph<SsdliteConfig> = graph, w: StateDict = weights): string => {
  const file = path.join(tmp, `g${files++}.pb`);
  writeFileSync(file, writeTfGraph(g, w, o));
  return file;
};
const OPENCV = '/usr/bin/python3';
const opencvSkip = (() => {
  try {
    execFileSync(OPENCV, ['-c', 'import cv2'], { stdio: 'pipe' });
    return false;
  } catch {
    return 'python3-opencv is absent (apt-get install python3-opencv): the independent OpenCV DNN check cannot run';
  }
})();

test('import: α 0.35, 3 classes and 160 px from the graph; every weight equal to the source in tensor_content, float_val (splats) and float16 forms', () => {
  for (const form of ['content', 'val', 'half'] as const) {
    const m = importTfGraphSsdlite(pbOf({ form }));
    assert.deepEqual([m.graph.config.alpha, m.graph.config.numClasses, m.graph.config.resolution, m.graph.config.padding, m.graph.config.bnEps, m.graph.config.ssdStyle], [0.35, 3, 160, 'keras', 1e-3, 'tf'], form);
    assert.equal(m.resolution.from, "Preprocessor/map/while/ResizeImage/ResizeBilinear's size");
    assert.deepEqual([...m.weights.keys()].sort(), [...weights.keys()].sort(), form);
    let mismatched = 0;
    for (const [k, v] of weights) {
      const want = form === 'half' ? v.map((x) => halfBitsToNumber(halfBits(x))) : v;
      if (!m.weights.get(k)!.every((x, i) => x === want[i])) mismatched++;
    }
    assert.equal(mismatched, 0, `${form}: tensors differing from the source`);
    // the float16 form really rounds: not a float32 file under another name
    if (form === 'half') assert.ok(maxAbsDiff(m.weights.get('features.0.0.weight')!, weights.get('features.0.0.weight')!) > 1e-5);
  }
});

test('input size: the Preprocessor resize (a Const or a Pack of Consts), else a fixed-size Placeholder, else the TF OD API default 300', () => {
  assert.deepEqual(importTfGraphSsdlite(pbOf({ packedSize: true })).resolution, { value: 160, from: "Preprocessor/map/while/ResizeImage/ResizeBilinear's size" });
  assert.deepEqual(importTfGraphSsdlite(pbOf({ input: 'fixed' })).resolution, { value: 160, from: "input 'image_tensor' of shape [1,160,160,3]" });
  const g300 = buildSsdlite(makeSsdliteConfig({ alpha: 0.35, resolution: 300, numClasses: 3 }));
  const m = importTfGraphSsdlite(pbOf({ input: 'unknown' }, g300, randomWeights(g300, 5)));
  assert.deepEqual(m.resolution, { value: 300, from: 'not in the graph; the TF OD API default 300' });
  assert.equal(m.graph.config.resolution, 300);
});

/** Box codes and logits of the detector on one input. */
async function raw(g: Graph<SsdliteConfig>, w: StateDict, engine: 'native' | 'ort', x: Float32Array): Promise<RawDetections> {
  const det = await SsdliteDetector.create(g, w, 1, engine);
  try {
    return await det.forward(x, 1);
  } finally {
    await det.release();
  }
}

test('outputs: the imported model equals the source on native and ORT; OpenCV DNN running the .pb agrees with both', { skip: opencvSkip }, async (t) => {
  const file = pbOf();
  const m = importTfGraphSsdlite(file);
  const x = randomInput(graph, 1, 7);
  const input = path.join(tmp, 'x.f32');
  writeFileSync(input, x);
  const out = path.join(tmp, 'opencv.f32');
  const info = JSON.parse(execFileSync(OPENCV, [path.join(REPO, 'tools/opencv-tf-graph.py'), file, input, '1,3,160,160', out, 'concat', 'concat_1'], { encoding: 'utf8' })) as { opencv: string; shapes: number[][] };
  const anchors = 3 * 10 * 10 + 6 * (5 * 5 + 3 * 3 + 2 * 2 + 1 + 1);
  assert.deepEqual(info.shapes, [[1, anchors, 4], [1, anchors, 4]]);
  const cv = new Float32Array(readFileSync(out).buffer.slice(0));
  const cvCodes = cv.subarray(0, anchors * 4);
  const cvLogits = cv.subarray(anchors * 4);
  for (const engine of ['native', 'ort'] as const) {
    const src = await raw(graph, weights, engine, x);
    const imp = await raw(m.graph, m.weights, engine, x);
    assert.equal(maxAbsDiff(imp.codes, src.codes), 0, `${engine}: imported codes = source codes`);
    assert.equal(maxAbsDiff(imp.logits, src.logits), 0, `${engine}: imported logits = source logits`);
    const scale = Math.max(maxAbs(src.codes), maxAbs(src.logits));
    assert.ok(scale > 1, `outputs are not trivial (max ${scale})`);
    const d = Math.max(maxAbsDiff(cvCodes, imp.codes), maxAbsDiff(cvLogits, imp.logits));
    t.diagnostic(`OpenCV ${info.opencv} vs ${engine}: max |diff| ${d.toExponential(2)} (box codes and logits, max |value| ${scale.toFixed(2)})`);
    assert.ok(d < 2e-5 * scale, `${engine} vs OpenCV: max |diff| ${d}`);
  }
});

test('bad files: clear errors naming the file and the problem', () => {
  const bad = (name: string, bytes: Uint8Array | string) => {
    const f = path.join(tmp, name);
    writeFileSync(f, bytes);
    return f;
  };
  const gamma = 'FeatureExtractor/MobilenetV2/expanded_conv_3/project/BatchNorm/gamma';
  const proj = 'FeatureExtractor/MobilenetV2/expanded_conv_3/project/weights';
  const cases: [string, RegExp][] = [
    [bad('empty.pb', ''), /empty\.pb: not a TensorFlow GraphDef \(no nodes\)/],
    [bad('text.pb', 'node { name: "x" op: "Const" }\n'), /text\.pb: not a TensorFlow GraphDef/],
    [bad('png.pb', readFileSync(path.join(REPO, 'docs', 'browser.png')).subarray(0, 4096)), /png\.pb: not a TensorFlow GraphDef/],
    [bad('cut.pb', readFileSync(pbOf()).subarray(0, 100_000)), /cut\.pb: not a TensorFlow GraphDef \(protobuf: index out of range/],
    [pbOf({ omit: ['BoxPredictor_0/ClassPredictor/weights'] }), /: missing variable BoxPredictor_0\/ClassPredictor\/weights \(the class head, \[1, 1, C, 3·\(classes \+ 1\)\]\): not a TF OD API SSDLite-MobileNetV2 graph/],
    [pbOf({ omit: [gamma] }), new RegExp(`: missing variable ${gamma} \\(expected shape \\[16\\]\\)`)],
    [pbOf({ omit: [proj] }), new RegExp(`closest α 0.35: missing variable ${proj} \\(expected shape \\[1,1,48,16\\]\\)$`)],
    [pbOf({ reshape: { [proj]: [1, 1, 48, 17] } }), new RegExp(`closest α 0.35: variable ${proj} has shape \\[1,1,48,17\\], expected \\[1,1,48,16\\]`)],
    [pbOf({ reshape: { [gamma]: [15] } }), new RegExp(`variable ${gamma} has shape \\[15\\], expected \\[16\\]`)],
    [pbOf({ padding: 'VALID' }), /Conv2D 'FeatureExtractor\/MobilenetV2\/Conv\/Conv2D': padding VALID, expected TF 'SAME'/],
  ];
  for (const [file, re] of cases) {
    assert.throws(() => importTfGraphSsdlite(file), (e: Error) => e.message.startsWith(file) && re.test(e.message), `${file}: ${(() => { try { importTfGraphSsdlite(file); return 'no error'; } catch (e) { return (e as Error).message; } })()}`);
  }
});

test("mnv2 import tf-graph: the model file's metadata (ssdlite, TF 'SAME' = keras padding, [-1, 1] preset, source)", () => {
  const file = pbOf({ form: 'val' });
  const out = path.join(tmp, 'imported.safetensors');
  const r = spawnSync('node', [CLI, 'import', 'tf-graph', file, '--out', out], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /SSDLite MobileNetV2 α 0.35 @ 160 \(input size: Preprocessor\/map\/while\/ResizeImage\/ResizeBilinear's size\), 3 classes \+ background, TF 'SAME' padding/);
  const m = loadModelFile(out);
  assert.deepEqual([m.metadata['mnv2.family'], m.metadata['mnv2.preprocess'], m.metadata['mnv2.source'], m.metadata['mnv2.labels']], ['ssdlite', 'keras', path.basename(file), undefined]);
  const c = m.graph.config as unknown as SsdliteConfig;
  assert.deepEqual([c.alpha, c.resolution, c.numClasses, c.padding], [0.35, 160, 3, 'keras']);
  for (const [k, v] of weights) assert.deepEqual(m.weights.get(k), v, k);
  const same = spawnSync('node', [CLI, 'import', 'tf-graph', file, '--out', file], { encoding: 'utf8' });
  assert.match(same.stderr, /--out .* is the same file as the imported file .*: refusing to overwrite an input/);
  assert.ok(existsSync(file) && readFileSync(file).length > 1e6, 'the graph is untouched');
  const asWeights = spawnSync('node', [CLI, 'detect', file, '--weights', file], { encoding: 'utf8' });
  assert.match(asWeights.stderr, /\.pb: a TensorFlow frozen graph \(GraphDef\), not a weights file \(\.safetensors or \.pth\): use mnv2 import tf-graph FILE --out W\.safetensors/);
});

test("the Postprocessor's constants (box coder scales, NMS IoU / score thresholds, per-class maximum) become the model file's post-processing; none without one", () => {
  for (const nms of ['V3', 'V2'] as const) {
    const file = pbOf({ postprocessor: { scales: [8, 9, 4, 3], iou: 0.55, score: 0.25, perClass: 77, nms } });
    assert.deepEqual(importTfGraphSsdlite(file).postprocess, { y_scale: 8, x_scale: 9, h_scale: 4, w_scale: 3, nms_iou_threshold: Math.fround(0.55), nms_score_threshold: 0.25, detections_per_class: 77 }, nms);
  }
  const file = pbOf({ postprocessor: { scales: [10, 10, 5, 5], iou: 0.6, score: 1e-8, perClass: 100 } });
  const out = path.join(tmp, 'with-postprocessor.safetensors');
  const r = spawnSync('node', [CLI, 'import', 'tf-graph', file, '--out', out], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /from its Postprocessor: y_scale 10, x_scale 10, h_scale 5, w_scale 5, nms_iou_threshold 0\.6/);
  // What `mnv2 detect` then decodes and suppresses with.
  assert.deepEqual(detectOptionsOf(loadModelFile(out), out), { scales: [10, 10, 5, 5], iouThreshold: Math.fround(0.6) });
  assert.equal(importTfGraphSsdlite(pbOf()).postprocess, undefined);
  assert.throws(() => importTfGraphSsdlite(pbOf({ postprocessor: { scales: [10, 0, 5, 5], iou: 0.6, score: 0, perClass: 100 } })), /Postprocessor\/Decode\/div_1: box coder scale 0 is not a positive number/);
  assert.throws(() => importTfGraphSsdlite(pbOf({ postprocessor: { scales: [10, 10, 5, 5], iou: 1.5, score: 0, perClass: 100 } })), /NonMaxSuppressionV3: IoU threshold 1\.5 is outside \[0, 1\]/);
});

test('COCO labels: the TF mscoco label map, ids 1..90 with 10 unused ids', () => {
  assert.equal(COCO_LABELS.length, 90);
  assert.equal(COCO_LABELS.filter((l) => l !== 'N/A').length, 80);
  assert.deepEqual([1, 18, 38, 44, 90].map((id) => COCO_LABELS[id - 1]), ['person', 'dog', 'kite', 'bottle', 'toothbrush']);
  assert.deepEqual([12, 26, 29, 30, 45, 66, 68, 69, 71, 83].map((id) => COCO_LABELS[id - 1]), new Array(10).fill('N/A'));
});

const LAYOUT = new URL('../../../shared/data/detection/ssdlite-mobilenetv2-coco-layout.md', import.meta.url).pathname;

test('the variables the importer reads for α 1, 90 classes, 300 px are exactly the COCO layout spec\'s 88 scopes, names and shapes', { skip: existsSync(LAYOUT) ? false : `${LAYOUT} is absent (the shared reference data is not on this machine)` }, () => {
  // spec rows: | `scope` | op | out | `weights` [3, 3, 3, 32], BN `gamma,...` [32] | ...  or  `weights` [...], `biases` [12]
  const spec = new Map<string, string>();
  for (const [, scope, vars] of readFileSync(LAYOUT, 'utf8').matchAll(/^\| `([^`]+)` \| [^|]+ \| [^|]+ \| ([^|]+) \|/gm)) {
    for (const [, name, shape] of vars!.matchAll(/`(weights|depthwise_weights|biases)` \[([\d, ]+)\]/g)) spec.set(`${scope}/${name}`, shape!.replace(/ /g, ''));
    const bn = /BN `gamma,beta,moving_mean,moving_variance` \[(\d+)\]/.exec(vars!);
    if (bn) for (const v of ['gamma', 'beta', 'moving_mean', 'moving_variance']) spec.set(`${scope}/BatchNorm/${v}`, bn[1]!);
  }
  const g = buildSsdlite(makeSsdliteConfig({ alpha: 1, resolution: 300, numClasses: 90 }));
  const ours = new Map<string, string>();
  const scopes = tfScopesByConv(1);
  for (const n of g.nodes) {
    if (n.op !== 'conv') continue;
    const scope = scopes.get(n.name)!;
    const v = tfConvVariable(n, scope);
    ours.set(v.name, v.shape.join());
    if (n.bias) ours.set(`${scope}/biases`, String(n.outC));
    else for (const b of ['gamma', 'beta', 'moving_mean', 'moving_variance']) ours.set(`${scope}/BatchNorm/${b}`, String(n.outC));
  }
  assert.equal(new Set([...spec.keys()].map((k) => k.replace(/\/(BatchNorm\/\w+|weights|depthwise_weights|biases)$/, ''))).size, 88);
  assert.equal(spec.size, 76 * 5 + 12 * 2, '76 conv + BN scopes, 12 predictor convs with biases');
  assert.deepEqual([...ours].sort(), [...spec].sort());
});
