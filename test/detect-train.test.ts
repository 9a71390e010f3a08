/**
 * Detection training (src/detect/train*.ts) on a tiny SSDLite (α 0.35, 129 px, 10 classes) and a tiny
 * fashion-detect set made from Debian's Fashion-MNIST into a temp folder: the inputs are `mnv2 detect`'s, the
 * native engine's loss drops over a few steps on one batch, a run writes per-epoch AP metrics and a test report
 * equal to ONNX Runtime's `eval --task detect` of its model file, a stopped-and-resumed run ends bitwise equal to
 * an uninterrupted one, and bad datasets give clear errors.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { FASHION_MNIST_DIR } from '../src/data/idx.js';
import { loadImage } from '../src/data/preprocess.js';
import { makeFashionDetect } from '../src/detect/fashion-detect.js';
import { detectionBatches, detectionSample, openDetectionSplit, type DetectionSplit } from '../src/detect/train-data.js';
import { trainDetector, augmentOptions } from '../src/detect/train.js';
import { detectorPreset, openSsdliteFile } from '../src/detect/ssdlite-detector.js';
import { evaluateDetector } from '../src/detect/evaluate.js';
import { loadCocoDetection } from '../src/detect/dataset.js';
import { ssdAnchors } from '../src/detect/anchors.js';
import { detection } from '../src/task/detection.js';
import { NativeModel } from '../src/engine/native/model.js';
import { archConfig, buildModel } from '../src/model/registry.js';
import { initWeights } from '../src/model/weights.js';
import { makeOptimizer, paramRefs } from '../src/train/optim.js';
import { resolvePreset, type TrainRecipe } from '../src/train/presets.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { readMetrics } from '../src/train/plot.js';
import { loadModelFile, saveWeights } from '../src/io/weights.js';
import { encodeModelInfo } from '../src/io/metadata.js';
import { Rng } from '../src/util/rng.js';

const skip = existsSync(FASHION_MNIST_DIR) ? false : `${FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)`;
const tmp = mkdtempSync(join(tmpdir(), 'mnv2-detect-train-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const data = join(tmp, 'fd');
const R = 129;
let trainSplit: DetectionSplit;

before(async () => {
  if (skip) return;
  await makeFashionDetect(data, { train: 16, val: 8, test: 8, canvas: 64, maxScale: 2, seed: 3 });
  trainSplit = await openDetectionSplit(data, 'train');
});

function tinyRecipe(over: Partial<TrainRecipe> = {}): TrainRecipe {
  return resolvePreset('fashion-detect', { dataset: data, alpha: 0.35, resolution: R, batch: 8, epochs: 2, ...over });
}
const quiet = { progress: false, log: () => {}, threads: 2, onnx: false, plots: false, evalBatch: 8 } as const;

/** ONNX Runtime on a run's model.safetensors scores the test split as the run's test report says (12 numbers, < 1e-4). */
async function assertOrtReproduces(runDir: string, coco: Record<string, number>, scoreThreshold: number): Promise<void> {
  const { detector } = await openSsdliteFile(join(runDir, 'model.safetensors'));
  const ds = await loadCocoDetection(join(data, 'test.json'), data);
  const ort = await evaluateDetector({ numClasses: 10, detect: async (f) => (await detector.detect(f, { scoreThreshold })).detections }, ds);
  await detector.release();
  Object.values(coco).forEach((v, i) => assert.ok(Math.abs(v - ort.coco.stats[i]!) < 1e-4, `stat ${i}: native ${v}, ORT ${ort.coco.stats[i]}`));
}

