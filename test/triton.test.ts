/**
 * mnv2 export triton: the config.pbtxt written is parsed back (protobuf text format) and checked against the ONNX
 * model's inputs and outputs as ONNX Runtime reads them; the repository's model.onnx runs and matches the native
 * engine; existing models are not overwritten without --force, and a replacement leaves no temporary files.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { loadWeights, type LoadedWeights } from '../src/io/weights.js';
import { NativeModel } from '../src/engine/native/model.js';
import { OrtModel } from '../src/engine/onnx/session.js';
import { exportTriton, tritonConfig } from '../src/engine/onnx/triton.js';
import { loadFashionMnist } from '../src/data/idx.js';
import { FASHION_MNIST_INPUT, toModelInput } from '../src/data/dataset.js';
import { FASHION_MNIST_LABELS } from '../src/data/labels.js';
import { DEFAULT_MODEL } from '../src/cli/model-commands.js';
import { maxAbs, maxAbsDiff } from './helpers/fixtures.js';
import { archConfig, buildModel } from '../src/model/registry.js';
import { initWeights } from '../src/model/weights.js';
import { saveWeights } from '../src/io/weights.js';
import { ssdAnchors } from '../src/detect/anchors.js';
import { decodeBoxes } from '../src/detect/box-coder.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const tmp = mkdtempSync(path.join(os.tmpdir(), 'mnv2-triton-'));

type PbValue = string | number | PbMessage | PbValue[];
interface PbMessage {
  [field: string]: PbValue[];
}

/**
 * A small parser of the protobuf text format as config.pbtxt uses it: `field: scalar`, `field [ ... ]`,
 * `field { ... }` / `field: { ... }`, `#` comments. Every field maps to the list of its values (repeated or not).
 */
