/**
 * The weights catalogue and cache against a 127.0.0.1 server: checksum-verified, resumed downloads, format checks,
 * import into the cache, offline use from it, and the CLI (`mnv2 weights list|fetch`, `--weights NAME`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { create as createTar } from 'tar';
import { COCO_LABELS, IMAGENET_LABELS } from '../src/data/labels.js';
import { loadModelFile, loadWeights } from '../src/io/weights.js';
import { buildSsdlite, makeSsdliteConfig } from '../src/model/ssdlite.js';
import { SsdliteDetector, type Detection } from '../src/detect/ssdlite-detector.js';
import { findWeights, WEIGHTS_CATALOG, type WeightsEntry } from '../src/weights/catalog.js';
import { fetchWeights, resolveWeights, weightsCacheDir } from '../src/weights/cache.js';
import { fixturePath, maxAbsDiff } from './helpers/fixtures.js';
import { CLI } from './helpers/imagenet-photos.js';
import { layerData, writeKerasH5 } from './helpers/keras-h5.js';
import { kerasMobileNetV2, randomizeWeights } from './helpers/keras-model.js';
import { randomWeights } from './helpers/random-model.js';
import { writeTfGraph } from './helpers/tf-graph-writer.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'mnv2-weights-'));
let dirs = 0;
const freshCache = () => path.join(tmp, `cache${dirs++}`);
const pth = readFileSync(fixturePath('pth/tiny-mnv2.pth'));
const sha = createHash('sha256').update(pth).digest('hex');

// ---- server: files by path; 'cut-first' drops the connection halfway through the first response ----------------
const served = new Map<string, { data: Buffer; cutFirst: boolean; hits: number }>();
const requests: { path: string; range?: string }[] = [];
const server = http.createServer((req, res) => {
  const url = new URL(req.url!, 'http://x');
  requests.push({ path: url.pathname, range: req.headers.range });
  const f = served.get(url.pathname);
  if (!f) {
    res.writeHead(404).end();
    return;
  }
  f.hits++;
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (m) {
    const start = Number(m[1]);
    res.writeHead(206, { 'content-length': f.data.length - start, 'content-range': `bytes ${start}-${f.data.length - 1}/${f.data.length}` });
    res.end(f.data.subarray(start));
    return;
  }
  res.writeHead(200, { 'content-length': f.data.length });
  if (f.cutFirst && f.hits === 1) {
    res.write(f.data.subarray(0, f.data.length >> 1), () => setTimeout(() => res.socket?.destroy(), 20));
    return;
  }
  res.end(f.data);
});
let base = '';
before(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  rmSync(tmp, { recursive: true, force: true });
});

const entry = (over: Partial<WeightsEntry>): WeightsEntry => ({
  name: 'test/tiny', url: 'https://weights.invalid/models/tiny-mnv2.pth', sha256: sha.slice(0, 8), format: 'pth', family: 'mobilenet_v2',
  alpha: 0.35, resolution: 224, top: true, preset: 'torchvision', description: 'fixture', ...over,
});
const fast = { retryDelayMs: 10, timeoutMs: 5000 };

test('the catalogue: torchvision V1/V2 with their sha256 prefixes, 60 Keras V2 and 32 Keras V1 files at their official URLs', () => {
  assert.equal(findWeights('torchvision/IMAGENET1K_V1')?.url, 'https://download.pytorch.org/models/mobilenet_v2-b0353104.pth');
  assert.equal(findWeights('torchvision/IMAGENET1K_V1')?.sha256, 'b0353104');
  assert.equal(findWeights('torchvision/IMAGENET1K_V2')?.url, 'https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth');
  assert.equal(findWeights('keras/mobilenet_v2_1.0_224')?.url,
    'https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5');
  assert.equal(findWeights('keras/mobilenet_v2_0.35_96_no_top')?.url,
    'https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5');
  assert.equal(findWeights('keras/mobilenet_0.75_160_no_top')?.url, 'https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/mobilenet_7_5_160_tf_no_top.h5');
  const count = (f: string) => WEIGHTS_CATALOG.filter((e) => e.family === f).length;
  assert.deepEqual([count('mobilenet_v2'), count('mobilenet_v1')], [62, 32]);
  assert.equal(new Set(WEIGHTS_CATALOG.map((e) => e.name)).size, WEIGHTS_CATALOG.length, 'names are unique');
  for (const e of WEIGHTS_CATALOG) if (e.sha256 === null) assert.match(e.description, /no checksum published/, e.name);
});

test('cache dir: $MNV2_CACHE, else $XDG_CACHE_HOME/mnv2, else ~/.cache/mnv2', () => {
  assert.equal(weightsCacheDir({ MNV2_CACHE: '/x/c', XDG_CACHE_HOME: '/y' }), '/x/c');
  assert.equal(weightsCacheDir({ XDG_CACHE_HOME: '/y' }), '/y/mnv2');
  assert.ok(weightsCacheDir({}).endsWith(path.join('.cache', 'mnv2')));
});

test('a download cut halfway resumes with a Range request, is sha256-checked, imported, then used offline', async () => {
  served.set('/models/tiny-mnv2.pth', { data: pth, cutFirst: true, hits: 0 });
  const cacheDir = freshCache();
  const catalog = [entry({})];
  const before = requests.length;
  const model = await resolveWeights('test/tiny', { cacheDir, catalog, baseUrl: `${base}models/`, ...fast });
  const mine = requests.slice(before);
  assert.equal(mine.length, 2);
  const resumedAt = Number(/^bytes=(\d+)-$/.exec(mine[1]!.range ?? '')?.[1]);
  assert.ok(resumedAt > 0 && resumedAt <= pth.length >> 1, `the second request resumes where the first broke off (range ${mine[1]!.range})`);
  const file = path.join(cacheDir, 'downloads', 'tiny-mnv2.pth');
  assert.deepEqual(readFileSync(file), pth);
  assert.deepEqual(readdirSync(path.join(cacheDir, 'downloads')), ['tiny-mnv2.pth'], 'no .part file left');
  const m = loadWeights(model);
  assert.deepEqual([m.graph.config.alpha, m.graph.config.numClasses], [0.35, 10]);
  assert.equal(m.metadata['mnv2.source'], 'tiny-mnv2.pth');
  assert.equal(m.metadata['mnv2.preprocess'], 'torchvision');
  const direct = loadWeights(fixturePath('pth/tiny-mnv2.pth'));
  for (const [k, v] of direct.weights) assert.deepEqual(m.weights.get(k), v, k);

  // offline: the imported model, then (import deleted) the download, without a single request
  const dead = { cacheDir, catalog, baseUrl: 'http://127.0.0.1:9/', offline: true };
  const n = requests.length;
  assert.equal(await resolveWeights('test/tiny', dead), model);
  rmSync(path.join(cacheDir, 'models'), { recursive: true });
  assert.equal(await resolveWeights('test/tiny', dead), model);
  assert.equal((await fetchWeights('test/tiny', { cacheDir, catalog, baseUrl: `${base}models/` })).status, 'present');
  assert.equal(requests.length, n, 'no request once cached');
  await assert.rejects(resolveWeights('test/tiny', { ...dead, cacheDir: freshCache() }), /test\/tiny is not in the cache .* mnv2 weights fetch test\/tiny/);
});

test('a checksum mismatch or a file of the wrong format is a clear error and leaves nothing in the cache', async () => {
  served.set('/m/tiny-mnv2.pth', { data: pth, cutFirst: false, hits: 0 });
  served.set('/m/fake.h5', { data: Buffer.from('<html>not found</html>'), cutFirst: false, hits: 0 });
  const cacheDir = freshCache();
  const catalog = [entry({ sha256: 'deadbeef' }), entry({ name: 'test/h5', url: 'https://x.invalid/m/fake.h5', sha256: null, format: 'keras-h5' })];
  const opts = { cacheDir, catalog, baseUrl: `${base}m/`, ...fast };
  await assert.rejects(fetchWeights('test/tiny', opts), new RegExp(`sha256 mismatch for tiny-mnv2.pth .*expected deadbeef…, got ${sha}`));
  await assert.rejects(fetchWeights('test/h5', opts), /test\/h5: the download from .*fake.h5 is not an HDF5 file; it was deleted/);
  assert.deepEqual(readdirSync(path.join(cacheDir, 'downloads')), []);
  await assert.rejects(fetchWeights('no/such', opts), /unknown weights 'no\/such': not a file and not one of the 2 catalogue names/);
});

test('CLI: weights list, weights fetch --base-url, then predict --weights NAME from the cache alone', async () => {
  const keras = kerasMobileNetV2({ alpha: 0.35, rows: 96, classes: 1000, headName: 'Logits' });
  randomizeWeights(keras, 3);
  const h5 = path.join(tmp, 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5');
  await writeKerasH5(h5, layerData(keras));
  served.set('/keras/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5', { data: readFileSync(h5), cutFirst: false, hits: 0 });
  const env = { ...process.env, MNV2_CACHE: freshCache() };
  // async: the server runs in this process
  const run = async (...args: string[]) => (await promisify(execFile)(process.execPath, [CLI, ...args], { env, encoding: 'utf8' })).stdout;

  const list = await run('weights', 'list');
  assert.match(list, /^torchvision\/IMAGENET1K_V1 +torchvision mobilenet_v2 IMAGENET1K_V1/m);
  assert.match(list, /^keras\/mobilenet_1\.0_224_no_top /m);
  const file = (await run('weights', 'fetch', 'keras/mobilenet_v2_0.35_96', '--base-url', `${base}keras/`, '--no-progress')).trim();
  assert.equal(file, path.join(env.MNV2_CACHE, 'downloads', 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5'));
  assert.match(await run('weights', 'list'), /^keras\/mobilenet_v2_0\.35_96 +cached /m);

  const photo = path.join(tmp, 'photo.png');
  await sharp({ create: { width: 120, height: 100, channels: 3, background: { r: 200, g: 80, b: 30 } } }).png().toFile(photo);
  const n = requests.length;
  const out = JSON.parse(await run('predict', '--weights', 'keras/mobilenet_v2_0.35_96', '--json', photo)) as { top: { index: number; label: string }[] }[];
  assert.equal(requests.length, n, 'predict used the cache, no download');
  assert.equal(out[0]!.top.length, 5);
  for (const t of out[0]!.top) assert.equal(t.label, IMAGENET_LABELS[t.index]);
  const model = path.join(env.MNV2_CACHE, 'models', 'keras--mobilenet_v2_0.35_96.safetensors');
  assert.ok(existsSync(model));
  const m = loadWeights(model);
  assert.deepEqual([m.graph.config.alpha, m.graph.config.resolution, m.graph.config.padding, m.metadata['mnv2.preprocess']], [0.35, 96, 'keras', 'keras']);
});

// ---- the TF OD API model zoo detector: a tarball holding a frozen graph, built here from known weights -------------
const ZOO = 'tf-od/ssdlite_mobilenet_v2_coco';
const ZOO_DIR = 'ssdlite_mobilenet_v2_coco_2018_05_09';

/** A .tar.gz of `files` (path in the archive → bytes). */
async function tarGz(name: string, files: Record<string, Uint8Array | string>): Promise<Buffer> {
  const src = path.join(tmp, `${name}-src`);
  for (const [p, data] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(src, p)), { recursive: true });
    writeFileSync(path.join(src, p), data);
  }
  const file = path.join(tmp, `${name}.tar.gz`);
  await createTar({ gzip: true, file, cwd: src }, readdirSync(src));
  return readFileSync(file);
}

