/** COCO (pycocotools COCOeval) and VOC AP on small scenes whose numbers are derived by hand in the comments. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cocoEvaluate, defaultCocoParams, formatCocoStats, type CocoDetection, type CocoGroundTruth } from '../src/detect/coco-eval.js';
import { vocAp, vocClassAp } from '../src/detect/voc-eval.js';

const near = (got: number, want: number, what = ''): void => assert.ok(Math.abs(got - want) < 1e-9, `${what}: ${got} vs ${want}`);

function gtSet(images: number[], cats: number[], anns: [number, number, number[], number?][]): CocoGroundTruth {
  return {
    images: images.map((id) => ({ id })),
    categories: cats.map((id) => ({ id })),
    annotations: anns.map(([image_id, category_id, bbox, iscrowd], i) => ({ id: i + 1, image_id, category_id, bbox, iscrowd: iscrowd ?? 0 })),
  };
}
const det = (image_id: number, category_id: number, bbox: number[], score: number): CocoDetection => ({ image_id, category_id, bbox, score });

test('params are pycocotools: 10 IoU thresholds (0.75 is one of them exactly), 101 recall points', () => {
  const p = defaultCocoParams();
  assert.equal(p.iouThrs.length, 10);
  assert.ok(p.iouThrs.includes(0.5) && p.iouThrs.includes(0.75) && p.iouThrs[9] === 0.95);
  assert.equal(p.recThrs.length, 101);
  assert.equal(p.recThrs[50], 0.5);
});

test('TP, FP, TP at IoU 1 and 0.72: AP = (84.33/101 + 51/101)/2, AP50 = 84.33/101, AP75 = 51/101, AR = 0.75', () => {
  // Two large gts; sorted detections: exact hit (TP), a miss (FP), IoU 0.72 with gt 2 (TP for t ≤ 0.70, FP above).
  // t ≤ 0.7: recall .5 .5 1, precision 1 .5 .667 → envelope 1 .667 .667 → 51 recall points at 1, 50 at 2/3.
  // t ≥ 0.75: recall .5 .5 .5 → 51 points at 1, 50 at 0.
  const gt = gtSet([1], [1], [[1, 1, [0, 0, 100, 100]], [1, 1, [200, 200, 100, 100]]]);
  const r = cocoEvaluate(gt, [det(1, 1, [0, 0, 100, 100], 0.9), det(1, 1, [400, 0, 100, 100], 0.8), det(1, 1, [200, 200, 100, 72], 0.7)]);
  const hi = (51 + 50 * (2 / 3)) / 101;
  const lo = 51 / 101;
  near(r.stats[0]!, (hi + lo) / 2, 'AP');
  near(r.stats[1]!, hi, 'AP50');
  near(r.stats[2]!, lo, 'AP75');
  near(r.stats[3]!, -1, 'AP small: no small gt');
  near(r.stats[4]!, -1, 'AP medium');
  near(r.stats[5]!, (hi + lo) / 2, 'AP large');
  near(r.stats[6]!, 0.5, 'AR1');
  near(r.stats[7]!, 0.75, 'AR10');
  near(r.stats[8]!, 0.75, 'AR100');
  assert.match(formatCocoStats(r.stats), /Average Precision {2}\(AP\) @\[ IoU=0\.50:0\.95 \| area= {3}all \| maxDets=100 \] = 0\.670/);
});

test('crowd: detections inside a crowd box are ignored (IoU = intersection / det area), any number of them', () => {
  const anns: [number, number, number[], number?][] = [[1, 1, [0, 0, 50, 50]], [1, 1, [100, 0, 200, 200], 1]];
  const dets = [det(1, 1, [120, 20, 50, 50], 0.95), det(1, 1, [130, 30, 40, 40], 0.9), det(1, 1, [0, 0, 50, 50], 0.5)];
  const r = cocoEvaluate(gtSet([1], [1], anns), dets);
  near(r.stats[0]!, 1, 'AP with crowd');
  near(r.stats[8]!, 1, 'AR: the crowd gt is not counted');
  // The same box as a regular gt: two false positives first (IoU 0.0625, 0.04), then the hit; recall 0.5 at best.
  const plain = cocoEvaluate(gtSet([1], [1], [[1, 1, [0, 0, 50, 50]], [1, 1, [100, 0, 200, 200], 0]]), dets);
  // recall 0 0 .5, precision 0 0 1/3 → envelope 1/3 → 51 recall points at 1/3.
  near(plain.stats[1]!, (51 / 3) / 101, 'AP50 without crowd');
  // A detection overlapping a regular gt (IoU 0.5) and the crowd (1.0) goes to the regular gt at t = 0.5 (a TP:
  // AP50 = 1); above 0.5 only the crowd matches, so it is ignored and the regular gt is missed (AP 0): AP = 1/10.
  const both = cocoEvaluate(gtSet([1], [1], [[1, 1, [100, 0, 50, 100]], [1, 1, [100, 0, 200, 200], 1]]), [det(1, 1, [100, 0, 50, 50], 0.9)]);
  near(both.stats[1]!, 1, 'AP50: regular gt first');
  near(both.stats[0]!, 0.1, 'AP: crowd above 0.5');
});

test('duplicates are false positives; an image without gt contributes its detections as false positives', () => {
  const gt = gtSet([1, 2], [1], [[1, 1, [0, 0, 100, 100]], [1, 1, [200, 200, 100, 100]]]);
  const dup = cocoEvaluate(gt, [det(1, 1, [0, 0, 100, 100], 0.9), det(1, 1, [0, 0, 100, 100], 0.8), det(1, 1, [200, 200, 100, 100], 0.7)]);
  near(dup.stats[1]!, (51 + 50 * (2 / 3)) / 101, 'duplicate second: TP FP TP');
  // Image 2 has no gt: its detection (0.99) is a FP ranked first; recall 0 .5 1, precision 0 .5 .667 → envelope .667.
  const extra = cocoEvaluate(gt, [det(2, 1, [0, 0, 10, 10], 0.99), det(1, 1, [0, 0, 100, 100], 0.9), det(1, 1, [200, 200, 100, 100], 0.7)]);
  near(extra.stats[1]!, 2 / 3, 'FP on the empty image');
  assert.throws(() => cocoEvaluate(gt, [det(7, 1, [0, 0, 1, 1], 0.5)]), /image_id 7 is not in the ground truth/);
});

test('categories: no gt → −1 (left out of the mean), gt without detections → 0; maxDets; area ranges', () => {
  const gt = gtSet([1], [1, 2, 3], [[1, 1, [0, 0, 100, 100]], [1, 2, [0, 0, 100, 100]]]);
  const r = cocoEvaluate(gt, [det(1, 1, [0, 0, 100, 100], 0.9), det(1, 3, [0, 0, 100, 100], 0.9)]);
  near(r.stats[0]!, 0.5, 'mean of cat 1 (1) and cat 2 (0); cat 3 has no gt');
  assert.equal(r.precision[0]![0]![2]![0]![2], -1);
  assert.equal(r.precision[0]![0]![1]![0]![2], 0);
  const none = cocoEvaluate(gtSet([1], [1], []), [det(1, 1, [0, 0, 10, 10], 0.5)]);
  assert.deepEqual(none.stats, new Array(12).fill(-1));
  // Two gts, two exact detections: AR1 0.5, AR10 1.
  const two = cocoEvaluate(gtSet([1], [1], [[1, 1, [0, 0, 100, 100]], [1, 1, [200, 200, 100, 100]]]), [
    det(1, 1, [0, 0, 100, 100], 0.9), det(1, 1, [200, 200, 100, 100], 0.8),
  ]);
  near(two.stats[6]!, 0.5, 'AR1');
  near(two.stats[7]!, 1, 'AR10');
  // A small (20²) and a large gt, both found, plus an unmatched small FP: for 'large' the FP is outside the range → ignored.
  const areas = cocoEvaluate(gtSet([1], [1], [[1, 1, [0, 0, 20, 20]], [1, 1, [200, 200, 100, 100]]]), [
    det(1, 1, [500, 500, 10, 10], 0.95), det(1, 1, [0, 0, 20, 20], 0.9), det(1, 1, [200, 200, 100, 100], 0.8),
  ]);
  near(areas.stats[5]!, 1, 'AP large');
  near(areas.stats[4]!, -1, 'AP medium');
  // 'small': FP (small, counted) then the small TP; the large TP is ignored there → recall 0, 1; precision 0, .5.
  near(areas.stats[3]!, 0.5, 'AP small');
  // 'all': FP, TP, TP → recall 0 .5 1, precision 0 .5 .667 → 2/3.
  near(areas.stats[0]!, 2 / 3, 'AP all');
});

test('useCats 0 (class-agnostic): a box found with the wrong label counts, duplicates across labels are false positives', () => {
  // Two gts (cat 1, cat 2); detections: gt 1 labelled 2 (0.9), gt 2 labelled 2 (0.8), gt 1 again labelled 1 (0.7).
  const gt = gtSet([1], [1, 2], [[1, 1, [0, 0, 100, 100]], [1, 2, [200, 200, 100, 100]]]);
  const dets = [det(1, 2, [0, 0, 100, 100], 0.9), det(1, 2, [200, 200, 100, 100], 0.8), det(1, 1, [0, 0, 100, 100], 0.7)];
  // With categories: cat 1: one TP → AP 1; cat 2: FP then TP → recall 0 1, precision 0 .5 → 0.5. Mean 0.75.
  near(cocoEvaluate(gt, dets).stats[1]!, 0.75, 'AP50 with categories');
  // Agnostic: TP, TP, FP (the second hit of gt 1) → recall .5 1 1, precision 1 1 .667 → envelope 1 → AP 1.
  const agnostic = cocoEvaluate(gt, dets, { ...defaultCocoParams(), useCats: false });
  near(agnostic.stats[1]!, 1, 'AP50 agnostic');
  near(agnostic.stats[8]!, 1, 'AR100 agnostic');
  assert.deepEqual(agnostic.catIds, [-1], "pycocotools' pseudo-category");
  assert.equal(agnostic.precision[0]![0]!.length, 1);
});

test('VOC AP: 11-point and all-point on TP, FP, TP; difficult gts; the +1 pixel convention', () => {
  // recall .5 .5 1, precision 1 .5 .667: 11-point = (6·1 + 5·2/3)/11; all-point = .5·1 + .5·2/3.
  near(vocAp([0.5, 0.5, 1], [1, 0.5, 2 / 3], true), (6 + 5 * (2 / 3)) / 11, '07');
  near(vocAp([0.5, 0.5, 1], [1, 0.5, 2 / 3], false), 0.5 + 0.5 * (2 / 3), 'all-point');
  const gts = [
    { imageId: 'a', classId: 1, box: [0, 0, 99, 99] },
    { imageId: 'a', classId: 1, box: [200, 200, 299, 299] },
    { imageId: 'b', classId: 1, box: [0, 0, 9, 9], difficult: true },
  ];
  const dets = [
    { imageId: 'a', classId: 1, box: [0, 0, 99, 99], score: 0.9 },
    { imageId: 'b', classId: 1, box: [0, 0, 9, 9], score: 0.85 }, // on the difficult gt: neither TP nor FP
    { imageId: 'a', classId: 1, box: [0, 0, 99, 99], score: 0.8 }, // duplicate: FP
    { imageId: 'a', classId: 1, box: [200, 200, 299, 299], score: 0.7 },
  ];
  // Points: (.5, 1), (.5, 1), (.5, .5), (1, .667).
  near(vocClassAp(gts, dets, 1, { use07: false }), 0.5 + 0.5 * (2 / 3), 'all-point with difficult');
  near(vocClassAp(gts, dets, 1, { use07: true }), (6 + 5 * (2 / 3)) / 11, '11-point with difficult');
  // IoU must be > 0.5: boxes [0,0,9,9] and [0,0,9,4] overlap 50/100 = 0.5 with +1 pixels → a miss; without +1, 36/81 too.
  near(vocClassAp([{ imageId: 1, classId: 2, box: [0, 0, 9, 9] }], [{ imageId: 1, classId: 2, box: [0, 0, 9, 4], score: 1 }], 2), 0, 'IoU 0.5 is not > 0.5');
  near(vocClassAp([{ imageId: 1, classId: 2, box: [0, 0, 9, 9] }], [{ imageId: 1, classId: 2, box: [0, 0, 9, 5], score: 1 }], 2), 1, 'IoU 0.6');
});