function parsePbtxt(text: string): PbMessage {
  const tokens = [...text.replace(/#[^\n]*/g, '').matchAll(/"(?:[^"\\]|\\.)*"|[{}[\]:,]|[^\s{}[\]:,"]+/g)].map((m) => m[0]);
  let i = 0;
  const next = (): string => {
    const t = tokens[i++];
    if (t === undefined) throw new Error('config.pbtxt: unexpected end');
    return t;
  };
  const scalar = (t: string): string | number => {
    if (t.startsWith('"')) return JSON.parse(t) as string;
    if (/^-?\d+(\.\d+)?$/.test(t)) return Number(t);
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(t)) return t; // enum value or bool
    throw new Error(`config.pbtxt: bad token '${t}'`);
  };
  const value = (): PbValue => {
    const t = next();
    if (t === '{') return message('}');
    if (t === '[') {
      const items: PbValue[] = [];
      if (tokens[i] === ']') return (i++, items);
      for (;;) {
        items.push(value());
        const sep = next();
        if (sep === ']') return items;
        if (sep !== ',') throw new Error(`config.pbtxt: expected , or ] got '${sep}'`);
      }
    }
    return scalar(t);
  };
  const message = (end: string | undefined): PbMessage => {
    const msg: PbMessage = {};
    while (i < tokens.length && tokens[i] !== end) {
      const field = next();
      if (!/^[a-z_][a-z0-9_]*$/.test(field)) throw new Error(`config.pbtxt: bad field name '${field}'`);
      if (tokens[i] === ':') i++;
      else if (tokens[i] !== '{' && tokens[i] !== '[') throw new Error(`config.pbtxt: expected ':' after ${field}`);
      const v = value();
      (msg[field] ??= []).push(...(Array.isArray(v) ? v : [v]));
    }
    if (end) next();
    return msg;
  };
  const root = message(undefined);
  if (i !== tokens.length) throw new Error('config.pbtxt: trailing tokens');
  return root;
}

const one = (m: PbMessage, field: string): PbValue => {
  const v = m[field];
  assert.ok(v && v.length === 1, `expected one '${field}', got ${JSON.stringify(v)}`);
  return v[0]!;
};
const msg = (v: PbValue): PbMessage => v as PbMessage;

const ORT_TO_TRITON: Record<string, string> = { float32: 'TYPE_FP32', float16: 'TYPE_FP16', int64: 'TYPE_INT64' };

let model: LoadedWeights;
let input: Float32Array;
let nativeLogits: Float32Array;
const B = 6;

before(() => {
  model = loadWeights(DEFAULT_MODEL);
  const ds = loadFashionMnist(undefined, 'test');
  input = toModelInput(ds, [0, 1, 2, 3, 4, 5], new Float32Array(B * 3 * 32 * 32), FASHION_MNIST_INPUT);
  nativeLogits = new NativeModel(model.graph, model.weights, { threads: 1 }).predict(input, B);
});

after(() => rmSync(tmp, { recursive: true, force: true }));

describe('mnv2 export triton', () => {
  it('config.pbtxt matches the ONNX model as ONNX Runtime reads it, and model.onnx matches the native engine', async () => {
    const repo = path.join(tmp, 'repo');
    const dir = exportTriton(repo, model.graph, model.weights, {
      name: 'fmnist', maxBatch: 64, preferredBatch: [16, 32], maxQueueDelayUs: 5000, instances: 2, labels: FASHION_MNIST_LABELS,
      notes: ['preprocessing: fashion-mnist'],
    });
    assert.equal(dir, path.join(repo, 'fmnist'));
    assert.deepEqual(readdirSync(repo), ['fmnist'], 'no temporary directories left');
    assert.deepEqual(readdirSync(dir).sort(), ['1', 'config.pbtxt', 'labels.txt']);
    assert.deepEqual(readdirSync(path.join(dir, '1')), ['model.onnx']);

    const text = readFileSync(path.join(dir, 'config.pbtxt'), 'utf8');
    assert.match(text, /^# preprocessing: fashion-mnist\n/);
    const cfg = parsePbtxt(text);
    assert.equal(one(cfg, 'name'), 'fmnist');
    assert.equal(one(cfg, 'platform'), 'onnxruntime_onnx');
    assert.equal(one(cfg, 'max_batch_size'), 64);

    const session = await ort.InferenceSession.create(path.join(dir, '1', 'model.onnx'));
    try {
      const check = (configured: PbValue[], actual: readonly ort.InferenceSession.ValueMetadata[]): void => {
        assert.equal(configured.length, actual.length);
        actual.forEach((meta, k) => {
          const c = msg(configured[k]!);
          assert.ok(meta.isTensor);
          assert.equal(one(c, 'name'), meta.name);
          assert.equal(one(c, 'data_type'), ORT_TO_TRITON[meta.type]);
          // Triton's dims leave out the batch dimension, which must be the model's dynamic first one.
          assert.equal(typeof meta.shape[0], 'string', `${meta.name}: dynamic batch dimension`);
          assert.deepEqual(c.dims, meta.shape.slice(1));
        });
      };
      check(cfg.input!, session.inputMetadata);
      check(cfg.output!, session.outputMetadata);
    } finally {
      await session.release();
    }
    assert.deepEqual(msg(cfg.input![0]!).dims, [3, 32, 32]);
    assert.deepEqual(msg(cfg.output![0]!).dims, [10]);
    assert.equal(one(msg(cfg.output![0]!), 'label_filename'), 'labels.txt');
    assert.deepEqual(readFileSync(path.join(dir, 'labels.txt'), 'utf8').split('\n'), [...FASHION_MNIST_LABELS, '']);

    const batching = msg(one(cfg, 'dynamic_batching'));
    assert.deepEqual(batching.preferred_batch_size, [16, 32]);
    assert.equal(one(batching, 'max_queue_delay_microseconds'), 5000);
    const group = msg(one(cfg, 'instance_group'));
    assert.equal(one(group, 'kind'), 'KIND_CPU');
    assert.equal(one(group, 'count'), 2);

    const ortModel = await OrtModel.create(path.join(dir, '1', 'model.onnx'), { threads: 1 });
    try {
      const logits = await ortModel.run(input, B);
      assert.ok(maxAbsDiff(logits, nativeLogits) <= 1e-4 * maxAbs(nativeLogits), `ORT vs native: ${maxAbsDiff(logits, nativeLogits)}`);
    } finally {
      await ortModel.release();
    }
  });

  it('refuses to replace a non-empty model directory without force; with force it replaces it whole', () => {
    const repo = path.join(tmp, 'force');
    const opts = { name: 'm', maxBatch: 8, preferredBatch: [], maxQueueDelayUs: 100, instances: 1 };
    const dir = exportTriton(repo, model.graph, model.weights, { ...opts, labels: FASHION_MNIST_LABELS });
    const before = readFileSync(path.join(dir, 'config.pbtxt'), 'utf8');
    assert.throws(() => exportTriton(repo, model.graph, model.weights, { ...opts, maxBatch: 4 }), /already exists and is not empty; pass --force/);
    assert.equal(readFileSync(path.join(dir, 'config.pbtxt'), 'utf8'), before);

    exportTriton(repo, model.graph, model.weights, { ...opts, maxBatch: 4, force: true });
    assert.equal(one(parsePbtxt(readFileSync(path.join(dir, 'config.pbtxt'), 'utf8')), 'max_batch_size'), 4);
    assert.deepEqual(readdirSync(dir).sort(), ['1', 'config.pbtxt'], 'the old labels.txt went with the old directory');
    assert.deepEqual(readdirSync(repo), ['m']);
    assert.equal(parsePbtxt(readFileSync(path.join(dir, 'config.pbtxt'), 'utf8')).dynamic_batching!.length, 1);

    // An empty directory (e.g. made by hand beforehand) is filled without force.
    mkdirSync(path.join(repo, 'empty'));
    exportTriton(repo, model.graph, model.weights, { ...opts, name: 'empty' });
    assert.deepEqual(readdirSync(path.join(repo, 'empty')).sort(), ['1', 'config.pbtxt']);
    writeFileSync(path.join(repo, 'file'), 'x');
    assert.throws(() => exportTriton(repo, model.graph, model.weights, { ...opts, name: 'file' }), /exists and is not a directory/);
  });

  it('rejects names that are not plain directory names and inconsistent batch settings', () => {
    const cfg = model.graph.config;
    const base = { name: 'ok', maxBatch: 8, preferredBatch: [4], maxQueueDelayUs: 0, instances: 1 };
    assert.throws(() => tritonConfig(cfg, { ...base, name: '../x' }), /model name '..\/x'/);
    assert.throws(() => tritonConfig(cfg, { ...base, preferredBatch: [16] }), /preferred batch size 16 must be an integer in 1..8/);
    assert.throws(() => tritonConfig(cfg, { ...base, maxBatch: 0 }), /max batch must be a positive integer/);
    assert.match(tritonConfig(cfg, base), /max_queue_delay_microseconds: 0\n/);
  });

  it('CLI: export triton with fp16 weights; float32 input/output and close logits', async () => {
    const repo = path.join(tmp, 'cli');
    const { stderr } = await run(process.execPath, [CLI, 'export', 'triton', repo, '--name', 'fm16', '--max-batch', '8', '--preferred-batch', '4,16', '--fp16']);
    assert.match(stderr, /wrote .*fm16\/config\.pbtxt.*labels\.txt \(fp16\)/);
    const cfg = parsePbtxt(readFileSync(path.join(repo, 'fm16', 'config.pbtxt'), 'utf8'));
    assert.equal(one(cfg, 'max_batch_size'), 8);
    assert.deepEqual(msg(one(cfg, 'dynamic_batching')).preferred_batch_size, [4, 8]);
    assert.equal(one(msg(cfg.input![0]!), 'data_type'), 'TYPE_FP32');
    const m = await OrtModel.create(path.join(repo, 'fm16', '1', 'model.onnx'), { threads: 1 });
    try {
      const logits = await m.run(input, B);
      assert.ok(maxAbsDiff(logits, nativeLogits) <= 2e-2 * maxAbs(nativeLogits), `fp16 vs native: ${maxAbsDiff(logits, nativeLogits)}`);
    } finally {
      await m.release();
    }
    await assert.rejects(run(process.execPath, [CLI, 'export', 'triton', repo, '--name', 'fm16']), (e: { code: number; stderr: string }) => {
      assert.equal(e.code, 1);
      assert.match(e.stderr, /fm16 already exists and is not empty; pass --force/);
      return true;
    });
  });
});

describe('mnv2 export triton: an SSDLite detector', () => {
  it('raw or decoded outputs per image as config.pbtxt says; decode matches the raw export decoded in TS', async () => {
    const graph = buildModel(archConfig('ssdlite', { resolution: 129, numClasses: 3, alpha: 0.35 }));
    const weights = initWeights(graph, 2);
    const file = path.join(tmp, 'ssdlite.safetensors');
    saveWeights(file, graph, weights);
    const A = ssdAnchors({ height: 129, width: 129 }).count;
    const x = Float32Array.from({ length: 2 * 3 * 129 * 129 }, (_, i) => Math.sin(i));
    const outputs: Record<string, Float32Array> = {};
    for (const [mode, names] of [['none', ['boxes', 'logits']], ['decode', ['decoded_boxes', 'scores']]] as const) {
      const repo = path.join(tmp, `det-${mode}`);
      await run(process.execPath, [CLI, 'export', 'triton', repo, '--weights', file, '--name', 'ssd', '--detect-postprocess', mode]);
      const cfg = parsePbtxt(readFileSync(path.join(repo, 'ssd', 'config.pbtxt'), 'utf8'));
      assert.deepEqual(cfg.output!.map((o) => [one(msg(o), 'name'), msg(o).dims]), [[names[0], [A, 4]], [names[1], [A, 4]]]);
      assert.deepEqual(msg(cfg.input![0]!).dims, [3, 129, 129]);
      const s = await ort.InferenceSession.create(path.join(repo, 'ssd', '1', 'model.onnx'));
      try {
        assert.deepEqual(s.outputMetadata.map((m) => (m.isTensor ? m.shape.slice(1) : null)), [[A, 4], [A, 4]]);
        const r = await s.run({ input: new ort.Tensor('float32', x, [2, 3, 129, 129]) });
        for (const n of names) outputs[n] = r[n]!.data as Float32Array;
      } finally {
        await s.release();
      }
    }
    const anchors = ssdAnchors({ height: 129, width: 129 });
    for (const b of [0, 1]) {
      const want = decodeBoxes(outputs['boxes']!.subarray(b * A * 4, (b + 1) * A * 4), anchors.corners);
      assert.ok(maxAbsDiff(outputs['decoded_boxes']!.subarray(b * A * 4, (b + 1) * A * 4), want) < 2e-6);
    }
    await assert.rejects(run(process.execPath, [CLI, 'export', 'triton', path.join(tmp, 'c'), '--detect-postprocess', 'decode']), (e: { stderr: string }) => /--detect-postprocess is for SSDLite detectors, not a mobilenetv2 model/.test(e.stderr));
  });
});