test(`${ZOO}: a cut download resumes, weights fetch extracts and imports the frozen graph, detect --weights NAME prints COCO names`, async () => {
  assert.equal(findWeights(ZOO)?.url, `http://download.tensorflow.org/models/object_detection/${ZOO_DIR}.tar.gz`);
  assert.equal(findWeights(ZOO)?.member, `${ZOO_DIR}/frozen_inference_graph.pb`);
  const g = buildSsdlite(makeSsdliteConfig({ alpha: 0.35, resolution: 160, numClasses: 90 }));
  const w = randomWeights(g, 9);
  const tgz = await tarGz('zoo', { [`${ZOO_DIR}/frozen_inference_graph.pb`]: writeTfGraph(g, w), [`${ZOO_DIR}/pipeline.config`]: 'model { ssd { num_classes: 90 } }\n' });
  served.set(`/object_detection/${ZOO_DIR}.tar.gz`, { data: tgz, cutFirst: true, hits: 0 });
  const env = { ...process.env, MNV2_CACHE: freshCache() };
  const run = async (...args: string[]) => promisify(execFile)(process.execPath, [CLI, ...args], { env, encoding: 'utf8' });

  const n0 = requests.length;
  const fetched = await run('weights', 'fetch', ZOO, '--base-url', `${base}object_detection/`, '--no-progress');
  const mine = requests.slice(n0);
  assert.equal(mine.length, 2);
  assert.match(mine[1]!.range ?? '', /^bytes=[1-9]\d*-$/, 'the second request resumes');
  assert.equal(fetched.stdout.trim(), path.join(env.MNV2_CACHE, 'downloads', `${ZOO_DIR}.tar.gz`));
  const model = path.join(env.MNV2_CACHE, 'models', 'tf-od--ssdlite_mobilenet_v2_coco.safetensors');
  assert.match(fetched.stderr, new RegExp(`imported ${ZOO_DIR}/frozen_inference_graph.pb into ${model}`));
  assert.deepEqual(readdirSync(path.join(env.MNV2_CACHE, 'models')), [path.basename(model)], 'nothing extracted is left');
  const m = loadModelFile(model);
  assert.deepEqual([m.metadata['mnv2.family'], m.metadata['mnv2.labels'], m.metadata['mnv2.preprocess'], m.metadata['mnv2.source']],
    ['ssdlite', 'coco', 'keras', `${ZOO_DIR}.tar.gz:${ZOO_DIR}/frozen_inference_graph.pb`]);
  for (const [k, v] of w) assert.deepEqual(m.weights.get(k), v, k);

  const photo = path.join(tmp, 'street.png');
  await sharp({ create: { width: 200, height: 150, channels: 3, background: { r: 40, g: 120, b: 200 } } }).png().toFile(photo);
  const n1 = requests.length;
  const out = JSON.parse((await run('detect', photo, '--weights', ZOO, '--json', '--score', '0', '--max', '5')).stdout) as { detections: Detection[] };
  assert.equal(requests.length, n1, 'detect used the cache, no download');
  const det = await SsdliteDetector.create(g, w);
  const direct = (await det.detect(photo, { scoreThreshold: 0, maxDetections: 5, classNames: COCO_LABELS })).detections;
  await det.release();
  assert.equal(out.detections.length, 5);
  for (const [i, d] of out.detections.entries()) {
    assert.equal(d.label, COCO_LABELS[d.classId - 1], 'a COCO name');
    assert.deepEqual([d.classId, d.label], [direct[i]!.classId, direct[i]!.label]);
    assert.ok(Math.abs(d.score - direct[i]!.score) < 1e-5 && maxAbsDiff(d.box, direct[i]!.box) < 1e-3, `detection ${i}: ${JSON.stringify(d)} vs ${JSON.stringify(direct[i])}`);
  }
});

