/** src/detect anchors, IoU, box coder, matchers and NMS against tools/make-detect-fixtures.py (torchvision 0.14). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { get, loadFixture, maxAbs, maxAbsDiff } from './helpers/fixtures.js';
import { ssdAnchors, ssdliteFeatureMapSizes, boxSpecs } from '../src/detect/anchors.js';
import { iouMatrix, scaleBoxes } from '../src/detect/boxes.js';
import { decodeBoxes, encodeBoxes, TF_BOX_CODER, TORCHVISION_BOX_CODER } from '../src/detect/box-coder.js';
import { matchSsdTorchvision, matchTf, matchTorchvision } from '../src/detect/matcher.js';
import { batchedNms, multiclassNms, nms } from '../src/detect/nms.js';

const fx = loadFixture('detect.safetensors');
const T = (k: string): Float32Array => get(fx.tensors, k);
const ints = (k: string): number[] => Array.from(T(k));

test('anchors: 1917 at 300 (19,10,5,3,2,1; 3 then 6 per location), 2034 at 320', () => {
  assert.deepEqual(ssdliteFeatureMapSizes(300), [19, 10, 5, 3, 2, 1]);
  assert.deepEqual(ssdliteFeatureMapSizes(320), [20, 10, 5, 3, 2, 1]);
  const a = ssdAnchors({ height: 300, width: 300 });
  assert.equal(a.count, 1917);
  assert.deepEqual(a.perLocation, [3, 6, 6, 6, 6, 6]);
  assert.equal(ssdAnchors({ height: 320, width: 320 }).count, 20 * 20 * 3 + 600 + 150 + 54 + 24 + 6);
  // First anchor: scale 0.1 square at the center of cell (0, 0) of the 19×19 map.
  assert.deepEqual(Array.from(a.center.subarray(0, 4)).map((v) => +v.toFixed(6)), [0.026316, 0.026316, 0.1, 0.1]);
  // 1×1 map: spec (0.95, 0.3333) has h = 0.95/√0.3333 = 1.64553 (the layout file's number), then the
  // interpolated (√(0.95·1.0), 1) centered at (0.5, 0.5).
  const ar3 = a.center.subarray(4 * 1915, 4 * 1916);
  assert.ok(Math.abs(ar3[2]! - 1.64553) < 1e-5 && Math.abs(ar3[3]! - 0.95 * Math.sqrt(0.3333)) < 1e-6, `${ar3}`);
  assert.ok(maxAbsDiff(a.center.subarray(4 * 1916), [0.5, 0.5, Math.sqrt(0.95), Math.sqrt(0.95)]) < 1e-7);
  // Interpolated scale of layer 1: √(0.35·0.5).
  assert.ok(Math.abs(boxSpecs()[1]![5]!.scale - Math.sqrt(0.35 * 0.5)) < 1e-12);
  // Corner form is the same boxes.
  assert.ok(maxAbsDiff(a.corners.subarray(0, 4), [0.026316 - 0.05, 0.026316 - 0.05, 0.026316 + 0.05, 0.026316 + 0.05]) < 1e-6);
});

test('anchors at 160 equal the transcription of create_ssd_anchors in the fixture; non-square inputs scale by min side', () => {
  const a = ssdAnchors({ height: 160, width: 160 });
  assert.equal(a.count, 540);
  assert.ok(maxAbsDiff(a.center, T('anchors.center')) < 1e-7);
  const r = ssdAnchors({ height: 300, width: 600 });
  assert.deepEqual(ssdliteFeatureMapSizes(600).slice(0, 2), [38, 19]);
  // base_anchor_size · min/H and · min/W: heights as at 300, widths halved.
  assert.ok(Math.abs(r.center[2]! - 0.1) < 1e-7 && Math.abs(r.center[3]! - 0.05) < 1e-7);
});

test('IoU equals torchvision.ops.box_iou (including an exact duplicate = 1)', () => {
  const out = iouMatrix(T('iou.a'), T('iou.b'));
  assert.ok(maxAbsDiff(out, T('iou.out')) < 1e-6);
  assert.ok(Math.abs(out[2 * 9 + 3]! - 1) < 1e-7);
});

test('box coder: torchvision BoxCoder(10,10,5,5) and the TF FasterRcnnBoxCoder, encode and decode', () => {
  const boxes = T('coder.boxes');
  const anchors = T('coder.anchors');
  const tv = encodeBoxes(boxes, anchors, TORCHVISION_BOX_CODER);
  const tf = encodeBoxes(boxes, anchors, TF_BOX_CODER);
  assert.ok(maxAbsDiff(tv, T('coder.tv_encoded')) < 2e-5 * maxAbs(tv), `tv ${maxAbsDiff(tv, T('coder.tv_encoded'))}`);
  assert.ok(maxAbsDiff(tf, T('coder.tf_encoded')) < 2e-5 * maxAbs(tf));
  // Same numbers, TF order (ty, tx, th, tw) vs torchvision (dx, dy, dw, dh).
  assert.ok(Math.abs(tf[0]! - tv[1]!) < 1e-4 && Math.abs(tf[2]! - tv[3]!) < 1e-4);
  const codes = T('coder.codes');
  const tvd = decodeBoxes(codes, anchors, TORCHVISION_BOX_CODER);
  assert.ok(maxAbsDiff(tvd, T('coder.tv_decoded')) < 1e-5 * maxAbs(tvd));
  // Row 0 has dw = dh = 30/5 = 6 > log(1000/16): torchvision clamps, TF does not.
  const tfd = decodeBoxes(codes, anchors, TF_BOX_CODER);
  assert.ok(maxAbsDiff(tfd, T('coder.tf_decoded')) < 1e-5 * maxAbs(tfd));
  assert.ok(tfd[2]! - tfd[0]! > 1.5 * (tvd[2]! - tvd[0]!), 'the clamp shows on row 0');
  // Round trip.
  assert.ok(maxAbsDiff(decodeBoxes(tf, anchors, TF_BOX_CODER), boxes) < 1e-3);
});

test('matchers on a matrix with ties, a shared best anchor and a gt that overlaps nothing', () => {
  const m = T('match.tie_iou');
  assert.deepEqual(Array.from(matchSsdTorchvision(m, 3)), ints('match.tie_ssd'));
  assert.deepEqual(Array.from(matchTorchvision(m, 3, { allowLowQualityMatches: true })), ints('match.tie_lowq'));
  assert.deepEqual(Array.from(matchTf(m, 3)), ints('match.tie_tf'));
  // The documented differences: anchor 1 is the best of gt 0 and gt 1 — TF gives it to gt 0, SSDMatcher to gt 1;
  // Matcher(allow_low_quality) matches every anchor, since gt 2's best IoU is 0.
  assert.deepEqual(ints('match.tie_tf'), [2, 0, 0, -1, -1]);
  assert.deepEqual(ints('match.tie_ssd'), [2, 1, 0, -1, -1]);
  assert.deepEqual(ints('match.tie_lowq'), [0, 0, 0, 1, 0]);
});

test('matchers on random gts against the 540 anchors (pixels) equal torchvision and the TF transcription', () => {
  const anchors = scaleBoxes(ssdAnchors({ height: 160, width: 160 }).corners, 160, 160);
  for (const i of [0, 1]) {
    const gt = T(`gt${i}.boxes`);
    const iou = iouMatrix(gt, anchors);
    const n = gt.length / 4;
    assert.deepEqual(Array.from(matchSsdTorchvision(iou, n)), ints(`gt${i}.match_ssd`));
    assert.deepEqual(Array.from(matchTorchvision(iou, n, { allowLowQualityMatches: true })), ints(`gt${i}.match_lowq`));
    assert.deepEqual(Array.from(matchTf(iou, n)), ints(`gt${i}.match_tf`));
    assert.ok(ints(`gt${i}.match_ssd`).filter((v) => v >= 0).length >= n, 'every gt has an anchor');
  }
  assert.deepEqual(Array.from(matchTf(new Float32Array(0), 0).subarray(0, 0)), []);
  assert.deepEqual(Array.from(matchSsdTorchvision(new Float32Array(0), 0)), []);
});

test('nms and batched_nms equal torchvision (IoU 0.6, 300 boxes, 4 classes)', () => {
  const boxes = T('nms.boxes');
  const scores = T('nms.scores');
  assert.deepEqual(nms(boxes, scores, 0.6), ints('nms.keep'));
  const keep = batchedNms(boxes, scores, T('nms.classes'), 0.6);
  assert.deepEqual(keep, ints('nms.batched_keep'));
  assert.ok(keep.length > ints('nms.keep').length && keep.length < 300, `${keep.length}`);
});

test('nms with its area window = the full pairwise comparison: duplicates, zero-area boxes, thresholds -0.1 to 1', () => {
  // The plain greedy NMS, every candidate against every kept box.
  const reference = (b: Float32Array, s: Float32Array, t: number, max: number): number[] => {
    const order = Array.from(s, (_, i) => i).sort((p, q) => s[q]! - s[p]! || p - q);
    const keep: number[] = [];
    for (const i of order) if (keep.length < max && keep.every((k) => iouMatrix(b.subarray(4 * i, 4 * i + 4), b.subarray(4 * k, 4 * k + 4))[0]! <= t)) keep.push(i);
    return keep;
  };
  let seed = 11;
  const r = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let trial = 0; trial < 20; trial++) {
    const n = 150;
    const boxes = new Float32Array(4 * n);
    for (let i = 0; i < n; i++) {
      const [x, y, w, h] = [r(), r(), r() * 0.3, r() * 0.3];
      boxes.set(i % 17 === 0 ? [x, y, x, y + h] : [x, y, x + w, y + h], 4 * i); // some zero-area boxes
      if (i % 10 === 9) boxes.set(boxes.subarray(4 * (i - 1), 4 * i).map((v) => v + (trial % 2 ? 0 : 1e-7)), 4 * i); // (near-)duplicates
    }
    const scores = Float32Array.from({ length: n }, () => Math.round(r() * 20) / 20); // ties
    for (const t of [-0.1, 0, 0.3, 0.5, 0.6, 0.99, 1]) {
      for (const max of [Infinity, 25]) assert.deepEqual(nms(boxes, scores, t, max), reference(boxes, scores, t, max), `trial ${trial}, t ${t}, max ${max}`);
    }
  }
});

test('multiclassNms with its early cut = every class NMSed in full, then merged: ties, caps, clipping, thresholds', () => {
  // The plain definition: each class in column order, all its candidates through NMS, merged by a stable sort.
  const reference = (b: Float32Array, sc: Float32Array, o: Parameters<typeof multiclassNms>[2]) => {
    const n = b.length / 4;
    const C = sc.length / n;
    const cb = o.clipTo ? b.map((v, k) => Math.min(Math.max(v, 0), k % 2 ? o.clipTo!.height : o.clipTo!.width)) : b;
    const picked: { i: number; c: number; s: number }[] = [];
    for (let c = 0; c < C; c++) {
      if (o.skipClasses?.includes(c)) continue;
      const idx = Array.from({ length: n }, (_, i) => i)
        .filter((i) => sc[i * C + c]! > o.scoreThreshold && (!o.clipTo || (cb[4 * i + 2]! - cb[4 * i]!) * (cb[4 * i + 3]! - cb[4 * i + 1]!) > 0));
      const s = Float32Array.from(idx, (i) => sc[i * C + c]!);
      const sub = new Float32Array(4 * idx.length);
      idx.forEach((i, k) => sub.set(cb.subarray(4 * i, 4 * i + 4), 4 * k));
      for (const k of nms(sub, s, o.iouThreshold, o.maxPerClass)) picked.push({ i: idx[k]!, c, s: s[k]! });
    }
    return picked.sort((p, q) => q.s - p.s).slice(0, o.maxTotal);
  };
  let seed = 5;
  const r = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  let cut = 0;
  for (let trial = 0; trial < 40; trial++) {
    const [n, C] = [120, 6];
    const boxes = Float32Array.from({ length: 4 * n }, () => 0);
    for (let i = 0; i < n; i++) {
      const [x, y] = [r() * 1.1 - 0.05, r() * 1.1 - 0.05];
      boxes.set([x, y, x + r() * 0.4, y + r() * 0.4], 4 * i);
    }
    // Coarse scores: many ties within and across classes; one class far above the rest now and then.
    const scores = Float32Array.from({ length: n * C }, (_, k) => Math.round(r() * 10) / 10 * (trial % 3 === 0 && k % C === 4 ? 1 : 0.5));
    for (const o of [
      { scoreThreshold: 1e-8, iouThreshold: 0.6, maxPerClass: 100, maxTotal: 100, clipTo: { width: 1, height: 1 }, skipClasses: [0] },
      { scoreThreshold: 0.001, iouThreshold: 0.55, maxPerClass: Infinity, maxTotal: 30, skipClasses: [0] },
      { scoreThreshold: 0.2, iouThreshold: 0.3, maxPerClass: 4, maxTotal: 10 },
      { scoreThreshold: 0, iouThreshold: 0.6, maxPerClass: 100, maxTotal: Infinity },
    ]) {
      const got = multiclassNms(boxes, scores, o);
      const want = reference(boxes, scores, o);
      const where = `trial ${trial}, ${JSON.stringify(o)}`;
      assert.deepEqual([...got.sources], want.map((p) => p.i), where);
      assert.deepEqual([...got.classes], want.map((p) => p.c), where);
      assert.deepEqual([...got.scores], want.map((p) => p.s), where);
      if (want.length === o.maxTotal) cut++;
    }
  }
  assert.ok(cut >= 40, `the maxTotal cut was reached in ${cut} cases`);
  // A tie at the bar: class 2 (visited first: best 0.9) fills the 10 with 0.9 and nine of its 0.5s; class 1's 0.5s
  // then tie with the bar and, being the lower class, win every place after the 0.9.
  const boxes = Float32Array.from({ length: 4 * 21 }, (_, k) => (k % 4 < 2 ? Math.floor(k / 4) : Math.floor(k / 4) + 0.5));
  const scores = new Float32Array(21 * 3);
  for (let i = 0; i < 10; i++) [scores[i * 3 + 1], scores[(10 + i) * 3 + 2]] = [0.5, 0.5];
  scores[20 * 3 + 2] = 0.9;
  const d = multiclassNms(boxes, scores, { scoreThreshold: 0.1, iouThreshold: 0.5, maxPerClass: 100, maxTotal: 10 });
  assert.deepEqual([...d.classes], [2, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  assert.deepEqual([...d.sources], [20, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
});

test('multiclassNms (TF batch_multiclass_non_max_suppression) = torchvision SSD.postprocess_detections on the same scores', () => {
  const numAnchors = 540;
  const C = Number(fx.metadata.num_classes);
  const anchors = scaleBoxes(ssdAnchors({ height: 160, width: 160 }).corners, 160, 160);
  const logits = T('loss.logits');
  const reg = T('loss.regression');
  for (const i of [0, 1]) {
    const scores = new Float32Array(numAnchors * C);
    for (let a = 0; a < numAnchors; a++) {
      const row = logits.subarray((i * numAnchors + a) * C, (i * numAnchors + a + 1) * C);
      const mx = Math.max(...row);
      const z = row.reduce((s, v) => s + Math.exp(v - mx), 0);
      for (let c = 0; c < C; c++) scores[a * C + c] = Math.exp(row[c]! - mx) / z;
    }
    const boxes = decodeBoxes(reg.subarray(i * numAnchors * 4, (i + 1) * numAnchors * 4), anchors, TORCHVISION_BOX_CODER);
    const d = multiclassNms(boxes, scores, {
      scoreThreshold: 0.3, iouThreshold: 0.6, maxPerClass: numAnchors, maxTotal: 100, clipTo: { width: 160, height: 160 }, skipClasses: [0],
    });
    assert.equal(d.count, T(`post${i}.scores`).length);
    assert.ok(maxAbsDiff(d.scores, T(`post${i}.scores`)) < 1e-6);
    assert.deepEqual(Array.from(d.classes), ints(`post${i}.labels`));
    assert.ok(maxAbsDiff(d.boxes, T(`post${i}.boxes`)) < 1e-3, `${maxAbsDiff(d.boxes, T(`post${i}.boxes`))}`);
    // Per-class cap: at most 5 per class → at most 15.
    const capped = multiclassNms(boxes, scores, { scoreThreshold: 0.3, iouThreshold: 0.6, maxPerClass: 5, maxTotal: 100, skipClasses: [0] });
    assert.equal(capped.count, 15);
  }
});