test('eval inputs are exactly what mnv2 detect feeds the model; train inputs are seeded, boxes normalized', { skip }, async () => {
  const im = trainSplit.dataset.images[0]!;
  const s = await detectionSample(trainSplit, 0, R);
  const want = await loadImage(im.file, detectorPreset(R));
  assert.equal(s.input.length, 3 * R * R);
  assert.ok(Buffer.from(s.input.buffer).equals(Buffer.from(want.buffer)), 'same floats as loadImage(file, detectorPreset)');
  // Greyscale PNG → three equal channels.
  assert.deepEqual(s.input.subarray(0, R * R), s.input.subarray(R * R, 2 * R * R));
  assert.deepEqual(Array.from(s.target.boxes), im.boxes.flatMap((b) => [b.box[0] / 64, b.box[1] / 64, b.box[2] / 64, b.box[3] / 64]).map(Math.fround));
  assert.deepEqual(Array.from(s.target.labels), im.boxes.map((b) => b.label + 1));
  const aug = (seed: number) => detectionSample(trainSplit, 0, R, { rng: new Rng(seed), options: augmentOptions('ssd') || undefined });
  const [a, b, c] = [await aug(5), await aug(5), await aug(6)];
  assert.deepEqual(a, b, 'same seed, same sample');
  assert.notDeepEqual(a.input, c.input, 'another seed, another sample');
  for (const t of [a, c]) assert.ok(t.target.boxes.every((v) => v >= 0 && v <= 1), `boxes in [0, 1]: ${Array.from(t.target.boxes)}`);
});

test('the native engine trains the tiny SSDLite: 8 RMSProp steps on one batch lower the TF loss', { skip }, async () => {
  const g = buildModel(archConfig('ssdlite', { alpha: 0.35, resolution: R, numClasses: 10 }));
  const model = new NativeModel(g, initWeights(g, 0), { threads: 2 });
  const task = detection({ style: 'tf', numClasses: 10, anchors: ssdAnchors({ height: R, width: R }).corners });
  const batches = detectionBatches(trainSplit, { batchSize: 8, resolution: R, seed: 0, augment: false });
  const first = (await batches.epoch(0, { startBatch: 0 })[Symbol.asyncIterator]().next()).value!;
  const params = paramRefs(model);
  const opt = makeOptimizer('rmsprop', { alpha: 0.9, eps: 1, momentum: 0.9, weightDecay: 4e-5, tfCompatible: true });
  const losses: number[] = [];
  for (let i = 0; i < 8; i++) {
    const r = model.step(first.input, first.size, task, first.target, { bnMomentum: 0.01 });
    assert.ok(r.counts['matched']! >= r.counts['boxes']!, 'every gt box has at least its best anchor');
    losses.push(r.loss);
    opt.step(params, 0.004);
    model.weightsChanged();
  }
  assert.ok(losses.every(Number.isFinite));
  assert.ok(losses[7]! < 0.6 * losses[0]!, `loss ${losses.map((l) => l.toFixed(2)).join(' → ')}`);
});

let straightDir = '';