test('model zoo tarballs: not gzip, no frozen graph inside, or a broken graph inside are clear errors; no model is written', async () => {
  const member = 'zoo/frozen_inference_graph.pb';
  const zoo = (name: string): WeightsEntry => entry({ name: `test/${name}`, url: `https://x.invalid/z/${name}.tar.gz`, sha256: null, format: 'tf-od-tar', member, family: 'ssdlite', preset: 'keras' });
  served.set('/z/html.tar.gz', { data: Buffer.from('<html>moved</html>'), cutFirst: false, hits: 0 });
  served.set('/z/empty.tar.gz', { data: await tarGz('empty', { 'zoo/pipeline.config': 'x' }), cutFirst: false, hits: 0 });
  served.set('/z/broken.tar.gz', { data: await tarGz('broken', { [member]: 'not a graph' }), cutFirst: false, hits: 0 });
  const cacheDir = freshCache();
  const opts = { cacheDir, catalog: ['html', 'empty', 'broken'].map(zoo), baseUrl: `${base}z/`, ...fast };
  await assert.rejects(resolveWeights('test/html', opts), /test\/html: the download from .*html.tar.gz is not a gzip-compressed tar file; it was deleted/);
  await assert.rejects(resolveWeights('test/empty', opts), new RegExp(`empty.tar.gz: has no ${member}; delete it and fetch test/empty again`));
  await assert.rejects(resolveWeights('test/broken', opts), new RegExp(`broken.tar.gz \\(${member}\\): not a TensorFlow GraphDef`));
  assert.deepEqual(readdirSync(path.join(cacheDir, 'models')), []);
});
