/**
 * `serve` with a detector: POST /v1/detect on 127.0.0.1 returns the same pixel detections as SsdliteDetector.detect
 * on the same image file, also when requests run batched; the other routes and errors as for classifiers; the
 * CLI serves an SSDLite model file.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { archConfig, buildModel } from '../src/model/registry.js';
import { initWeights } from '../src/model/weights.js';
import { saveWeights } from '../src/io/weights.js';
import type { Graph } from '../src/model/graph.js';
import type { SsdliteConfig } from '../src/model/ssdlite.js';
import { detectorPreset, SsdliteDetector, type Detection } from '../src/detect/ssdlite-detector.js';
import { startServer, type RunningServer } from '../src/serve/server.js';
import { spawnServe } from './helpers/serve.js';

const RES = 129;
const LABELS = Array.from({ length: 3 }, (_, i) => `thing ${i + 1}`);
const POST = { scoreThreshold: 0.3, maxDetections: 5, classNames: LABELS };
const dir = mkdtempSync(path.join(os.tmpdir(), 'serve-detect-'));
const graph = buildModel(archConfig('ssdlite', { resolution: RES, numClasses: 3, alpha: 0.35 })) as Graph<SsdliteConfig>;
const weights = initWeights(graph, 5);
const files: string[] = [];
const pngs: Buffer[] = [];
let ref: SsdliteDetector;

interface DetectBody {
  width: number;
  height: number;
  detections: Detection[];
  batchSize: number;
  error?: string;
}

async function post(url: string, body: Buffer, type = 'image/png'): Promise<{ status: number; json: DetectBody }> {
  const r = await fetch(`${url}/v1/detect`, { method: 'POST', headers: { 'content-type': type }, body: new Uint8Array(body) });
  return { status: r.status, json: (await r.json()) as DetectBody };
}

function sameDetections(got: readonly Detection[], want: readonly Detection[], what: string): void {
  assert.equal(got.length, want.length, `${what}: count`);
  got.forEach((d, i) => {
    const w = want[i]!;
    assert.deepEqual([d.classId, d.label], [w.classId, w.label], `${what} #${i}`);
    assert.ok(Math.abs(d.score - w.score) < 1e-6, `${what} #${i}: score ${d.score} vs ${w.score}`);
    d.box.forEach((v, k) => assert.ok(Math.abs(v - w.box[k]!) < 1e-3, `${what} #${i}: box ${d.box} vs ${w.box}`));
  });
}

before(async () => {
  // Non-square noise images: boxes come back in each image's own pixels.
  for (let i = 0; i < 6; i++) {
    const [w, h] = [160 + 20 * i, 120 + 10 * i];
    const raw = Buffer.from(Array.from({ length: w * h * 3 }, (_, k) => (k * (31 + i) + (k >> 7) * 17) % 256));
    const png = await sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
    const file = path.join(dir, `img${i}.png`);
    writeFileSync(file, png);
    files.push(file);
    pngs.push(png);
  }
  ref = await SsdliteDetector.create(graph, weights);
});

after(async () => {
  await ref.release();
  rmSync(dir, { recursive: true, force: true });
});

describe('serve: POST /v1/detect', () => {
  let srv: RunningServer;
  before(async () => {
    const det = await SsdliteDetector.create(graph, weights);
    srv = await startServer({
      classifier: { engine: 'ort', run: (x, n) => det.forwardRows(x, n), release: () => det.release() },
      detector: { rowSize: det.rowSize, detect: (row, w, h) => det.rowDetections(row, w, h, POST) },
      inputShape: [3, RES, RES],
      numClasses: 3,
      labels: LABELS,
      preset: detectorPreset(RES),
      modelName: 'tiny-ssdlite',
      port: 0,
      maxBatch: 8,
      maxWaitMs: 200,
    });
  });
  after(async () => {
    await srv.close();
  });

  it('one image: the detections of SsdliteDetector.detect on the same file, in that image\'s pixels', async () => {
    const { status, json } = await post(srv.url, pngs[1]!);
    assert.equal(status, 200, json.error);
    assert.deepEqual([json.width, json.height], [180, 130]);
    const want = await ref.detect(files[1]!, POST);
    assert.equal(want.detections.length, 5);
    sameDetections(json.detections, want.detections, 'img1');
    assert.ok(json.detections.every((d) => d.box[2] <= 180 && d.box[3] <= 130 && d.box[0] >= 0 && d.score > 0.3));
  });

  it('6 concurrent images run in batches > 1, each with its own unbatched detections', async () => {
    const rs = await Promise.all(pngs.map((p) => post(srv.url, p)));
    assert.ok(Math.max(...rs.map((r) => r.json.batchSize)) > 1, `batch sizes ${rs.map((r) => r.json.batchSize)}`);
    for (const [i, r] of rs.entries()) {
      assert.equal(r.status, 200);
      sameDetections(r.json.detections, (await ref.detect(files[i]!, POST)).detections, `img${i}`);
    }
  });

  it('no /v1/classify on a detector; /v1/model says detect; 400 for bytes that are not an image, 415 for JSON', async () => {
    const c = await fetch(`${srv.url}/v1/classify`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: new Uint8Array(pngs[0]!) });
    assert.equal(c.status, 404);
    const m = (await (await fetch(`${srv.url}/v1/model`)).json()) as { task: string; classes: number; labels: string[] };
    assert.deepEqual([m.task, m.classes, m.labels], ['detect', 3, LABELS]);
    const bad = await post(srv.url, Buffer.from('not an image at all'));
    assert.equal(bad.status, 400);
    assert.match(bad.json.error!, /request body/);
    const json = await post(srv.url, Buffer.from('{}'), 'application/json');
    assert.equal(json.status, 415);
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    assert.match(metrics, /route="\/v1\/detect",code="200"\} 7/);
  });
});

describe('serve: CLI with an SSDLite model file', () => {
  // The native engine's outputs are ONNX Runtime's within ~1e-6 (test/native-ssdlite.test.ts): the same detections
  // within sameDetections' tolerances (scores 1e-6, boxes 1e-3 px).
  for (const engine of ['ort', 'native'] as const) {
    it(`mnv2 serve --engine ${engine} --weights tiny-ssdlite.safetensors --score 0.3 --max-detections 5: POST /v1/detect = ORT's detections, exits 0 on SIGTERM`, async () => {
      const file = path.join(dir, 'tiny-ssdlite.safetensors');
      saveWeights(file, graph, weights, new Map(), { 'mnv2.classes': JSON.stringify(LABELS) });
      const { url, child, exited, stderr } = await spawnServe(['--weights', file, '--score', '0.3', '--max-detections', '5', '--engine', engine]);
      try {
        const model = (await (await fetch(`${url}/v1/model`)).json()) as { engine: string; task: string };
        assert.deepEqual([model.engine, model.task], [engine, 'detect']);
        const rs = await Promise.all([2, 3, 4].map((i) => post(url, pngs[i]!)));
        for (const [k, r] of rs.entries()) {
          assert.equal(r.status, 200, stderr());
          sameDetections(r.json.detections, (await ref.detect(files[k + 2]!, POST)).detections, `CLI ${engine} img${k + 2}`);
        }
      } finally {
        child.kill('SIGTERM');
      }
      const [code] = await exited;
      assert.equal(code, 0, stderr());
    });
  }
});
