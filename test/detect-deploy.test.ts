/**
 * Detectors on the deployment paths: `mnv2 quantize` of an SSDLite (int8 QDQ, what ONNX Runtime fuses, the
 * detections of the real clownfish model in int8 against float32), its `--eval` mAP cost on a small
 * fashion-detect set against `mnv2 eval --task detect --onnx` of each file, and `eval --task detect` on the
 * native engine against ONNX Runtime.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { saveTinyDetector } from './helpers/random-model.js';
import { FASHION_DETECT_DEFAULTS, makeFashionDetect } from '../src/detect/fashion-detect.js';
import { FASHION_MNIST_DIR } from '../src/data/idx.js';
import { iou } from '../src/detect/boxes.js';
import { FLOAT_OPS, optimizedOpCounts } from '../src/quant/quantize.js';
import { openSsdliteFile, type Detection } from '../src/detect/ssdlite-detector.js';
import { CLI } from './helpers/imagenet-photos.js';

const mnv2 = async (...args: string[]): Promise<string> => (await promisify(execFile)(process.execPath, [CLI, ...args], { maxBuffer: 1 << 24 })).stdout;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'detect-deploy-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

const FISH = new URL('../../../shared/data/detection/', import.meta.url).pathname;
const fishSkip = existsSync(path.join(FISH, 'clownfish-ssdlite', 'ssdlite_mobilenet_v2_clownfish.tflite')) ? false : `${FISH} is absent (the shared reference data is not on this machine)`;

/** The ORT compute ops of an int8 detector: every conv and add as an integer kernel, no float32 compute. */
async function assertFused(file: string, convs: number, adds: number): Promise<Map<string, number>> {
  const ops = await optimizedOpCounts(readFileSync(file));
  assert.equal(ops.get('QLinearConv'), convs, [...ops].join(' '));
  assert.equal(ops.get('QLinearAdd'), adds);
  for (const op of FLOAT_OPS) assert.equal(ops.get(op), undefined, `float32 ${op} left: ${[...ops].join(' ')}`);
  return ops;
}

test('the clownfish SSDLite in int8 (calibrated on 7 photos): ORT fuses every conv and add; it finds the two fish where float32 does', { skip: fishSkip }, async (t) => {
  const dir = path.join(tmp, 'fish');
  const calib = path.join(dir, 'calib');
  mkdirSync(calib, { recursive: true });
  // The JPEG photos of the shared folder (sharp reads no BMP) and the fish photo itself.
  for (const f of readdirSync(path.join(FISH, 'photos')).filter((f) => f.endsWith('.jpg'))) copyFileSync(path.join(FISH, 'photos', f), path.join(calib, f));
  const photo = path.join(FISH, 'clownfish-ssdlite', 'clownfish.jpg');
  copyFileSync(photo, path.join(calib, 'clownfish.jpg'));
  const fish = path.join(dir, 'fish.safetensors');
  const int8 = path.join(dir, 'fish.int8.onnx');
  await mnv2('import', 'tflite', path.join(FISH, 'clownfish-ssdlite', 'ssdlite_mobilenet_v2_clownfish.tflite'), '--out', fish);
  const summary = JSON.parse(await mnv2('quantize', fish, '--calib-dataset', calib, '--out', int8, '--threads', '2', '--json')) as { calibImages: number; bytes: number; float32Bytes: number };
  assert.equal(summary.calibImages, 7);
  assert.ok(summary.bytes < summary.float32Bytes / 3, `${summary.bytes} vs ${summary.float32Bytes} bytes`);
  // 88 convs of the layout (backbone, extra layers, 12 predictor convs), 10 residual adds.
  const ops = await assertFused(int8, 88, 10);
  t.diagnostic(`ORT runs: ${[...ops].map(([k, v]) => `${v} ${k}`).join(', ')}`);

  const detect = async (file: string): Promise<Detection[]> => {
    const { detector, options } = await openSsdliteFile(file, 2);
    try {
      return (await detector.detect(photo, { ...options, scoreThreshold: 0.3 })).detections;
    } finally {
      await detector.release();
    }
  };
  const [f32, q8] = [await detect(fish), await detect(int8)];
  // The float32 model's two best boxes are the two fish (0.649, 0.600; test/ssdlite-tflite.test.ts).
  assert.ok(Math.abs(f32[0]!.score - 0.649) < 0.005 && Math.abs(f32[1]!.score - 0.6) < 0.005, `float32 ${f32[0]!.score} ${f32[1]!.score}`);
  for (const [k, want] of f32.slice(0, 2).entries()) {
    const ious = q8.map((d) => iou(Float32Array.from(d.box), 0, Float32Array.from(want.box), 0));
    const best = ious.indexOf(Math.max(...ious));
    const got = q8[best]!;
    // Measured: IoU 0.9978 and 0.9945, scores 0.045 and 0.023 lower (the second fish ranks 3rd in int8).
    assert.ok(ious[best]! > 0.98, `fish ${k}: best int8 IoU ${ious[best]}`);
    assert.ok(Math.abs(got.score - want.score) < 0.08 && got.score > 0.5, `fish ${k}: int8 score ${got.score} vs float32 ${want.score}`);
    t.diagnostic(`fish ${k}: float32 ${want.score.toFixed(3)} [${want.box.map((v) => v.toFixed(0))}], int8 ${got.score.toFixed(3)} (rank ${best + 1}), IoU ${ious[best]!.toFixed(4)}`);
  }
});

