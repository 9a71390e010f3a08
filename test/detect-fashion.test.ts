/** `mnv2 data make fashion-detect`: deterministic, tight boxes, bounded overlap, read back by the COCO loader. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { FASHION_MNIST_DIR } from '../src/data/idx.js';
import { makeFashionDetect } from '../src/detect/fashion-detect.js';
import { loadCocoDetection } from '../src/detect/dataset.js';
import { iou } from '../src/detect/boxes.js';

const skip = existsSync(FASHION_MNIST_DIR) ? false : `${FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)`;
const dir = mkdtempSync(join(tmpdir(), 'mnv2-fdet-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const SIZES = { train: 24, val: 6, test: 6 };

function digest(root: string): string {
  const h = createHash('sha256');
  const walk = (d: string): void => {
    for (const f of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, f.name);
      if (f.isDirectory()) walk(p);
      else h.update(f.name).update(readFileSync(p));
    }
  };
  walk(root);
  return h.digest('hex');
}

test('byte-identical across runs; another seed differs; an existing non-empty folder is refused', { skip }, async () => {
  const a = await makeFashionDetect(join(dir, 'a'), SIZES);
  await makeFashionDetect(join(dir, 'b'), SIZES);
  await makeFashionDetect(join(dir, 'c'), { ...SIZES, seed: 1 });
  assert.deepEqual(a.splits.map((s) => [s.name, s.images]), [['train', 24], ['val', 6], ['test', 6]]);
  assert.equal(digest(join(dir, 'a')), digest(join(dir, 'b')));
  assert.notEqual(digest(join(dir, 'a')), digest(join(dir, 'c')));
  // The val and test splits do not depend on the train size.
  const d = await makeFashionDetect(join(dir, 'd'), { ...SIZES, train: 3 });
  assert.equal(readFileSync(join(dir, 'a', 'val.json'), 'utf8').replace(/"train":\d+/, ''), readFileSync(join(dir, 'd', 'val.json'), 'utf8').replace(/"train":\d+/, ''));
  assert.equal(d.splits[0]!.images, 3);
  mkdirSync(join(dir, 'busy'));
  writeFileSync(join(dir, 'busy', 'keep.txt'), 'mine');
  await assert.rejects(makeFashionDetect(join(dir, 'busy'), SIZES), /exists and is not empty/);
  assert.equal(readFileSync(join(dir, 'busy', 'keep.txt'), 'utf8'), 'mine');
  await assert.rejects(makeFashionDetect(join(dir, 'e'), { ...SIZES, maxScale: 4 }), /canvas must be an integer ≥ 112/);
});

test('read back by loadCocoDetection: 1–4 garments, boxes tight on the pixels, overlap ≤ 0.3, 10 classes', { skip }, async () => {
  const root = join(dir, 'a');
  for (const split of ['train', 'val', 'test']) {
    const ds = await loadCocoDetection(join(root, `${split}.json`), root, { checkImages: true });
    assert.equal(ds.skipped.total, 0, `${split}: nothing skipped`);
    assert.equal(ds.categories.length, 10);
    assert.equal(ds.categories[6]!.name, 'Shirt');
    for (const img of ds.images) {
      assert.ok(img.boxes.length >= 1 && img.boxes.length <= 4);
      for (const [i, b] of img.boxes.entries()) {
        assert.ok(b.box[2] - b.box[0] >= 5 && b.box[2] <= 96 && b.box[3] <= 96 && b.label >= 0 && b.label < 10);
        for (const c of img.boxes.slice(i + 1)) assert.ok(iou(b.box, 0, c.box, 0) <= 0.3);
      }
      // With one garment, its box is exactly the extent of the canvas's non-zero pixels.
      if (img.boxes.length === 1) {
        assert.equal((await sharp(img.file).metadata()).channels, 1, 'greyscale PNG');
        const { data, info } = await sharp(img.file).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
        assert.equal(info.channels, 1);
        let [x1, y1, x2, y2] = [96, 96, 0, 0];
        for (let y = 0; y < 96; y++) for (let x = 0; x < 96; x++) if (data[y * 96 + x]) [x1, y1, x2, y2] = [Math.min(x1, x), Math.min(y1, y), Math.max(x2, x + 1), Math.max(y2, y + 1)];
        assert.deepEqual(img.boxes[0]!.box, [x1, y1, x2, y2]);
      }
    }
  }
});

test('CLI: mnv2 data make fashion-detect, data inspect-detect, detect coco-eval (perfect detections → AP50 1)', { skip }, () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const out = join(dir, 'cli');
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  const r = run('data', 'make', 'fashion-detect', '--out', out, '--train', '4', '--val', '1', '--test', '2', '--seed', '3');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /test: 2 images, \d+ boxes/);
  const i = run('data', 'inspect-detect', '--format', 'coco', '--path', join(out, 'train.json'), '--check-images');
  assert.equal(i.status, 0, i.stderr);
  assert.match(i.stdout, /train\.json: 4 images/);
  const gt = JSON.parse(readFileSync(join(out, 'test.json'), 'utf8')) as { annotations: { image_id: number; category_id: number; bbox: number[] }[] };
  writeFileSync(join(dir, 'dets.json'), JSON.stringify(gt.annotations.map((a) => ({ image_id: a.image_id, category_id: a.category_id, bbox: a.bbox, score: 0.9 }))));
  const e = run('detect', 'coco-eval', join(out, 'test.json'), join(dir, 'dets.json'), '--json');
  assert.equal(e.status, 0, e.stderr);
  const stats = JSON.parse(e.stdout) as number[];
  assert.ok(Math.abs(stats[1]! - 1) < 1e-9, `${stats}`);
  const bad = run('data', 'make', 'fashion-detect', '--out', out);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /exists and is not empty/);
});
