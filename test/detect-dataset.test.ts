/** COCO / VOC / YOLO detection datasets: one type, bad input named or counted. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { formatSkips, loadCocoDetection, loadVocDetection, loadYoloDetection, toCocoGroundTruth } from '../src/detect/dataset.js';
import { cocoEvaluate } from '../src/detect/coco-eval.js';

const dir = mkdtempSync(join(tmpdir(), 'mnv2-detds-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

async function png(file: string, w: number, h: number): Promise<void> {
  await sharp({ create: { width: w, height: h, channels: 3, background: { r: 10, g: 20, b: 30 } } }).png().toFile(file);
}

const coco = {
  images: [
    { id: 1, file_name: 'a.png', width: 40, height: 30 },
    { id: 2, file_name: 'b.png', width: 40, height: 30 },
    { id: 3, file_name: 'missing.png', width: 40, height: 30 },
    { id: 4, file_name: 'corrupt.png', width: 40, height: 30 },
    { id: 5, file_name: 'wrong-size.png', width: 40, height: 30 },
  ],
  categories: [{ id: 7, name: 'dog' }, { id: 3, name: 'cat' }],
  annotations: [
    { id: 1, image_id: 1, category_id: 7, bbox: [1, 2, 10, 20], area: 150, iscrowd: 0 },
    { id: 2, image_id: 1, category_id: 3, bbox: [30, 20, 20, 20], iscrowd: 1 }, // clipped to 40×30
    { id: 3, image_id: 1, category_id: 3, bbox: [5, 5, 0, 4] }, // degenerate
    { id: 4, image_id: 1, category_id: 7, bbox: [50, 5, 4, 4] }, // outside
    { id: 5, image_id: 3, category_id: 7, bbox: [1, 1, 4, 4] },
  ],
};

test('COCO: labels by ascending category id, boxes to [x1, y1, x2, y2], geometry problems counted, files checked', async () => {
  await png(join(dir, 'a.png'), 40, 30);
  await png(join(dir, 'b.png'), 40, 30);
  await png(join(dir, 'wrong-size.png'), 20, 30);
  writeFileSync(join(dir, 'corrupt.png'), Buffer.from('\x89PNG\r\n\x1a\nnot really'));
  writeFileSync(join(dir, 'coco.json'), JSON.stringify(coco));
  const ds = await loadCocoDetection(join(dir, 'coco.json'), dir, { checkImages: true });
  assert.deepEqual(ds.categories, [{ id: 3, name: 'cat' }, { id: 7, name: 'dog' }]);
  assert.deepEqual(ds.images.map((i) => i.id), [1, 2]);
  const a = ds.images[0]!;
  assert.deepEqual(a.boxes.map((b) => [b.box, b.label, b.area, b.iscrowd]), [
    [[1, 2, 11, 22], 1, 150, false],
    [[30, 20, 40, 30], 0, 400, true],
  ]);
  assert.deepEqual(Object.fromEntries(ds.skipped.counts), {
    'degenerate box': 1, 'box outside the image': 1, 'box clipped to the image': 1,
    'image file missing': 1, 'unreadable image': 1, 'image size differs from its annotation': 1, 'image without boxes': 1,
  });
  assert.match(formatSkips(ds.skipped), /degenerate box: 1 \(e\.g\. annotations\[2\] \(id 3\)\)/);
  // Through the evaluator: the dataset's own boxes as detections give AP 1 (the crowd box is ignored).
  const gt = toCocoGroundTruth(ds);
  const dets = gt.annotations.filter((x) => !x.iscrowd).map((x) => ({ image_id: x.image_id, category_id: x.category_id, bbox: x.bbox, score: 1 }));
  assert.ok(Math.abs(cocoEvaluate(gt, dets).stats[1]! - 1) < 1e-12);
});

test('COCO: malformed JSON, unknown ids and bad fields are errors naming the file and the entry', async () => {
  const f = join(dir, 'bad.json');
  const bad = async (content: string, re: RegExp): Promise<void> => {
    writeFileSync(f, content);
    await assert.rejects(loadCocoDetection(f, dir), (e: Error) => e.message.startsWith(f) && re.test(e.message));
  };
  await bad('{"images": [', /malformed JSON/);
  await bad('[]', /top level is not a JSON object/);
  await bad(JSON.stringify({ ...coco, annotations: [{ id: 9, image_id: 1, category_id: 99, bbox: [0, 0, 1, 1] }] }), /annotations\[0\] \(id 9\): category_id 99 is not in categories/);
  await bad(JSON.stringify({ ...coco, annotations: [{ id: 9, image_id: 42, category_id: 3, bbox: [0, 0, 1, 1] }] }), /image_id 42 is not in images/);
  await bad(JSON.stringify({ ...coco, annotations: [{ id: 9, image_id: 1, category_id: 3, bbox: [0, 0, 1] }] }), /bbox must be \[x, y, w, h\]/);
  await bad(JSON.stringify({ ...coco, images: [{ id: 1, file_name: 'a.png', width: '40', height: 30 }] }), /images\[0\]: "width" must be a number/);
  await bad(JSON.stringify({ images: [], categories: [] }), /top level: "annotations" must be an array/);
  await assert.rejects(loadCocoDetection(join(dir, 'nope.json'), dir), /nope\.json: file not found/);
});

function vocXml(file: string, objects: string): string {
  return `<annotation><filename>${file}</filename><size><width>40</width><height>30</height><depth>3</depth></size>${objects}</annotation>`;
}
const obj = (name: string, b: number[], difficult = 0): string =>
  `<object><name>${name}</name><difficult>${difficult}</difficult><bndbox><xmin>${b[0]}</xmin><ymin>${b[1]}</ymin><xmax>${b[2]}</xmax><ymax>${b[3]}</ymax></bndbox></object>`;

test('VOC: 1-based inclusive boxes to pixel edges, difficult kept as a flag; bad XML and unknown classes named', async () => {
  const root = join(dir, 'VOC');
  for (const d of ['Annotations', 'JPEGImages', 'ImageSets/Main']) mkdirSync(join(root, d), { recursive: true });
  await png(join(root, 'JPEGImages', '000001.jpg'), 40, 30);
  await png(join(root, 'JPEGImages', '000002.jpg'), 40, 30);
  writeFileSync(join(root, 'Annotations', '000001.xml'), vocXml('000001.jpg', obj('dog', [1, 1, 10, 20]) + obj('person', [5, 5, 40, 30], 1)));
  writeFileSync(join(root, 'Annotations', '000002.xml'), vocXml('000002.jpg', obj('cat', [3, 3, 3, 9])));
  writeFileSync(join(root, 'ImageSets', 'Main', 'train.txt'), '000001\n000002\n');
  const ds = await loadVocDetection(root, 'train');
  assert.equal(ds.categories.length, 20);
  assert.equal(ds.categories[11]!.name, 'dog');
  assert.deepEqual(ds.images[0]!.boxes.map((b) => [b.box, b.label, b.difficult]), [[[0, 0, 10, 20], 11, false], [[4, 4, 40, 30], 14, true]]);
  // xmin = xmax = 3 is one pixel wide: [2, 3] — kept.
  assert.deepEqual(ds.images[1]!.boxes[0]!.box, [2, 2, 3, 9]);
  writeFileSync(join(root, 'Annotations', '000002.xml'), '<annotation><filename>x</filename><size>\n<width>4</width></annotation>');
  await assert.rejects(loadVocDetection(root, 'train'), /000002\.xml: malformed XML at line 2/);
  writeFileSync(join(root, 'Annotations', '000002.xml'), vocXml('000002.jpg', obj('unicorn', [1, 1, 4, 4])));
  await assert.rejects(loadVocDetection(root, 'train'), /000002\.xml: <object> 1: class "unicorn" is not one of 20 classes/);
  writeFileSync(join(root, 'Annotations', '000002.xml'), vocXml('000002.jpg', obj('cat', [1, 1, 4, NaN])));
  await assert.rejects(loadVocDetection(root, 'train'), /000002\.xml: <object> 1 <bndbox>: <ymax> must be a number/);
  await assert.rejects(loadVocDetection(root, 'val'), /val\.txt: file not found/);
});

test('YOLO: normalized centers to pixels, missing label file = no boxes, bad lines named by file and line', async () => {
  const img = join(dir, 'yolo', 'images');
  const lab = join(dir, 'yolo', 'labels');
  mkdirSync(img, { recursive: true });
  mkdirSync(lab, { recursive: true });
  await png(join(img, 'p.png'), 40, 20);
  await png(join(img, 'q.png'), 10, 10);
  writeFileSync(join(img, 'broken.jpg'), 'garbage');
  writeFileSync(join(lab, 'p.txt'), '1 0.5 0.5 0.5 0.5\n\n0 0.25 0.5 0 0.2\n');
  const ds = await loadYoloDetection(img, lab, ['a', 'b']);
  assert.deepEqual(ds.images.map((i) => [i.file.endsWith('p.png') || i.file.endsWith('q.png'), i.width, i.height]), [[true, 40, 20], [true, 10, 10]]);
  assert.deepEqual(ds.images[0]!.boxes.map((b) => [b.box, b.label]), [[[10, 5, 30, 15], 1]]);
  assert.deepEqual(Object.fromEntries(ds.skipped.counts), { 'unreadable image': 1, 'degenerate box': 1, 'image without boxes': 1 });
  writeFileSync(join(lab, 'q.txt'), '0 0.5 0.5 0.1\n');
  await assert.rejects(loadYoloDetection(img, lab, ['a', 'b']), /q\.txt: line 1: expected "class cx cy w h"/);
  writeFileSync(join(lab, 'q.txt'), '2 0.5 0.5 0.1 0.1\n');
  await assert.rejects(loadYoloDetection(img, lab, ['a', 'b']), /q\.txt: line 1: class 2 is not in 0\.\.1/);
});