test('a detection run writes per-epoch COCO AP metrics; its test report equals ORT eval --task detect of its model', { skip }, async () => {
  straightDir = join(tmp, 'straight');
  const logs: string[] = [];
  const r = await trainDetector({ recipe: tinyRecipe(), out: straightDir, ...quiet, onnx: true, plots: true, log: (m) => logs.push(m) });
  assert.equal(r.stopped, false);
  assert.equal(r.globalStep, 4);
  // The epoch lines carry the detection metrics and no top-1 accuracy (the task counts none).
  const epochLines = logs.filter((m) => /^epoch \d\/2: train loss/.test(m));
  assert.equal(epochLines.length, 2, logs.join('\n'));
  for (const m of epochLines) assert.ok(!/ acc /.test(m) && /AP50/.test(m), m);
  const { rows } = readMetrics(straightDir);
  assert.deepEqual(rows.map((x) => x.epoch), [1, 2]);
  for (const row of rows as unknown as Record<string, number>[]) {
    assert.ok(!('train_acc' in row), `detection metrics.jsonl row has train_acc ${row['train_acc']}`);
    for (const k of ['val_AP', 'val_AP50', 'val_AP75']) assert.ok(row[k]! >= 0 && row[k]! <= 1, `${k} = ${row[k]}`);
    assert.ok(row['val_loss']! > 0 && Number.isFinite(row['val_loss']));
    assert.ok(row['val_AP50']! >= row['val_AP75']!);
  }
  for (const f of ['model.safetensors', 'model.onnx', 'best.safetensors', 'last.safetensors', 'test-eval.txt', 'test-eval.json', 'test-pr.png', 'curves.png']) {
    assert.ok(readFileSync(join(straightDir, f)).length > 0, f);
  }
  const rep = JSON.parse(readFileSync(join(straightDir, 'test-eval.json'), 'utf8')) as { images: number; epoch: number; coco: Record<string, number> };
  assert.equal(rep.images, 8);
  assert.equal(rep.epoch, r.bestEpoch);
  assert.equal(Object.keys(rep.coco).length, 12);
  // The model file is the val-chosen checkpoint: best.safetensors' weights, scored once on test.
  const best = loadModelFile(join(straightDir, 'best.safetensors')).weights;
  const model = loadModelFile(join(straightDir, "model.safetensors"));
  for (const [k, v] of best) assert.deepEqual(model.weights.get(k), v, k);
  assert.equal(Number(model.metadata['mnv2.test_AP']), rep.coco['AP']);
  // ONNX Runtime on the model file, as `mnv2 eval --task detect --score 0` runs it: the same 12 numbers.
  assert.ok(r.test!.detections.length > 0);
  await assertOrtReproduces(straightDir, rep.coco, 0);
});

test('resume: stopped mid-epoch and at an epoch end, then resumed, ends bitwise equal to the straight run', { skip }, async () => {
  assert.ok(straightDir, 'needs the straight run');
  const straight = loadModelFile(join(straightDir, 'last.safetensors')).weights;
  for (const stopAt of [1, 2]) {
    const dir = join(tmp, `resumed-${stopAt}`);
    const a = await trainDetector({ recipe: tinyRecipe(), out: dir, ...quiet, stopAfterSteps: stopAt });
    assert.equal(a.stopped, true);
    assert.equal(loadCheckpoint(dir).position!.globalStep, stopAt);
    const b = await trainDetector({ recipe: tinyRecipe({ lr: 1 }), resume: dir, ...quiet });
    assert.equal(b.globalStep, 4);
    const resumed = loadModelFile(join(dir, 'last.safetensors')).weights;
    for (const [k, v] of straight) assert.ok(Buffer.from(v.buffer, v.byteOffset, v.byteLength).equals(Buffer.from(resumed.get(k)!.buffer, resumed.get(k)!.byteOffset, v.byteLength)), `stop at ${stopAt}: ${k} differs`);
    const m = (d: string) => readMetrics(d).rows.map((x) => [x.epoch, x.train_loss, (x as unknown as Record<string, number>)['val_AP']]);
    assert.deepEqual(m(dir), m(straightDir));
  }
});

