/**
 * A detector over a dataset (src/detect/evaluate.ts) and `mnv2 eval --task detect`: a hand-computed case through
 * the class ↔ category mapping (COCO AP, VOC AP50, the PR curve), then the CLI with a tiny random SSDLite on a
 * tiny generated fashion-detect set: the 12 numbers printed, the COCO results JSON re-scored to the same numbers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { categoryMap, evaluateDetector, precisionAtRecall, vocAp50, type ImageDetector } from '../src/detect/evaluate.js';
import { loadCocoDetection, SkipCounts, toCocoGroundTruth, type DetectionDataset, type DetectionImage } from '../src/detect/dataset.js';
import { cocoEvaluate, type CocoDetection } from '../src/detect/coco-eval.js';
import type { Detection } from '../src/detect/ssdlite-detector.js';
import { FASHION_DETECT_DEFAULTS, makeFashionDetect } from '../src/detect/fashion-detect.js';
import { FASHION_MNIST_DIR } from '../src/data/idx.js';
import { saveTinyDetector } from './helpers/random-model.js';
import { CLI } from './helpers/imagenet-photos.js';

const box = (b: [number, number, number, number], label: number) => ({ box: b, label, area: (b[2] - b[0]) * (b[3] - b[1]), iscrowd: false, difficult: false });
const image = (id: number, boxes: ReturnType<typeof box>[]): DetectionImage => ({ id, file: `img${id}.png`, width: 100, height: 100, boxes });

/** Category ids 3 ('a', label 0) and 7 ('b', label 1). */
const DS: DetectionDataset = {
  name: 'hand',
  images: [image(1, [box([0, 0, 10, 10], 0)]), image(2, [box([20, 20, 40, 40], 1), box([50, 50, 60, 60], 0)])],
  categories: [{ id: 3, name: 'a' }, { id: 7, name: 'b' }],
  skipped: new SkipCounts(),
};

const det = (b: [number, number, number, number], score: number, classId: number): Detection => ({ box: b, score, classId, label: '' });

/** Model classes 1, 2 = the dataset's labels 0, 1 (index mapping). */
const fake = (numClasses: number, shift = 0): ImageDetector => ({
  numClasses,
  detect: async (file) => ({
    'img1.png': [det([0, 0, 10, 10], 0.9, 1 + shift)],
    'img2.png': [det([20, 20, 40, 40], 0.8, 2 + shift), det([0, 0, 5, 5], 0.7, 1 + shift), det([50, 50, 60, 60], 0.6, 1 + shift)],
  })[file] ?? [],
});

test('hand case: category a has TP 0.9, FP 0.7, TP 0.6 → AP (51 + 50·2/3)/101 at every IoU; b one TP → 1; VOC 0.8333 and 0.8485', async () => {
  const r = await evaluateDetector(fake(2), DS);
  assert.deepEqual(r.detections[1], { image_id: 2, category_id: 7, bbox: [20, 20, 20, 20], score: 0.8 });
  assert.equal(r.detections.length, 4);
  const apA = (51 + (50 * 2) / 3) / 101;
  const want = (apA + 1) / 2;
  for (const k of [0, 1, 2]) assert.ok(Math.abs(r.coco.stats[k]! - want) < 1e-12, `stat ${k}: ${r.coco.stats[k]} vs ${want}`);
  assert.equal(r.coco.stats[6], 0.75, 'AR1: the top detection per image finds 1 of 2 of a (its 0.7 FP outranks the 0.6 TP), 1 of 1 of b');
  assert.ok(Math.abs(r.coco.stats[8]! - 1) < 1e-12, `AR100 ${r.coco.stats[8]}`);
  const pr = precisionAtRecall(r.coco, 0.5)!;
  assert.equal(pr.length, 101);
  assert.ok(Math.abs(pr[50]! - 1) < 1e-12, `${pr[50]}`);
  assert.ok(Math.abs(pr[51]! - (2 / 3 + 1) / 2) < 1e-12 && Math.abs(pr[100]! - (2 / 3 + 1) / 2) < 1e-12);
  const voc = vocAp50(DS, r.detections);
  assert.ok(Math.abs(voc.perCategory[0]!.ap - (0.5 + 0.5 * (2 / 3))) < 1e-12, `${voc.perCategory[0]!.ap}`);
  assert.ok(Math.abs(voc.perCategory[0]!.ap07 - (6 + 5 * (2 / 3)) / 11) < 1e-12, `${voc.perCategory[0]!.ap07}`);
  assert.ok(Math.abs(voc.mAP - (5 / 6 + 1) / 2) < 1e-12);
  // The same detections with model classes = category ids (a TF COCO model's label map): the same numbers.
  const byId = await evaluateDetector({ numClasses: 8, detect: async (f) => (await fake(2).detect(f)).map((d) => ({ ...d, classId: d.classId === 1 ? 3 : 7 })) }, DS);
  assert.deepEqual(byId.coco.stats, r.coco.stats);
  // Classes that are no category are left out and counted.
  const shifted = await evaluateDetector(fake(8, 3), DS, { mapping: 'id' });
  assert.equal(shifted.unmapped, 4);
  assert.deepEqual(shifted.coco.stats.slice(0, 3), [0, 0, 0]);
});

