/**
 * mnv2 serve: the HTTP server on the bundled Fashion-MNIST model, checked against the classifier run directly on
 * the same preprocessed images; micro-batching (batched results equal unbatched ones), errors (400/413/415/503),
 * /healthz, /metrics, graceful shutdown, and the CLI process exiting 0 on SIGTERM.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadWeights, type LoadedWeights } from '../src/io/weights.js';
import { createClassifier, type Classifier } from '../src/engine/classifier.js';
import { decodeOnnx, exportOnnx } from '../src/engine/onnx/export.js';
import onnxProto from 'onnx-proto';
import { loadImageBuffer, preset, type Preset } from '../src/data/preprocess.js';
import { loadFashionMnist } from '../src/data/idx.js';
import { FASHION_MNIST_LABELS } from '../src/data/labels.js';
import { DEFAULT_MODEL } from '../src/cli/model-commands.js';
import { startServer, type RunningServer, type ServerOptions } from '../src/serve/server.js';
import { Batcher, BatcherClosedError } from '../src/serve/batcher.js';
import { Counter, Gauge, Histogram, Registry } from '../src/serve/metrics.js';
import { spawnServe } from './helpers/serve.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const N = 20;
const CLASSES = 10;

let model: LoadedWeights;
let p: Preset;
let ref: Classifier;
/** Test images 0..N-1 of Fashion-MNIST as PNG files, their labels and their logits run one at a time. */
const pngs: Buffer[] = [];
const labels: number[] = [];
const refLogits: Float32Array[] = [];

function softmax(row: Float32Array): number[] {
  const max = Math.max(...row);
  const e = Array.from(row, (v) => Math.exp(v - max));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

const argmax = (xs: ArrayLike<number>): number => Array.from(xs).reduce((best, v, i, a) => (v > a[best]! ? i : best), 0);

interface Classified {
  top: { index: number; label: string; prob: number }[];
  model: string;
  batchSize: number;
  ms: number;
}

async function classify(url: string, body: Buffer | string, type = 'image/png'): Promise<{ status: number; json: Classified & { error?: string }; headers: Headers }> {
  // A copy on its own ArrayBuffer, as fetch's BodyInit type wants.
  const res = await fetch(`${url}/v1/classify`, { method: 'POST', body: typeof body === 'string' ? body : new Uint8Array(body), headers: { 'content-type': type } });
  return { status: res.status, json: (await res.json()) as Classified & { error?: string }, headers: res.headers };
}

/** The full distribution from a response with top = all classes, in class order. */
function probsOf(r: Classified): number[] {
  const out = new Array<number>(CLASSES).fill(NaN);
  for (const t of r.top) out[t.index] = t.prob;
  return out;
}

/** Every sample line of a Prometheus text exposition, as series -> value (and the format checked line by line). */
function parseMetrics(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const r = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})?) (\S+)$/.exec(line);
    assert.ok(r, `not a Prometheus sample line: '${line}'`);
    const v = r[2] === '+Inf' ? Infinity : Number(r[2]);
    assert.ok(!Number.isNaN(v), `bad value in '${line}'`);
    m.set(r[1]!, v);
  }
  return m;
}

async function metrics(url: string): Promise<Map<string, number>> {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseMetrics(await res.text());
}

/** A classifier whose runs wait until `open()`; `entered` resolves when the first run starts. */
function gated(inner: Classifier): Classifier & { open(): void; entered: Promise<void>; released: boolean } {
  let open!: () => void;
  let enter!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const entered = new Promise<void>((r) => (enter = r));
  const c = {
    engine: inner.engine,
    released: false,
    entered,
    open,
    run: async (x: Float32Array, n: number) => {
      enter();
      await gate;
      return inner.run(x, n);
    },
    release: async () => {
      c.released = true;
      await inner.release();
    },
  };
  return c;
}