test('bad datasets: clear errors naming the file and the problem', { skip }, async () => {
  const run = (dataset: string, over: Partial<TrainRecipe> = {}) => trainDetector({ recipe: tinyRecipe({ dataset, ...over }), out: join(tmp, `bad-${Math.random()}`), ...quiet });
  await assert.rejects(run(join(tmp, 'nowhere')), /nowhere: no such file \(a detection dataset is a COCO JSON or a folder with <split>\.json\)/);
  const empty = join(tmp, 'no-json');
  mkdirSync(empty);
  await assert.rejects(run(empty), /no-json: a folder without train\.json/);
  // An image whose size is not its annotation's, and a corrupt image.
  const bad = join(tmp, 'bad');
  mkdirSync(bad);
  writeFileSync(join(bad, 'a.png'), await sharp({ create: { width: 40, height: 30, channels: 3, background: '#808080' } }).png().toBuffer());
  writeFileSync(join(bad, 'b.png'), 'not a png');
  const coco = (file: string) => JSON.stringify({
    images: [{ id: 1, file_name: file, width: 64, height: 64 }],
    annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [2, 2, 10, 10] }],
    categories: [{ id: 1, name: 'thing' }],
  });
  writeFileSync(join(bad, 'train.json'), coco('a.png'));
  await assert.rejects(run(bad), /bad\/a\.png: the image is 40×30, its annotation \(image id 1\) says 64×64/);
  writeFileSync(join(bad, 'train.json'), coco('b.png'));
  await assert.rejects(run(bad), /bad\/b\.png: cannot decode the image/);
  writeFileSync(join(bad, 'train.json'), '{"images": [');
  await assert.rejects(run(bad), /bad\/train\.json: malformed JSON/);
  // The embedded set's folder holding something else is not overwritten.
  const other = join(tmp, 'other');
  mkdirSync(other);
  writeFileSync(join(other, 'keep.txt'), 'mine');
  await assert.rejects(run('fashion-detect', { dataDir: other }), /other: not a fashion-detect set \(no train\.json\) and not empty/);
  assert.equal(readFileSync(join(other, 'keep.txt'), 'utf8'), 'mine');
  assert.throws(() => tinyRecipe({ arch: 'imagenet' }), /trains a detector: --arch must be ssdlite, got imagenet/);
  assert.throws(() => resolvePreset('fashion-mnist', { arch: 'ssdlite' }), /--arch ssdlite is a detector/);
});

test('--weights: a MobileNetV2 classifier seeds the detector backbone (features.*, BN statistics too), a detector all of it at another resolution; a mismatched width is named', { skip }, async () => {
  const cls = buildModel(archConfig('imagenet', { alpha: 0.35, resolution: 32, numClasses: 10 }));
  const clsWeights = initWeights(cls, 11);
  const file = join(tmp, 'classifier.safetensors');
  saveWeights(file, cls, clsWeights);
  const logs: string[] = [];
  const dir = join(tmp, 'from-backbone');
  await trainDetector({ recipe: tinyRecipe({ epochs: 1, lr: 1e-30 }), out: dir, weights: file, ...quiet, log: (m) => logs.push(m) });
  assert.ok(logs.some((l) => /backbone from .*classifier\.safetensors \(312 tensors\); extras and heads freshly initialised/.test(l)), logs.join('\n'));
  const start = loadCheckpoint(join(dir, 'last.safetensors'));
  const fresh = initWeights(start.graph, tinyRecipe().seed);
  let features = 0;
  for (const p of start.graph.params) {
    // lr 1e-30: every parameter is where it started (to 1e-20); only the BN running statistics moved.
    const v = start.weights.get(p.name)!;
    const want = (p.name.startsWith('features.') ? clsWeights : fresh).get(p.name)!;
    assert.ok(v.every((x, i) => Math.abs(x - want[i]!) <= 1e-20), p.name);
    if (p.name.startsWith('features.')) features++;
  }
  assert.ok(features > 100, `${features} backbone parameters compared`);
  // A detector at another resolution: all of it (no shape depends on the input size).
  const det129 = buildModel(archConfig('ssdlite', { alpha: 0.35, resolution: R, numClasses: 10 }));
  const detWeights = initWeights(det129, 5);
  const detFile = join(tmp, 'detector-129.safetensors');
  saveWeights(detFile, det129, detWeights, new Map(), encodeModelInfo({ config: det129.config }));
  const logs161: string[] = [];
  const dir161 = join(tmp, 'from-detector');
  await trainDetector({ recipe: tinyRecipe({ epochs: 1, lr: 1e-30, resolution: 161 }), out: dir161, weights: detFile, ...quiet, log: (m) => logs161.push(m) });
  assert.ok(logs161.some((l) => /starting from the detector .*detector-129\.safetensors \(\d+ tensors\)/.test(l)), logs161.join('\n'));
  const at161 = loadCheckpoint(join(dir161, 'last.safetensors'));
  assert.equal(at161.graph.config.resolution, 161);
  for (const p of at161.graph.params) {
    const v = at161.weights.get(p.name)!;
    const want = detWeights.get(p.name)!;
    assert.ok(v.every((x, i) => Math.abs(x - want[i]!) <= 1e-20), p.name);
  }
  const wide = join(tmp, 'classifier-wide.safetensors');
  const g1 = buildModel(archConfig('imagenet', { alpha: 0.5, resolution: 32, numClasses: 10 }));
  saveWeights(wide, g1, initWeights(g1, 1));
  await assert.rejects(trainDetector({ recipe: tinyRecipe(), out: join(tmp, 'wide'), weights: wide, ...quiet }),
    /classifier-wide\.safetensors: features\.[\d.a-z_]+ has \d+ values, the detector's \d+: the classifier's width \(alpha 0\.5\) must match the detector's \(--alpha, the dataset's classes\)/);
});