test('categoryMap: auto is index for as many classes as categories, id when every id is a class, else an error', () => {
  assert.deepEqual([...categoryMap(DS, 2)], [[1, 3], [2, 7]]);
  assert.deepEqual([...categoryMap(DS, 90)], [[3, 3], [7, 7]]);
  assert.throws(() => categoryMap(DS, 5), /the model has 5 classes, the dataset 2 categories with ids 3\.\.7: give --category-map index or id/);
  assert.throws(() => categoryMap(DS, 1, 'index'), /fewer than the dataset's 2 categories/);
});

const skip = existsSync(FASHION_MNIST_DIR) ? false : `${FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)`;

test('mnv2 eval --task detect: 12 numbers printed; --coco-json re-scores to the same; PR PNG; --metric voc', { skip }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'eval-detect-'));
  try {
    await makeFashionDetect(path.join(dir, 'fd'), { ...FASHION_DETECT_DEFAULTS, train: 0, val: 0, test: 6 });
    const weights = path.join(dir, 'tiny.safetensors');
    saveTinyDetector(weights);
    const dets = path.join(dir, 'dets.json');
    const png = path.join(dir, 'pr.png');
    const base = ['eval', '--task', 'detect', '--weights', weights, '--dataset', path.join(dir, 'fd'), '--split', 'test'];
    const out = execFileSync('node', [CLI, ...base, '--coco-json', dets, '--pr-png', png, '--metric', 'voc'], { encoding: 'utf8', stdio: 'pipe' });
    const lines = out.split('\n').filter((l) => /^ Average (Precision|Recall) /.test(l));
    assert.equal(lines.length, 12, out);
    const printed = lines.map((l) => Number(l.split('=').pop()));
    assert.match(out, /6 images, 600 detections/);
    assert.match(out, /^ {2}mAP +\d\.\d{4} \| \d\.\d{4}$/m);
    const results = JSON.parse(readFileSync(dets, 'utf8')) as CocoDetection[];
    assert.equal(results.length, 600);
    for (const d of results) {
      assert.deepEqual(Object.keys(d).sort(), ['bbox', 'category_id', 'image_id', 'score']);
      assert.ok(d.bbox[2]! >= 0 && d.bbox[3]! >= 0 && d.category_id >= 1 && d.category_id <= 10);
    }
    const gtFile = path.join(dir, 'fd', 'test.json');
    const rescored = cocoEvaluate(toCocoGroundTruth(await loadCocoDetection(gtFile, path.join(dir, 'fd'))), results);
    assert.deepEqual(rescored.stats.map((v) => Number(v.toFixed(3))), printed);
    assert.ok(rescored.stats[1]! > 0 && rescored.stats[8]! > 0, `AP50 ${rescored.stats[1]}, AR100 ${rescored.stats[8]} (a random model still hits a few boxes)`);
    // Exactly the same numbers as --json prints, and as the stand-alone scorer gives on the written file.
    const j = JSON.parse(execFileSync('node', [CLI, ...base, '--json'], { encoding: 'utf8', stdio: 'pipe' })) as { coco: Record<string, number> };
    assert.deepEqual(Object.values(j.coco), rescored.stats);
    const cli = JSON.parse(execFileSync('node', [CLI, 'detect', 'coco-eval', gtFile, dets, '--json'], { encoding: 'utf8', stdio: 'pipe' })) as number[];
    assert.deepEqual(cli, rescored.stats);
    const meta = await sharp(png).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 640, 480]);
    // Bad input is named.
    const fail = (args: string[]) => {
      try {
        execFileSync('node', [CLI, ...args], { encoding: 'utf8', stdio: 'pipe' });
      } catch (e) {
        return String((e as { stderr: string }).stderr);
      }
      return assert.fail('expected a failure');
    };
    assert.match(fail([...base.slice(0, 5), '--dataset', path.join(dir, 'nope.json')]), /nope\.json: no such file/);
    assert.match(fail([...base, '--coco-json', weights]), /--coco-json/);
    assert.match(fail([...base, '--onnx', path.join(dir, 'x.onnx')]), /give either --weights or --onnx, not both/);
    assert.match(fail(['eval', '--task', 'detect', '--onnx', weights, '--dataset', path.join(dir, 'fd')]), /tiny\.safetensors: not an ONNX model/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