/** Wait for a condition that other threads or the event loop will make true (polls every ms, fails after 10 s). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(cond(), 'condition not reached within 10 s');
}

function serverOptions(classifier: Classifier, over: Partial<ServerOptions> = {}): ServerOptions {
  return {
    classifier,
    inputShape: [3, 32, 32],
    numClasses: CLASSES,
    preset: p,
    labels: FASHION_MNIST_LABELS,
    modelName: 'fashion-mnist',
    port: 0,
    top: CLASSES,
    ...over,
  };
}

before(async () => {
  model = loadWeights(DEFAULT_MODEL);
  p = preset('fashion-mnist');
  ref = await createClassifier(model.graph, model.weights, 'ort', 1);
  const ds = loadFashionMnist(undefined, 'test');
  for (let i = 0; i < N; i++) {
    const raw = Buffer.from(ds.images.subarray(i * 784, (i + 1) * 784));
    const png = await sharp(raw, { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer();
    pngs.push(png);
    labels.push(ds.labels[i]!);
    refLogits.push(await ref.run(await loadImageBuffer(png, p), 1));
  }
});

after(async () => {
  await ref?.release();
});

describe('serve: one server, max batch 8', () => {
  let srv: RunningServer;
  before(async () => {
    srv = await startServer(serverOptions(await createClassifier(model.graph, model.weights, 'ort', 1), { maxBatch: 8, maxWaitMs: 200, bodyLimit: 64 * 1024 }));
  });
  after(async () => {
    await srv.close();
  });

  it('classifies a Fashion-MNIST PNG as the classifier does on the same input (and correctly)', async () => {
    const { status, json } = await classify(srv.url, pngs[0]!);
    assert.equal(status, 200);
    assert.equal(json.model, 'fashion-mnist');
    assert.equal(json.top.length, CLASSES);
    assert.equal(json.top[0]!.index, argmax(refLogits[0]!));
    assert.equal(json.top[0]!.index, labels[0]); // test image 0 is an ankle boot, classified at > 99 %
    assert.equal(json.top[0]!.label, FASHION_MNIST_LABELS[labels[0]!]);
    const want = softmax(refLogits[0]!);
    probsOf(json).forEach((v, i) => assert.ok(Math.abs(v - want[i]!) <= 1e-5, `class ${i}: ${v} vs ${want[i]}`));
    assert.ok(json.top.every((t, i) => i === 0 || t.prob <= json.top[i - 1]!.prob), 'sorted by probability');
  });

  it('20 concurrent requests run in batches > 1 and each equals its unbatched result', async () => {
    const before = await metrics(srv.url);
    const results = await Promise.all(pngs.map((png) => classify(srv.url, png)));
    let correct = 0;
    results.forEach(({ status, json }, i) => {
      assert.equal(status, 200, `image ${i}: ${JSON.stringify(json)}`);
      const want = softmax(refLogits[i]!);
      probsOf(json).forEach((v, c) => assert.ok(Math.abs(v - want[c]!) <= 1e-5, `image ${i} class ${c}: ${v} vs ${want[c]}`));
      assert.equal(json.top[0]!.index, argmax(refLogits[i]!));
      if (json.top[0]!.index === labels[i]) correct++;
    });
    assert.ok(correct >= 18, `${correct}/20 of the first test images right (the model has 93.6 % top-1)`);
    assert.ok(results.some((r) => r.json.batchSize > 1), 'some request ran in a batch of more than one');
    assert.ok(results.every((r) => r.json.batchSize >= 1 && r.json.batchSize <= 8));
    const after = await metrics(srv.url);
    const delta = (k: string): number => (after.get(k) ?? 0) - (before.get(k) ?? 0);
    assert.equal(delta('mnv2_images_processed_total'), N);
    assert.equal(delta('mnv2_batch_size_sum'), N);
    assert.ok(delta('mnv2_batch_size_count') < N, `${delta('mnv2_batch_size_count')} model runs for ${N} images`);
    assert.ok(delta('mnv2_batch_size_count') >= Math.ceil(N / 8));
    assert.equal(delta('mnv2_http_requests_total{route="/v1/classify",code="200"}'), N);
    assert.equal(delta('mnv2_classify_duration_seconds_count'), N);
    assert.equal(after.get('mnv2_queue_depth'), 0);
    assert.equal(after.get('mnv2_requests_in_flight'), 0);
  });

  it('413 for a body over the limit, 415 for other content types, 400 for bytes that are not an image', async () => {
    const big = await classify(srv.url, Buffer.alloc(100 * 1024));
    assert.equal(big.status, 413);
    assert.match(big.json.error!, /larger than the limit of 64 KB/);

    const text = await classify(srv.url, 'a shirt', 'text/plain');
    assert.equal(text.status, 415);
    assert.match(text.json.error!, /unsupported Content-Type 'text\/plain'.*image\/png/);
    assert.equal((await classify(srv.url, '{"image": 1}', 'application/json')).status, 415);

    for (const bad of [pngs[0]!.subarray(0, pngs[0]!.length >> 1), Buffer.from('not an image at all'), Buffer.alloc(0)]) {
      const r = await classify(srv.url, bad);
      assert.equal(r.status, 400, `${bad.length} bytes`);
      assert.match(r.json.error!, /could not read image 'request body'/);
    }
    // A JPEG and an octet-stream body are classified like the PNG.
    const jpeg = await sharp(pngs[1]!).jpeg({ quality: 100 }).toBuffer();
    assert.equal((await classify(srv.url, jpeg, 'image/jpeg')).json.top[0]!.index, argmax(refLogits[1]!));
    assert.equal((await classify(srv.url, pngs[1]!, 'application/octet-stream')).json.top[0]!.index, argmax(refLogits[1]!));

    const m = await metrics(srv.url);
    assert.ok(m.get('mnv2_http_requests_total{route="/v1/classify",code="400"}')! >= 3);
    assert.ok(m.get('mnv2_http_requests_total{route="/v1/classify",code="413"}')! >= 1);
    assert.ok(m.get('mnv2_http_requests_total{route="/v1/classify",code="415"}')! >= 2);
  });

  it('/healthz, /v1/model and /metrics', async () => {
    const h = await fetch(`${srv.url}/healthz`);
    assert.equal(h.status, 200);
    assert.deepEqual(await h.json(), { status: 'ok' });
    const info = (await (await fetch(`${srv.url}/v1/model`)).json()) as Record<string, unknown>;
    assert.deepEqual(info.input, [3, 32, 32]);
    assert.equal(info.preset, 'fashion-mnist');
    assert.equal(info.engine, 'ort');
    const m = await metrics(srv.url);
    for (const k of ['mnv2_batch_size_bucket{le="+Inf"}', 'mnv2_inference_duration_seconds_count', 'mnv2_queue_depth', 'process_resident_memory_bytes']) {
      assert.ok(m.has(k), `missing ${k}`);
    }
    assert.ok(m.get('process_resident_memory_bytes')! > 1e6);
    // Buckets are cumulative and end at the count.
    const buckets = [1, 2, 4, 8, 16, 32, 64, 128, 256].map((b) => m.get(`mnv2_batch_size_bucket{le="${b}"}`)!);
    assert.ok(buckets.every((v, i) => i === 0 || v >= buckets[i - 1]!));
    assert.equal(m.get('mnv2_batch_size_bucket{le="+Inf"}'), m.get('mnv2_batch_size_count'));
  });
});

describe('serve: load shedding and shutdown', () => {
  it('503 with Retry-After when --max-queue requests are already in progress', async () => {
    const clf = gated(await createClassifier(model.graph, model.weights, 'ort', 1));
    const srv = await startServer(serverOptions(clf, { maxQueue: 1, maxBatch: 1 }));
    const first = classify(srv.url, pngs[0]!);
    await clf.entered;
    const second = await classify(srv.url, pngs[1]!);
    assert.equal(second.status, 503);
    assert.equal(second.headers.get('retry-after'), '1');
    assert.match(second.json.error!, /server busy: 1 requests in progress/);
    clf.open();
    assert.equal((await first).status, 200);
    assert.equal((await classify(srv.url, pngs[1]!)).status, 200);
    await srv.close();
    assert.ok(clf.released);
  });

  it('close(): the request in progress completes with 200, new requests get 503, new connections are refused', async () => {
    const clf = gated(await createClassifier(model.graph, model.weights, 'ort', 1));
    const srv = await startServer(serverOptions(clf));
    const { port } = new URL(srv.url);
    // A raw keep-alive connection, so the request after close() can travel on it.
    const sock = net.connect(Number(port), '127.0.0.1');
    let received = '';
    sock.on('data', (d: Buffer) => (received += d.toString('latin1')));
    const closed = once(sock, 'close');
    sock.write(`POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: ${pngs[2]!.length}\r\n\r\n`);
    sock.write(pngs[2]!);
    await clf.entered;

    const closing = srv.close();
    // fastify stops listening from a hook of its own.
    await until(() => !srv.app.server.listening);
    const refused = net.connect(Number(port), '127.0.0.1');
    const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ECONNREFUSED');

    sock.write('GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n');
    clf.open();
    await closing;
    await closed;
    assert.ok(clf.released, 'the model is released after the last batch');
    const statuses = [...received.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 503]);
    const body = JSON.parse(received.slice(received.indexOf('\r\n\r\n') + 4, received.indexOf('HTTP/1.1 503'))) as Classified;
    assert.equal(body.top[0]!.index, argmax(refLogits[2]!));
  });

  it('close() with clients that hung up mid-request: their images still run, then the model is released', async () => {
    const clf = gated(await createClassifier(model.graph, model.weights, 'ort', 1));
    const srv = await startServer(serverOptions(clf, { maxBatch: 1 }));
    const { port } = new URL(srv.url);
    const socks = pngs.slice(0, 3).map((png) => {
      const s = net.connect(Number(port), '127.0.0.1');
      s.write(`POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: ${png.length}\r\n\r\n`);
      s.write(png);
      return s;
    });
    await clf.entered;
    await until(() => srv.metrics.inFlight.value === 3);
    for (const s of socks) s.destroy();
    const closing = srv.close();
    clf.open();
    await closing;
    assert.equal(srv.metrics.images.get(), 3);
    assert.ok(clf.released);
  });

  it('the native engine serves the same classes', async () => {
    const srv = await startServer(serverOptions(await createClassifier(model.graph, model.weights, 'native', 1), { maxBatch: 4, maxWaitMs: 50 }));
    try {
      const results = await Promise.all(pngs.slice(0, 6).map((png) => classify(srv.url, png)));
      results.forEach(({ status, json }, i) => {
        assert.equal(status, 200);
        const want = softmax(refLogits[i]!);
        probsOf(json).forEach((v, c) => assert.ok(Math.abs(v - want[c]!) <= 1e-4, `image ${i} class ${c}: ${v} vs ${want[c]}`));
      });
      // One compiled program per batch size run, their memory reported (bounded by the engine's byte budget).
      const text = await (await fetch(`${srv.url}/metrics`)).text();
      const sizes = new Set(results.map(({ json }) => json.batchSize));
      assert.match(text, new RegExp(`^mnv2_native_programs ${sizes.size}$`, 'm'));
      const bytes = Number(/^mnv2_native_program_bytes (\d+)$/m.exec(text)?.[1]);
      assert.ok(bytes > 1e6 && bytes <= 1 << 30, `mnv2_native_program_bytes ${bytes}`);
    } finally {
      await srv.close();
    }
  });
});

describe('serve: CLI', () => {
  it('mnv2 serve --port 0 prints its address, serves, and exits 0 on SIGTERM', async () => {
    const { url, child, exited, stderr } = await spawnServe([]);
    const { status, json } = await classify(url, pngs[0]!);
    assert.equal(status, 200);
    assert.equal(json.top[0]!.label, 'Ankle boot');
    assert.equal(json.top.length, 5);
    child.kill('SIGTERM');
    const [code, signal] = await exited;
    assert.equal(signal, null);
    assert.equal(code, 0, stderr());
    assert.match(stderr(), /SIGTERM: finishing the requests in progress\n.*stopped/);
  });

  it('mnv2 serve exits 0 on SIGTERM within --shutdown-grace with an idle keep-alive connection and a half-sent body open', async () => {
    const { url, child, exited, stderr } = await spawnServe(['--shutdown-grace', '1']);
    const { port } = new URL(url);
    // An idle keep-alive connection: one answered request, then silence.
    const idle = net.connect(Number(port), '127.0.0.1');
    let idleReceived = '';
    idle.on('data', (d: Buffer) => (idleReceived += d.toString('latin1')));
    idle.write('GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: keep-alive\r\n\r\n');
    await until(() => idleReceived.includes('"status":"ok"'));
    const idleClosed = once(idle, 'close');
    // A request whose body never finishes arriving.
    const slow = net.connect(Number(port), '127.0.0.1');
    slow.on('error', () => {});
    const slowClosed = once(slow, 'close');
    slow.write(`POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: ${pngs[0]!.length}\r\n\r\n`);
    slow.write(pngs[0]!.subarray(0, 10));
    await new Promise((r) => setTimeout(r, 200));
    const t0 = performance.now();
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const [code, signal] = await exited;
    clearTimeout(timer);
    const secs = (performance.now() - t0) / 1000;
    assert.equal(signal, null, `still running after 15 s: ${stderr()}`);
    assert.equal(code, 0, stderr());
    assert.ok(secs < 6, `exited after ${secs.toFixed(1)} s with a 1 s grace`);
    await idleClosed;
    await slowClosed;
    assert.match(stderr(), /1 unfinished request\(s\) cut after the 1 s grace period/);
  });

  it('mnv2 serve --onnx serves an exported model (ONNX files carry no preprocessing: flags give it)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mnv2-serve-'));
    try {
      const file = path.join(dir, 'fm.onnx');
      writeFileSync(file, exportOnnx(model.graph, model.weights));
      const { url, child, exited, stderr } = await spawnServe(['--onnx', file, '--preset', 'fashion-mnist', '--labels', 'fashion-mnist', '--max-batch', '1', '--top', '3']);
      const results = await Promise.all(pngs.slice(0, 4).map((png) => classify(url, png)));
      results.forEach(({ json }, i) => {
        assert.equal(json.model, 'fm.onnx');
        assert.equal(json.batchSize, 1);
        assert.equal(json.top.length, 3);
        assert.equal(json.top[0]!.index, argmax(refLogits[i]!));
        assert.ok(Math.abs(json.top[0]!.prob - Math.max(...softmax(refLogits[i]!))) <= 1e-5);
      });
      child.kill('SIGINT');
      assert.deepEqual(await exited, [0, null], stderr());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('mnv2 serve --onnx on a model it cannot feed fails at start with a clear error (not 500 on every request)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mnv2-serve-'));
    try {
      // The same export taking uint8 pixels (cast to float inside), as converted image models do: the server feeds float32.
      const m = decodeOnnx(exportOnnx(model.graph, model.weights), 'export');
      for (const n of m.graph!.node!) n.input = n.input!.map((x) => (x === 'input' ? 'input_f32' : x));
      m.graph!.node!.unshift({ name: 'cast_input', opType: 'Cast', input: ['input'], output: ['input_f32'], attribute: [{ name: 'to', type: 2, i: 1 }] });
      m.graph!.input![0]!.type!.tensorType!.elemType = 2; // UINT8
      const file = path.join(dir, 'uint8.onnx');
      writeFileSync(file, onnxProto.onnx.ModelProto.encode(m).finish());
      const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--onnx', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const [code] = (await once(child, 'exit')) as [number | null];
      clearTimeout(timer);
      assert.doesNotMatch(out, /listening on/);
      assert.equal(code, 1, err);
      assert.match(err, /uint8\.onnx: cannot run on a 1×3×32×32 float32 batch as the server feeds it \(Unexpected input data type\. Actual: \(tensor\(float\)\) , expected: \(tensor\(uint8\)\)\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('mnv2 serve rejects bad flags with a message', async () => {
    const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--body-limit', 'lots'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 1);
    assert.match(stderr, /--body-limit expects a size such as 10mb/);
  });
});

describe('Batcher', () => {
  it('groups up to max batch, flushes on drain, keeps order, and refuses work after drain', async () => {
    const sizes: number[] = [];
    const b = new Batcher({
      maxBatch: 2,
      maxWaitMs: 60_000,
      inputSize: 1,
      outputSize: 2,
      run: async (x, n) => {
        sizes.push(n);
        return Float32Array.from(Array.from(x).flatMap((v) => [v, -v]));
      },
    });
    const results = [1, 2, 3, 4, 5].map((v) => b.submit(Float32Array.of(v)));
    assert.equal(b.depth, 3); // the first two run at once
    await b.drain();
    const out = await Promise.all(results);
    assert.deepEqual(sizes, [2, 2, 1]);
    assert.deepEqual(out.map((r) => Array.from(r.logits)), [1, 2, 3, 4, 5].map((v) => [v, -v]));
    assert.deepEqual(out.map((r) => r.batchSize), [2, 2, 2, 2, 1]);
    await assert.rejects(b.submit(Float32Array.of(6)), BatcherClosedError);
  });

  it('a partial batch runs after max wait; a failing run rejects every request of its batch', async () => {
    let fail = false;
    const b = new Batcher({
      maxBatch: 8,
      maxWaitMs: 1,
      inputSize: 1,
      outputSize: 1,
      run: async (x) => {
        if (fail) throw new Error('engine failed');
        return x;
      },
    });
    assert.deepEqual((await Promise.all([b.submit(Float32Array.of(7)), b.submit(Float32Array.of(8))])).map((r) => r.batchSize), [2, 2]);
    fail = true;
    const both = [b.submit(Float32Array.of(1)), b.submit(Float32Array.of(2))];
    for (const r of both) await assert.rejects(r, /engine failed/);
    await assert.rejects(b.submit(new Float32Array(2)), /input has 2 values, expected 1/);
  });
});

describe('Prometheus text format', () => {
  it('counters with escaped labels, gauges, cumulative histograms', () => {
    const r = new Registry();
    const c = r.add(new Counter('x_total', 'a "help"\nline'));
    c.inc({ path: 'a"b\\c\nd' });
    c.inc({ path: 'a"b\\c\nd' }, 2);
    r.add(new Gauge('g', 'gauge', () => 1.5));
    const h = r.add(new Histogram('h', 'hist', [1, 5]));
    for (const v of [0.5, 1, 3, 10]) h.observe(v);
    assert.equal(
      r.render(),
      [
        '# HELP x_total a "help"\\nline',
        '# TYPE x_total counter',
        'x_total{path="a\\"b\\\\c\\nd"} 3',
        '# HELP g gauge',
        '# TYPE g gauge',
        'g 1.5',
        '# HELP h hist',
        '# TYPE h histogram',
        'h_bucket{le="1"} 2',
        'h_bucket{le="5"} 3',
        'h_bucket{le="+Inf"} 4',
        'h_sum 14.5',
        'h_count 4',
        '',
      ].join('\n'),
    );
    assert.throws(() => new Histogram('bad', 'x', [2, 1]), /increasing/);
  });
});