test('a torchvision-style run (softmax, dx-dy codes): its model file records the style and ORT detect scores it as training did', { skip }, async () => {
  const dir = join(tmp, 'torchvision-style');
  const r = await trainDetector({ recipe: resolvePreset('fashion-detect-torchvision', { dataset: data, alpha: 0.35, resolution: R, batch: 8, epochs: 1 }), out: dir, ...quiet });
  const model = loadModelFile(join(dir, 'model.safetensors'));
  assert.equal((model.graph.config as { ssdStyle?: string }).ssdStyle, 'torchvision');
  const rep = JSON.parse(readFileSync(join(dir, 'test-eval.json'), 'utf8')) as { coco: Record<string, number> };
  assert.ok(r.test!.detections.length > 0);
  // torchvision's score threshold (0.001), as the training evaluation decodes.
  await assertOrtReproduces(dir, rep.coco, 0.001);
});

/** The mean over epoch `epoch`'s first 2 augmented batches of the BN batch statistics, with a checkpoint's parameters. */
async function preciseStatistics(file: string, epoch: number, recipe: TrainRecipe): Promise<Map<string, Float32Array>> {
  const ck = loadCheckpoint(file);
  // Train-mode passes over the same batches with the checkpoint's parameters, momentum 1/(k + 1).
  const model = new NativeModel(ck.graph, ck.weights, { threads: 2 });
  const task = detection({ style: 'tf', numClasses: 10, anchors: ssdAnchors({ height: R, width: R }).corners });
  const source = detectionBatches(trainSplit, { batchSize: 8, resolution: R, seed: recipe.seed, augment: augmentOptions('crop-flip') });
  let k = 0;
  for await (const b of source.epoch(epoch, { startBatch: 0 })) model.step(b.input, b.size, task, b.target, { bnMomentum: 1 / ++k });
  assert.equal(k, 2);
  return new Map(ck.graph.buffers.filter((b) => /running_(mean|var)$/.test(b.name)).map((b) => [b.name, model.weights.get(b.name)!]));
}

/** A checkpoint's BN statistics are `want` (< 1e-4 relative). */
function assertStatistics(file: string, want: Map<string, Float32Array>): void {
  const got = loadCheckpoint(file).weights;
  let worst = 0;
  for (const [name, w] of want) w.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - got.get(name)![i]!) / (Math.abs(v) + 1e-3))));
  assert.ok(worst < 1e-4, `${file}: worst relative difference ${worst}`);
}

/** A checkpoint's BN statistics are the mean over epoch `epoch`'s first 2 augmented batches, recomputed from its parameters. */
async function assertPreciseStatistics(file: string, epoch: number, recipe: TrainRecipe): Promise<void> {
  assertStatistics(file, await preciseStatistics(file, epoch, recipe));
}

