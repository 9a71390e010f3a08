/**
 * The detection Task on arrays (no engine): graph outputs in, loss and output gradients out, equal to PyTorch's
 * (torchvision SSD.compute_loss, and the torch transcription of TF's SSDMetaArch.loss) from
 * test/fixtures/detect.safetensors (2 images, 540 anchors at 160 px, 3 classes + background); decoding equal to
 * torchvision's SSD.postprocess_detections.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { get, loadFixture, maxAbs, maxAbsDiff } from './helpers/fixtures.js';
import { ssdAnchors } from '../src/detect/anchors.js';
import { scaleBoxes } from '../src/detect/boxes.js';
import { detection } from '../src/task/detection.js';

const fx = loadFixture('detect.safetensors');
const T = (k: string): Float32Array => get(fx.tensors, k);
const anchors = scaleBoxes(ssdAnchors({ height: 160, width: 160 }).corners, 160, 160);
const targets = [0, 1].map((i) => ({ boxes: T(`gt${i}.boxes`), labels: Array.from(T(`gt${i}.labels`)) }));
const outputs = new Map([['boxes', T('loss.regression')], ['logits', T('loss.logits')]]);
const A = 540;

function grads(): Map<string, Float32Array> {
  return new Map([['boxes', new Float32Array(2 * A * 4)], ['logits', new Float32Array(2 * A * 4)]]);
}

function close(got: number, want: number, what: string): void {
  assert.ok(Math.abs(got - want) < 1e-5 * Math.abs(want), `${what}: ${got} vs ${want}`);
}

for (const [style, key, matched] of [['torchvision', 'tv', 15], ['tf', 'tf', Number(fx.metadata.tf_normalizer)]] as const) {
  test(`${style} task: loss = localization + classification and both output gradients equal PyTorch's`, () => {
    const task = detection({ style, numClasses: 3, anchors });
    assert.equal(task.bestKey, 'val_AP');
    task.validate(targets, 2);
    const g = grads();
    const r = task.loss(outputs, targets, 2, g);
    const [loc, cls] = T(`${key}.loss`);
    close(r.counts['localization']!, loc!, 'localization');
    close(r.counts['classification']!, cls!, 'classification');
    close(r.loss, loc! + cls!, 'loss');
    assert.equal(r.counts['matched'], matched);
    assert.equal(r.counts['boxes'], 8);
    const gl = T(`${key}.grad_logits`);
    const gr = T(`${key}.grad_regression`);
    assert.ok(maxAbs(gl) > 1e-3 && maxAbs(gr) > 1e-3, 'the reference gradients are not zero');
    assert.ok(maxAbsDiff(g.get('logits')!, gl) < 1e-6 * maxAbs(gl) + 1e-9, `logits grad ${maxAbsDiff(g.get('logits')!, gl)}`);
    assert.ok(maxAbsDiff(g.get('boxes')!, gr) < 1e-5 * maxAbs(gr), `boxes grad ${maxAbsDiff(g.get('boxes')!, gr)}`);
    // The matches the loss used are the reference matcher's.
    assert.deepEqual(task.match(targets).map((m) => Array.from(m)), [0, 1].map((i) => Array.from(T(`gt${i}.match_${style === 'tf' ? 'tf' : 'ssd'}`))));
  });
}

test('torchvision task decode = SSD.postprocess_detections (score 0.3, NMS 0.6, clipped to the 160 px image)', () => {
  const task = detection({ style: 'torchvision', numClasses: 3, anchors });
  const dets = task.decode(outputs, 2, { scoreThreshold: 0.3, iouThreshold: 0.6, maxDetections: 100, clipTo: { width: 160, height: 160 } });
  dets.forEach((d, i) => {
    assert.equal(d.count, T(`post${i}.scores`).length);
    assert.ok(d.count > 10, `${d.count} detections`);
    assert.ok(maxAbsDiff(d.scores, T(`post${i}.scores`)) < 1e-6);
    assert.deepEqual(Array.from(d.classes), Array.from(T(`post${i}.labels`)));
    assert.ok(maxAbsDiff(d.boxes, T(`post${i}.boxes`)) < 1e-3, `boxes ${maxAbsDiff(d.boxes, T(`post${i}.boxes`))}`);
  });
});

test('an image without gt boxes: nothing matched, only the background terms (tf: min 3 negatives)', () => {
  const task = detection({ style: 'tf', numClasses: 3, anchors });
  const empty = [{ boxes: new Float32Array(0), labels: [] }, targets[1]!];
  const g = grads();
  const r = task.loss(outputs, empty, 2, g);
  assert.equal(r.counts['boxes'], 3);
  const rows = (b: number) => Array.from({ length: A }, (_, a) => g.get('logits')!.subarray((b * A + a) * 4, (b * A + a + 1) * 4).some((v) => v !== 0)).filter(Boolean).length;
  assert.equal(rows(0), 3, 'minNegativesPerImage hard negatives of the empty image get a gradient');
  assert.ok(g.get('boxes')!.subarray(0, A * 4).every((v) => v === 0), 'no box gradient without a match');
});

test('bad targets and outputs are named before any work', () => {
  const task = detection({ style: 'tf', numClasses: 3, anchors });
  assert.throws(() => task.validate(targets, 3), /targets has 2 images for batch 3/);
  assert.throws(() => task.validate([{ boxes: targets[0]!.boxes, labels: [1, 2, 3, 4, 1] }, targets[1]!], 2), /targets\[0\]\.labels\[3\] = 4 is not a class in 1\.\.3/);
  assert.throws(() => task.validate([{ boxes: Float32Array.of(5, 5, 5, 9), labels: [1] }], 1), /targets\[0\]\.boxes\[0\] = \[5, 5, 5, 9\] is not a box/);
  assert.throws(() => task.loss(new Map([['boxes', T('loss.regression')]]), targets, 2, grads()), /the model has no 'logits' output/);
  assert.throws(() => task.loss(outputs, targets, 1, grads()), /'logits' output has 4320 values, expected 2160/);
  assert.throws(() => detection({ style: 'tf', numClasses: 0, anchors }), /numClasses must be a positive integer/);
});