const fdSkip = existsSync(FASHION_MNIST_DIR) ? false : `${FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)`;

interface EvalJson {
  images: number;
  detections: number;
  engine: string;
  coco: Record<string, number>;
}

test('fashion-detect (16 train, 8 test), a random tiny SSDLite: quantize --eval = eval --task detect of each ONNX file; native eval = ORT eval', { skip: fdSkip }, async (t) => {
  const dir = path.join(tmp, 'fd');
  await makeFashionDetect(path.join(dir, 'data'), { ...FASHION_DETECT_DEFAULTS, train: 16, val: 0, test: 8 });
  const weights = path.join(dir, 'tiny.safetensors');
  saveTinyDetector(weights);
  const fp32 = path.join(dir, 'tiny.onnx');
  const int8 = path.join(dir, 'tiny.int8.onnx');
  await mnv2('export', 'onnx', '--weights', weights, '--out', fp32);
  // The calibration images are the train split's folder; --eval finds the test.json beside it.
  const q = JSON.parse(await mnv2('quantize', '--weights', fp32, '--calib-dataset', path.join(dir, 'data', 'train'), '--calib-images', '12', '--out', int8, '--eval', '--threads', '2', '--json')) as {
    calibImages: number; eval: { images: number; dataset: string; coco: Record<'float32' | 'int8', Record<string, number>> };
  };
  assert.equal(q.calibImages, 12);
  assert.equal(q.eval.images, 8);
  assert.equal(q.eval.dataset, path.join(dir, 'data', 'test.json'));
  await assertFused(int8, 88, 10);
  const evalJson = async (...args: string[]): Promise<EvalJson> =>
    JSON.parse(await mnv2('eval', '--task', 'detect', '--data', path.join(dir, 'data'), '--split', 'test', '--threads', '2', '--json', ...args)) as EvalJson;
  const [e32, e8, eW, eNative] = [await evalJson('--onnx', fp32), await evalJson('--onnx', int8), await evalJson('--weights', weights), await evalJson('--weights', weights, '--engine', 'native')];
  // The same detections, so exactly the same 12 numbers, as eval of each ONNX file and of the model file on ORT.
  assert.deepEqual(q.eval.coco.float32, e32.coco);
  assert.deepEqual(q.eval.coco.int8, e8.coco);
  assert.deepEqual(eW.coco, e32.coco);
  for (const e of [e32, e8]) {
    assert.equal(e.detections, 800, 'score > 1e-8 keeps 100 per image');
    for (const [k, v] of Object.entries(e.coco)) assert.ok(v === -1 || (v >= 0 && v <= 1), `${k} = ${v}`);
  }
  assert.ok(e32.coco['AP50']! > 0 && e32.coco['AR100']! > 0, `AP50 ${e32.coco['AP50']} AR100 ${e32.coco['AR100']} (a random model still hits a few boxes)`);
  // Native vs ORT: outputs within ~1e-6, so the same detections up to near-ties in rank.
  assert.deepEqual([eNative.engine, e32.engine], ['native', 'ort']);
  assert.equal(eNative.detections, eW.detections);
  const diff = Math.max(...Object.keys(eW.coco).map((k) => Math.abs(eNative.coco[k]! - eW.coco[k]!)));
  assert.ok(diff <= 1e-4, `native vs ORT COCO numbers differ by ${diff}`);
  t.diagnostic(`AP float32 ${e32.coco['AP']!.toFixed(5)} int8 ${e8.coco['AP']!.toFixed(5)}; AP50 ${e32.coco['AP50']!.toFixed(5)} / ${e8.coco['AP50']!.toFixed(5)}; native vs ORT max |diff| ${diff}`);
});

test('quantize --eval scores a detector as eval --task detect does (score > 1e-8): a torchvision-style model, softmax scores all below 0.3', { skip: fdSkip }, async () => {
  const dir = path.join(tmp, 'fd-tv');
  await makeFashionDetect(path.join(dir, 'data'), { ...FASHION_DETECT_DEFAULTS, train: 8, val: 0, test: 4 });
  const weights = path.join(dir, 'tiny-tv.safetensors');
  saveTinyDetector(weights, 3, 'torchvision');
  const q = JSON.parse(await mnv2('quantize', weights, '--calib-dataset', path.join(dir, 'data', 'train'), '--calib-images', '4', '--out', path.join(dir, 'q.onnx'), '--eval', '--threads', '2', '--json')) as {
    eval: { coco: Record<'float32' | 'int8', Record<string, number>> };
  };
  const e = JSON.parse(await mnv2('eval', '--task', 'detect', '--weights', weights, '--data', path.join(dir, 'data'), '--split', 'test', '--threads', '2', '--json')) as EvalJson;
  assert.equal(e.detections, 400, 'score > 1e-8 keeps 100 per image');
  assert.deepEqual(q.eval.coco.float32, e.coco);
});