test('--precise-bn 2: the saved BN statistics are the mean over the epoch\'s first 2 augmented batches with the final weights; a resumed run can turn it on', { skip }, async () => {
  const dir = join(tmp, 'precise-bn');
  const recipe = tinyRecipe({ epochs: 1, detection: { style: 'tf', augment: 'crop-flip', preciseBn: 2 } });
  await trainDetector({ recipe, out: dir, ...quiet });
  await assertPreciseStatistics(join(dir, 'last.safetensors'), 0, recipe);
  // Without it (0) the running averages of training stay: different numbers.
  const plain = join(tmp, 'precise-bn-0');
  await trainDetector({ recipe: { ...recipe, detection: { ...recipe.detection!, preciseBn: 0 } }, out: plain, ...quiet });
  const p = loadCheckpoint(join(plain, 'last.safetensors')).weights.get('features.1.conv.0.1.running_var')!;
  assert.notDeepEqual(Array.from(p), Array.from(loadCheckpoint(join(dir, 'last.safetensors')).weights.get('features.1.conv.0.1.running_var')!));
  // Resumed for a second epoch with --precise-bn 2: that epoch's evaluation uses it, and the checkpoint's recipe records it.
  await trainDetector({ recipe, resume: plain, resumeEpochs: 2, resumePreciseBn: 2, ...quiet });
  const resumed = loadCheckpoint(join(plain, 'last.safetensors'));
  assert.equal(resumed.position!.recipe.detection!.preciseBn, 2);
  await assertPreciseStatistics(join(plain, 'last.safetensors'), 1, recipe);
});

test('--freeze-bn 1: the last epoch starts from a PreciseBN estimate and trains with it fixed; the epoch before is trained as usual', { skip }, async () => {
  const dir = join(tmp, 'freeze-bn');
  const recipe = tinyRecipe({ epochs: 2, detection: { style: 'tf', augment: 'crop-flip', preciseBn: 2, freezeBnEpochs: 1 } });
  await trainDetector({ recipe, out: dir, ...quiet, stopAfterSteps: 2 }); // epoch 1 of 2 (2 steps of 8)
  const before = await preciseStatistics(join(dir, 'last.safetensors'), 1, recipe);
  await trainDetector({ recipe, resume: dir, ...quiet });
  assertStatistics(join(dir, 'last.safetensors'), before); // estimated as epoch 2 started, then unchanged by its steps
  // Stopped at the start of the frozen epoch and resumed = straight through (weights and statistics bitwise, val AP).
  const straight = join(tmp, 'freeze-bn-straight');
  await trainDetector({ recipe, out: straight, ...quiet });
  const same = loadCheckpoint(join(straight, 'last.safetensors')).weights;
  for (const [k, v] of loadCheckpoint(join(dir, 'last.safetensors')).weights) assert.deepEqual(same.get(k), v, `straight vs stopped-and-resumed: ${k}`);
  const ap = (d: string) => readMetrics(d).rows.map((r) => (r as unknown as Record<string, number>)['val_AP']);
  assert.deepEqual(ap(straight), ap(dir));
  // Once frozen, the start stays: moving it is refused; an extended run stays frozen to its end, statistics unchanged.
  await assert.rejects(trainDetector({ recipe, resume: straight, resumeFreezeBn: 2, ...quiet }),
    /--freeze-bn 2: the run is at epoch 3, batch 0, and its BN statistics were frozen at the start of epoch 2; with 2 epochs that start would move to epoch 1 \(--freeze-bn 1 keeps it\)/);
  await trainDetector({ recipe, resume: straight, resumeEpochs: 3, ...quiet });
  const extended = loadCheckpoint(join(straight, 'last.safetensors'));
  assert.equal(extended.position!.recipe.detection!.freezeBnEpochs, 2);
  assertStatistics(join(straight, 'last.safetensors'), before);
  // Freezing more epochs than the run has is refused up front.
  assert.throws(() => tinyRecipe({ epochs: 2, detection: { style: 'tf', augment: 'crop-flip', freezeBnEpochs: 3 } }), /--freeze-bn 3 is more than the run's 2 epoch/);
});
