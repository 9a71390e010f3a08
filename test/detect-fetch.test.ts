/** fetch-detect against a 127.0.0.1 server: VOC tars (md5-checked), COCO and Penn-Fudan zips, unsafe archives refused. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar';
import { zipSync, strToU8 } from 'fflate';
import sharp from 'sharp';
import { DETECTION_SOURCES, fetchDetectionDataset } from '../src/detect/fetch-detect.js';
import { loadCocoDetection, loadVocDetection } from '../src/detect/dataset.js';

const tmp = mkdtempSync(join(tmpdir(), 'mnv2-fetchdet-'));
const files = new Map<string, Buffer>();
const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');
let base = '';
let server: http.Server;
let requests = 0;

before(async () => {
  const jpg = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#808080' } }).jpeg().toBuffer();
  // VOC: trainval and test tars that both unpack into VOCdevkit/VOC2007.
  for (const [split, id] of [['trainval', '000005'], ['test', '000001']] as const) {
    const root = join(tmp, `src-${split}`);
    const voc = join(root, 'VOCdevkit', 'VOC2007');
    for (const d of ['Annotations', 'JPEGImages', 'ImageSets/Main']) mkdirSync(join(voc, d), { recursive: true });
    writeFileSync(join(voc, 'JPEGImages', `${id}.jpg`), jpg);
    writeFileSync(join(voc, 'Annotations', `${id}.xml`), `<annotation><filename>${id}.jpg</filename><size><width>40</width><height>30</height></size><object><name>dog</name><difficult>0</difficult><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>25</ymax></bndbox></object></annotation>`);
    writeFileSync(join(voc, 'ImageSets', 'Main', `${split}.txt`), `${id}\n`);
    const out = join(tmp, `${split}.tar`);
    await tar.c({ file: out, cwd: root, portable: true }, ['VOCdevkit']);
    files.set(split === 'trainval' ? 'VOCtrainval_06-Nov-2007.tar' : 'VOCtest_06-Nov-2007.tar', readFileSync(out));
  }
  const coco = { images: [{ id: 1, file_name: '000000000139.jpg', width: 40, height: 30 }], categories: [{ id: 1, name: 'person' }], annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [1, 1, 10, 10], iscrowd: 0 }] };
  files.set('val2017.zip', Buffer.from(zipSync({ 'val2017/000000000139.jpg': [jpg, { level: 0 }] })));
  files.set('annotations_trainval2017.zip', Buffer.from(zipSync({ 'annotations/instances_val2017.json': strToU8(JSON.stringify(coco)) })));
  files.set('PennFudanPed.zip', Buffer.from(zipSync({ 'PennFudanPed/PNGImages/FudanPed00001.png': new Uint8Array(8), 'PennFudanPed/PedMasks/FudanPed00001_mask.png': new Uint8Array(8), 'PennFudanPed/Annotation/FudanPed00001.txt': strToU8('x') })));
  files.set('evil.zip', Buffer.from(zipSync({ '../escaped.txt': strToU8('no') })));
  server = http.createServer((req, res) => {
    requests++;
    const body = files.get(decodeURIComponent((req.url ?? '').slice(1)));
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});
after(() => {
  server.close();
  rmSync(tmp, { recursive: true, force: true });
});

test('voc2007: both tars md5-checked and unpacked into VOCdevkit/VOC2007, read by loadVocDetection; a rerun downloads nothing', async () => {
  const dir = join(tmp, 'voc');
  const source = { ...DETECTION_SOURCES.voc2007, files: DETECTION_SOURCES.voc2007.files.map((f) => ({ ...f, md5: md5(files.get(f.url.split('/').pop()!)!) })) };
  const r = await fetchDetectionDataset('voc2007', dir, { baseUrl: base, source, retries: 0 });
  assert.equal(r.downloaded.length, 2);
  assert.deepEqual(r.unpacked, [join(dir, 'VOCdevkit')]);
  const test = await loadVocDetection(join(dir, 'VOCdevkit', 'VOC2007'), 'test', { checkImages: true });
  assert.deepEqual(test.images[0]!.boxes[0]!.box, [1, 2, 20, 25]);
  assert.equal((await loadVocDetection(join(dir, 'VOCdevkit', 'VOC2007'), 'trainval')).images.length, 1);
  const before = requests;
  const again = await fetchDetectionDataset('voc2007', dir, { baseUrl: base, source });
  assert.deepEqual([again.downloaded.length, again.present.length, again.unpacked.length, requests - before], [0, 2, 0, 0]);
  // The official md5 does not match the fixture: refused, the partial file removed, nothing unpacked.
  const d2 = join(tmp, 'voc-bad');
  await assert.rejects(fetchDetectionDataset('voc2007', d2, { baseUrl: base, retries: 0 }), /md5 mismatch for VOCtrainval_06-Nov-2007\.tar.*expected c52e279531787c972589f7e41ab4ae64/);
  assert.ok(!existsSync(join(d2, 'VOCtrainval_06-Nov-2007.tar')) && !existsSync(join(d2, 'VOCtrainval_06-Nov-2007.tar.part')) && !existsSync(join(d2, 'VOCdevkit')));
});

test('coco2017-val (no published md5): zips unpacked to val2017/ and annotations/, read by loadCocoDetection', async () => {
  const dir = join(tmp, 'coco');
  const r = await fetchDetectionDataset('coco2017-val', dir, { baseUrl: base, retries: 0 });
  assert.deepEqual(r.unpacked.map((p) => p.slice(dir.length + 1)).sort(), ['annotations', 'val2017']);
  const ds = await loadCocoDetection(join(dir, 'annotations', 'instances_val2017.json'), join(dir, 'val2017'), { checkImages: true });
  assert.deepEqual(ds.images[0]!.boxes[0]!.box, [1, 1, 11, 11]);
  assert.equal(ds.skipped.total, 0);
  const pf = await fetchDetectionDataset('penn-fudan', join(tmp, 'pf'), { baseUrl: base, retries: 0 });
  assert.deepEqual(pf.unpacked, [join(tmp, 'pf', 'PennFudanPed')]);
  assert.equal(readFileSync(join(tmp, 'pf', 'PennFudanPed', 'Annotation', 'FudanPed00001.txt'), 'utf8'), 'x');
});

test('unsafe or incomplete archives are refused and leave nothing unpacked', async () => {
  const dir = join(tmp, 'evil');
  const source = { files: [{ url: 'http://example.invalid/evil.zip', md5: null }], expect: ['x'], maxBytes: 1 << 20 };
  await assert.rejects(fetchDetectionDataset('penn-fudan', dir, { baseUrl: base, source, retries: 0 }), /evil\.zip: unsafe path '\.\.\/escaped\.txt'/);
  assert.ok(!existsSync(join(tmp, 'escaped.txt')));
  const incomplete = { files: [{ url: 'http://example.invalid/PennFudanPed.zip', md5: null }], expect: ['PennFudanPed/README'], maxBytes: 1 << 20 };
  await assert.rejects(fetchDetectionDataset('penn-fudan', join(tmp, 'inc'), { baseUrl: base, source: incomplete, retries: 0 }), /missing PennFudanPed\/README/);
  assert.ok(!existsSync(join(tmp, 'inc', 'PennFudanPed')));
  const small = { ...DETECTION_SOURCES['coco2017-val'], maxBytes: 100 };
  await assert.rejects(fetchDetectionDataset('coco2017-val', join(tmp, 'bomb'), { baseUrl: base, source: small, retries: 0 }), /unpacks to more than 100 bytes/);
  await assert.rejects(fetchDetectionDataset('voc2007', join(tmp, 'bomb2'), { baseUrl: base, source: { ...DETECTION_SOURCES.voc2007, files: DETECTION_SOURCES.voc2007.files.map((f) => ({ ...f, md5: null })), maxBytes: 100 }, retries: 0 }), /unpacks to more than 100 bytes/);
});

test('CLI: mnv2 data fetch-detect penn-fudan --base-url … prints the folder and how to use it', async () => {
  const { spawn } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const dir = join(tmp, 'cli-pf');
  // Async spawn: the server answers on this process's event loop.
  const child = spawn(process.execPath, [cli, 'data', 'fetch-detect', 'penn-fudan', '--dir', dir, '--base-url', base]);
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d));
  child.stderr.on('data', (d: Buffer) => (err += d));
  const code = await new Promise<number | null>((r) => child.on('close', r));
  assert.equal(code, 0, err);
  assert.equal(out.trim(), dir);
  assert.match(err, /downloaded .*PennFudanPed\.zip\nunpacked .*PennFudanPed\n/);
});
