/** SSD losses (values and gradients) against torchvision's SSD.compute_loss and a torch transcription of TF's. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { get, loadFixture, maxAbs, maxAbsDiff } from './helpers/fixtures.js';
import { ssdAnchors } from '../src/detect/anchors.js';
import { iouMatrix, scaleBoxes } from '../src/detect/boxes.js';
import { matchSsdTorchvision, matchTf } from '../src/detect/matcher.js';
import { SSDLITE_HARD_MINER, ssdLossTf, ssdLossTorchvision, type SsdLossInput } from '../src/detect/losses.js';

const fx = loadFixture('detect.safetensors');
const T = (k: string): Float32Array => get(fx.tensors, k);
const anchors = scaleBoxes(ssdAnchors({ height: 160, width: 160 }).corners, 160, 160);
const targets = [0, 1].map((i) => ({ boxes: T(`gt${i}.boxes`), labels: Array.from(T(`gt${i}.labels`)) }));

function input(match: (iou: Float32Array, n: number) => Int32Array): SsdLossInput {
  return {
    clsLogits: T('loss.logits'),
    boxRegression: T('loss.regression'),
    anchors,
    targets,
    matches: targets.map((t) => match(iouMatrix(t.boxes, anchors), t.labels.length)),
  };
}

function close(got: number, want: number, what: string): void {
  assert.ok(Math.abs(got - want) < 1e-5 * Math.abs(want), `${what}: ${got} vs ${want}`);
}

test('torchvision SSD.compute_loss: both losses and their gradients (2 images, 540 anchors, 4 classes)', () => {
  const r = ssdLossTorchvision(input((iou, n) => matchSsdTorchvision(iou, n)));
  const [loc, cls] = T('tv.loss');
  close(r.localization, loc!, 'bbox_regression');
  close(r.classification, cls!, 'classification');
  assert.equal(r.normalizer, 15);
  const gl = T('tv.grad_logits');
  const gr = T('tv.grad_regression');
  assert.ok(maxAbsDiff(r.gradLogits, gl) < 1e-6 * maxAbs(gl) + 1e-9, `logits grad ${maxAbsDiff(r.gradLogits, gl)}`);
  assert.ok(maxAbsDiff(r.gradRegression, gr) < 1e-5 * maxAbs(gr), `regression grad ${maxAbsDiff(r.gradRegression, gr)}`);
  // Hard negatives: 3 per positive get a gradient, the other background anchors none.
  const rows = (g: Float32Array) => Array.from({ length: g.length / 4 }, (_, a) => g.subarray(4 * a, 4 * a + 4).some((v) => v !== 0)).filter(Boolean).length;
  assert.equal(rows(r.gradLogits), 15 * 4);
});

test('TF SSDMetaArch.loss with HardExampleMiner: both losses and their gradients', () => {
  const x = input((iou, n) => matchTf(iou, n));
  const r = ssdLossTf(x);
  const [loc, cls] = T('tf.loss');
  close(r.localization, loc!, 'localization');
  close(r.classification, cls!, 'classification');
  assert.equal(r.normalizer, Number(fx.metadata.tf_normalizer));
  const gl = T('tf.grad_logits');
  const gr = T('tf.grad_regression');
  assert.ok(maxAbsDiff(r.gradLogits, gl) < 1e-6 * maxAbs(gl) + 1e-9, `logits grad ${maxAbsDiff(r.gradLogits, gl)}`);
  assert.ok(maxAbsDiff(r.gradRegression, gr) < 1e-5 * maxAbs(gr), `regression grad ${maxAbsDiff(r.gradRegression, gr)}`);
  // Anchor 1 of image 0 decodes to nearly anchor 0's box: the miner's NMS at 0.99 keeps only one of the two.
  const has = (a: number) => r.gradLogits.subarray(4 * a, 4 * a + 4).some((v) => v !== 0);
  assert.ok(has(0) && !has(1), 'the lower-loss one of the two near-duplicate hard negatives is suppressed');
  // Fewer hard examples (40): the miner's top-k cuts positives too.
  const r40 = ssdLossTf(x, { miner: { ...SSDLITE_HARD_MINER, numHardExamples: 40 } });
  const [loc40, cls40] = T('tf40.loss');
  close(r40.localization, loc40!, 'localization@40');
  close(r40.classification, cls40!, 'classification@40');
  assert.ok(maxAbsDiff(r40.gradLogits, T('tf40.grad_logits')) < 1e-6 * maxAbs(T('tf40.grad_logits')));
  assert.ok(r40.classification < r.classification / 2);
});

test('gradients agree with central finite differences (TF flavour, float64 check on a few logits)', () => {
  const x = input((iou, n) => matchTf(iou, n));
  const r = ssdLossTf(x);
  const logits = Float32Array.from(x.clsLogits);
  const total = (l: Float32Array) => {
    const v = ssdLossTf({ ...x, clsLogits: l });
    return v.localization + v.classification;
  };
  for (const k of [0, 5, 4 * 17 + 2]) {
    const h = 1e-2;
    const p = Float32Array.from(logits);
    const m = Float32Array.from(logits);
    p[k]! += h;
    m[k]! -= h;
    const fd = (total(p) - total(m)) / (2 * h);
    assert.ok(Math.abs(fd - r.gradLogits[k]!) < 1e-3, `logit ${k}: fd ${fd} vs ${r.gradLogits[k]}`);
  }
});

test('bad input is named: label out of range, wrong tensor sizes', () => {
  const x = input((iou, n) => matchTf(iou, n));
  assert.throws(() => ssdLossTf({ ...x, targets: [{ boxes: targets[0]!.boxes, labels: [1, 2, 3, 4, 1] }, targets[1]!] }), /labels\[3\] = 4 is not in 1\.\.3/);
  assert.throws(() => ssdLossTorchvision({ ...x, boxRegression: new Float32Array(10) }), /boxRegression has 10 values/);
});
