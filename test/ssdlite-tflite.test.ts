/** The real TF OD API SSDLite-MobileNetV2 (one class: clownfish), imported from TFLite and run on its photo. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { importTfliteSsdlite } from '../src/io/tflite-ssdlite.js';
import { SsdliteDetector, type Detection } from '../src/detect/ssdlite-detector.js';
import { iou } from '../src/detect/boxes.js';
import { CLI } from './helpers/imagenet-photos.js';

const DIR = new URL('../../../shared/data/detection/clownfish-ssdlite/', import.meta.url).pathname;
const MODEL = path.join(DIR, 'ssdlite_mobilenet_v2_clownfish.tflite');
const PHOTO = path.join(DIR, 'clownfish.jpg');
const skip = existsSync(MODEL) ? false : `${MODEL} is absent (the shared reference data is not on this machine)`;

/** The two best detections lie on the two fish: scores ≈ 0.67 and 0.60 (TFLite float), distinct boxes. */
function checkTopTwo(d: readonly Pick<Detection, 'box' | 'score'>[]): void {
  assert.ok(d.length >= 2, `${d.length} detections`);
  const [a, b] = d as [Detection, Detection];
  assert.ok(a.score >= 0.55 && a.score <= 0.75, `best score ${a.score}`);
  assert.ok(b.score >= 0.55 && b.score <= 0.75, `second score ${b.score}`);
  const overlap = iou(a.box, 0, b.box, 0);
  assert.ok(overlap < 0.3, `IoU of the two best boxes ${overlap}`);
}

test('import: every conv of the file, 1 class + background, TFLite_Detection_PostProcess options', { skip }, () => {
  const m = importTfliteSsdlite(MODEL);
  assert.equal(m.graph.config.numClasses, 1);
  assert.equal(m.graph.config.resolution, 300);
  assert.equal(m.graph.config.alpha, 1);
  assert.equal(m.graph.params.every((p) => m.weights.get(p.name)?.length === p.shape.reduce((x, y) => x * y, 1)), true);
  assert.deepEqual([m.postprocess?.['y_scale'], m.postprocess?.['x_scale'], m.postprocess?.['h_scale'], m.postprocess?.['w_scale'], m.postprocess?.['num_classes']], [10, 10, 5, 5, 1]);
  assert.deepEqual(m.input, { type: 'uint8', scale: 0.0078125, zeroPoint: 128 });
});

test('the imported clownfish model finds the two clownfish (ONNX Runtime, decoded with src/detect)', { skip }, async (t) => {
  const m = importTfliteSsdlite(MODEL);
  const det = await SsdliteDetector.create(m.graph, m.weights);
  const r = await det.detect(PHOTO, { maxDetections: 10 });
  await det.release();
  for (const d of r.detections.slice(0, 3)) t.diagnostic(`${d.score.toFixed(4)} [${d.box.map((v) => v.toFixed(1)).join(', ')}]`);
  checkTopTwo(r.detections);
  // One fish in the upper half of the photo, one in the lower half.
  const cy = r.detections.slice(0, 2).map((d) => (d.box[1] + d.box[3]) / 2 / r.height).sort();
  assert.ok(cy[0]! < 0.45 && cy[1]! > 0.55, `box centres at ${cy.join(', ')} of the height`);
});

test('mnv2 import tflite + mnv2 detect --json --out: the same two boxes, an annotated PNG of the photo size', { skip }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ssdlite-'));
  try {
    const weights = path.join(dir, 'clownfish.safetensors');
    execFileSync('node', [CLI, 'import', 'tflite', MODEL, '--out', weights], { stdio: 'pipe' });
    const png = path.join(dir, 'annotated.png');
    const out = execFileSync('node', [CLI, 'detect', PHOTO, '--weights', weights, '--json', '--out', png, '--max', '5'], { encoding: 'utf8', stdio: 'pipe' });
    const r = JSON.parse(out) as { detections: Detection[]; width: number; height: number };
    assert.equal(r.detections.length, 5);
    assert.equal(r.detections[0]!.label, 'class 1');
    checkTopTwo(r.detections);
    const meta = await sharp(readFileSync(png)).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', r.width, r.height]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
