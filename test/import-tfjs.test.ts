/**
 * `mnv2 import tfjs`: TF.js layers models (model.json + shards) of a Keras MobileNetV2 built with tfjs-layers,
 * float32 in two shards, and a transfer-learning variant (nested base model, Dropout, custom 3-class head) with
 * uint8 / uint16 / float16-quantized weights. References: tfjs-layers loading the same files and running them
 * on the CPU backend (logits within 1e-4 * max |logit|) and tfjs's own decoded weights (bit-exact).
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, statSync, writeFileSync } from 'node:fs';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createClassifier } from '../src/engine/classifier.js';
import { float32ToFloat16 } from '../src/io/safetensors.js';
import { importTfjs, readTfjsWeights } from '../src/io/tfjs.js';
import type { ImportedModel } from '../src/io/keras-names.js';
import { Rng } from '../src/util/rng.js';
import { maxAbs, maxAbsDiff } from './helpers/fixtures.js';
import { kerasMobileNetV2, randomizeWeights, saveArtifacts, tf, tfjsPredict, tfl, toNhwc } from './helpers/keras-model.js';

const ALPHA = 0.35;
const ROWS = 96;
const BATCH = 2;
const TOL = 1e-4;

type Spec = tf.io.WeightsManifestEntry;

/** Write model.json + shards; `split` cuts the weight bytes into that many shards of one group. */
function writeModel(dir: string, topology: unknown, specs: Spec[], data: Uint8Array, split = 1): string {
  const size = Math.ceil(data.length / split);
  const paths = Array.from({ length: split }, (_, i) => `group1-shard${i + 1}of${split}.bin`);
  paths.forEach((p, i) => writeFileSync(path.join(dir, p), data.subarray(i * size, (i + 1) * size)));
  const file = path.join(dir, 'model.json');
  writeFileSync(file, JSON.stringify({ format: 'layers-model', generatedBy: 'test', convertedBy: null, modelTopology: topology, weightsManifest: [{ paths, weights: specs }] }));
  return file;
}

/** tfjs-layers loading a model.json from disk: the reference reader. */
async function tfjsLoad(file: string): Promise<tfl.LayersModel> {
  const dir = path.dirname(file);
  const json = JSON.parse(readFileSync(file, 'utf8')) as tf.io.ModelJSON;
  const handler: tf.io.IOHandler = {
    load: () =>
      tf.io.getModelArtifactsForJSON(json, async (manifest) => {
        const bytes = Buffer.concat(manifest.flatMap((g) => g.paths.map((p) => readFileSync(path.join(dir, p)))));
        return [tf.io.getWeightSpecs(manifest), new Uint8Array(bytes).buffer];
      }),
  };
  return tfl.loadLayersModel(handler);
}

/** Quantize like tensorflowjs_converter (affine uint8/uint16 with min and scale; float16), cycling dtypes per weight. */
function quantize(specs: Spec[], data: ArrayBuffer): { specs: Spec[]; data: Uint8Array } {
  const decoded = tf.io.decodeWeights(data, specs);
  const chunks: Uint8Array[] = [];
  const out = specs.map((s, i): Spec => {
    const v = decoded[s.name]!.dataSync() as Float32Array;
    const dtype = (['uint8', 'uint16', 'float16'] as const)[i % 3]!;
    if (dtype === 'float16') {
      chunks.push(new Uint8Array(float32ToFloat16(v).buffer));
      return { ...s, quantization: { dtype, original_dtype: 'float32' } as Spec['quantization'] };
    }
    const levels = dtype === 'uint8' ? 255 : 65535;
    const min = v.reduce((a, b) => Math.min(a, b), Infinity);
    const max = v.reduce((a, b) => Math.max(a, b), -Infinity);
    const scale = max > min ? (max - min) / levels : 1;
    const q = dtype === 'uint8' ? new Uint8Array(v.length) : new Uint16Array(v.length);
    v.forEach((x, j) => (q[j] = Math.round((x - min) / scale)));
    chunks.push(new Uint8Array(q.buffer));
    return { ...s, quantization: { dtype, min, scale, original_dtype: 'float32' } as Spec['quantization'] };
  });
  tf.dispose(Object.values(decoded));
  return { specs: out, data: Buffer.concat(chunks) };
}

async function logits(m: ImportedModel, engine: 'native' | 'ort', input: Float32Array): Promise<Float32Array> {
  const clf = await createClassifier(m.graph, m.weights, engine, 1);
  try {
    return await clf.run(input, BATCH);
  } finally {
    await clf.release();
  }
}

describe('import tfjs (model.json)', () => {
  let root: string;
  let input: Float32Array;
  let nhwc: Float32Array;
  const sub = (name: string): string => {
    const d = path.join(root, name);
    mkdirSync(d);
    return d;
  };

  before(() => {
    root = mkdtempSync(path.join(tmpdir(), 'mnv2-tfjs-'));
    const rng = new Rng(9);
    input = Float32Array.from({ length: BATCH * 3 * ROWS * ROWS }, () => rng.uniform() * 2 - 1);
    nhwc = toNhwc(input, BATCH, 3, ROWS, ROWS);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('float32, two shards: native and ORT match tfjs-layers on the same files', async (t) => {
    const model = kerasMobileNetV2({ alpha: ALPHA, rows: ROWS, classes: 5 });
    randomizeWeights(model, 2);
    const art = await saveArtifacts(model);
    const file = writeModel(sub('f32'), art.modelTopology, art.weightSpecs!, new Uint8Array(tf.io.CompositeArrayBuffer.join(art.weightData!)), 2);
    const direct = tfjsPredict(model, nhwc, BATCH, ROWS);
    model.dispose();
    const loaded = await tfjsLoad(file);
    const reference = tfjsPredict(loaded, nhwc, BATCH, ROWS);
    loaded.dispose();
    assert.deepEqual(reference, direct, 'tfjs reads back the files it wrote');

    const m = importTfjs(file);
    const c = m.graph.config;
    assert.deepEqual([c.alpha, c.resolution, c.numClasses, c.padding, c.bnEps, c.dropout, m.headLayer], [0.35, 96, 5, 'keras', 1e-3, 0, 'predictions']);
    const scale = maxAbs(reference);
    assert.ok(scale > 0.1, `reference logits are not trivial (max ${scale})`);
    for (const engine of ['native', 'ort'] as const) {
      const d = maxAbsDiff(await logits(m, engine, input), reference);
      t.diagnostic(`${engine}: max |diff| ${d.toExponential(2)}, max |logit| ${scale.toFixed(3)}`);
      assert.ok(d <= TOL * scale, `${engine}: max |diff| ${d} > ${TOL} * ${scale}`);
    }
  });

  it('quantized uint8/uint16/float16, nested base + dropout + custom head: decodes as tfjs does, logits match', async (t) => {
    const model = kerasMobileNetV2({ alpha: ALPHA, rows: ROWS, classes: 3, nested: true, headName: 'my_head' });
    randomizeWeights(model, 3);
    const art = await saveArtifacts(model);
    model.dispose();
    const q = quantize(art.weightSpecs!, tf.io.CompositeArrayBuffer.join(art.weightData!));
    assert.ok(q.specs.some((s) => s.quantization?.dtype === 'uint8'));
    const file = writeModel(sub('q'), art.modelTopology, q.specs, q.data);
    const loaded = await tfjsLoad(file);
    const reference = tfjsPredict(loaded, nhwc, BATCH, ROWS);

    // Every decoded weight equals tfjs's, bit for bit.
    const ours = readTfjsWeights(JSON.parse(readFileSync(file, 'utf8')).weightsManifest, path.dirname(file), file);
    let count = 0;
    for (const w of loaded.weights) {
      const [layer, kind] = w.originalName.split('/').slice(-2) as [string, string];
      assert.deepEqual(ours.get(layer)?.get(kind)?.data, w.read().dataSync(), w.originalName);
      count++;
    }
    assert.equal(count, q.specs.length);
    loaded.dispose();

    const m = importTfjs(file);
    const c = m.graph.config;
    assert.deepEqual([c.alpha, c.resolution, c.numClasses, c.dropout, m.headLayer], [0.35, 96, 3, 0.25, 'my_head']);
    const scale = maxAbs(reference);
    for (const engine of ['native', 'ort'] as const) {
      const d = maxAbsDiff(await logits(m, engine, input), reference);
      t.diagnostic(`quantized, ${engine}: max |diff| ${d.toExponential(2)}, max |logit| ${scale.toFixed(3)}`);
      assert.ok(d <= TOL * scale, `${engine}: max |diff| ${d} > ${TOL} * ${scale}`);
    }
  });

  describe('errors', () => {
    let topology: unknown;
    let specs: Spec[];
    let data: Uint8Array;
    before(async () => {
      const model = kerasMobileNetV2({ alpha: ALPHA, rows: ROWS, classes: 4 });
      const art = await saveArtifacts(model);
      model.dispose();
      [topology, specs, data] = [art.modelTopology, art.weightSpecs!, new Uint8Array(tf.io.CompositeArrayBuffer.join(art.weightData!))];
    });

    it('bad JSON, graph models, missing topology', () => {
      const d = sub('json');
      const file = path.join(d, 'model.json');
      writeFileSync(file, '{"modelTopology": ');
      assert.throws(() => importTfjs(file), /model\.json: not valid JSON/);
      writeFileSync(file, JSON.stringify({ format: 'graph-model', modelTopology: { node: [] }, weightsManifest: [] }));
      assert.throws(() => importTfjs(file), /a TF\.js graph model; only layers models/);
      writeFileSync(file, JSON.stringify({ weightsManifest: [] }));
      assert.throws(() => importTfjs(file), /no modelTopology object/);
    });

    it('truncated and missing shards', () => {
      const file = writeModel(sub('trunc'), topology, specs, data, 2);
      const shard2 = path.join(path.dirname(file), 'group1-shard2of2.bin');
      truncateSync(shard2, statSync(shard2).size - 10);
      assert.throws(() => importTfjs(file), /weight shards truncated: .* needs bytes \d+-\d+ of group 0 \(group1-shard1of2\.bin, group1-shard2of2\.bin\), which hold \d+ bytes/);
      rmSync(shard2);
      assert.throws(() => importTfjs(file), /weight shard group1-shard2of2\.bin not found/);
    });

    it('missing layers, shape mismatches, non-MobileNetV2, padding, quantization metadata', async () => {
      const rename = specs.map((s) => (s.name.startsWith('block_7_project_BN/') ? { ...s, name: s.name.replace('block_7_project_BN', 'other_BN') } : s));
      assert.throws(() => importTfjs(writeModel(sub('missing'), topology, rename, data)), /1 layers missing:\n  block_7_project_BN$/);

      const file = writeModel(sub('ok'), topology, specs, data);
      assert.throws(() => importTfjs(file, { alpha: 0.5 }), /block_1_project kernel: expected \[1, 1, 48, 16\], got \[1, 1, 48, 8\]/);

      const dense = tfl.sequential({ layers: [tfl.layers.dense({ units: 2, inputShape: [3], name: 'dense_a' })] });
      const art = await saveArtifacts(dense);
      dense.dispose();
      const other = writeModel(sub('other'), art.modelTopology, art.weightSpecs!, new Uint8Array(tf.io.CompositeArrayBuffer.join(art.weightData!)));
      assert.throws(() => importTfjs(other), /not a Keras MobileNetV2: .*dense_a/);

      const sym = kerasMobileNetV2({ alpha: ALPHA, rows: ROWS, classes: 4, symmetricPad: true });
      const symArt = await saveArtifacts(sym);
      sym.dispose();
      assert.throws(() => importTfjs(writeModel(sub('sym'), symArt.modelTopology, specs, data)), /stride-2 layer block_1_depthwise uses padding 'valid' after block_1_pad \[\[1,1\],\[1,1\]\]/);

      const noScale = specs.map((s, i) => (i === 0 ? { ...s, quantization: { dtype: 'uint8' as const } } : s));
      assert.throws(() => importTfjs(writeModel(sub('noscale'), topology, noScale, data)), /Conv1\/kernel is uint8-quantized without numeric scale and min/);
    });

    it('shard paths leaving the model folder (.., absolute, symlinks) are refused before anything is read', () => {
      const d = sub('escape');
      mkdirSync(path.join(root, 'outside'));
      writeFileSync(path.join(root, 'outside', 'secret.bin'), data);
      const file = writeModel(d, topology, specs, data);
      const withPaths = (paths: string[]): string => {
        const json = JSON.parse(readFileSync(file, 'utf8'));
        json.weightsManifest[0].paths = paths;
        writeFileSync(file, JSON.stringify(json));
        return file;
      };
      assert.throws(() => importTfjs(withPaths(['../outside/secret.bin'])), /model\.json: weight shard '\.\.\/outside\/secret\.bin' is outside the model's folder/);
      assert.throws(() => importTfjs(withPaths(['/etc/passwd'])), /model\.json: weight shard '\/etc\/passwd' is outside the model's folder/);
      symlinkSync('/etc/passwd', path.join(d, 'link.bin'));
      assert.throws(() => importTfjs(withPaths(['link.bin'])), /model\.json: weight shard 'link\.bin' is outside the model's folder .*escape \(it resolves to \/etc\/passwd\)/);
    });

    it('a shard that is a FIFO or larger than the manifest declares is refused (no hang, no unbounded read)', async () => {
      const d = sub('fifo');
      const file = writeModel(d, topology, specs, data);
      rmSync(path.join(d, 'group1-shard1of1.bin'));
      execFileSync('mkfifo', [path.join(d, 'group1-shard1of1.bin')]);
      // In a child process: a reader that blocks on the FIFO must fail this test, not hang the suite.
      const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
      const t0 = performance.now();
      await assert.rejects(promisify(execFile)(process.execPath, [cli, 'import', 'tfjs', file, '--out', path.join(d, 'out.safetensors')], { timeout: 20_000 }),
        (e: { stderr: string; code: number | null; killed: boolean }) => {
          assert.equal(e.killed, false, `still reading the FIFO after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
          assert.equal(e.code, 1);
          assert.match(e.stderr, /group1-shard1of1\.bin: not a regular file \(a FIFO\)/);
          return true;
        });

      const big = writeModel(sub('big'), topology, specs, data);
      appendFileSync(path.join(path.dirname(big), 'group1-shard1of1.bin'), Buffer.alloc(1 << 20));
      assert.throws(() => importTfjs(big), new RegExp(`group1-shard1of1\\.bin: ${data.length + (1 << 20)} bytes, more than the ${data.length} the manifest's weights take`));
    });

    it("'same' padding on stride-2 depthwise convs is accepted (the same pads on even sizes)", async () => {
      const same = kerasMobileNetV2({ alpha: ALPHA, rows: ROWS, classes: 4, samePadding: true });
      const art = await saveArtifacts(same);
      same.dispose();
      assert.equal(importTfjs(writeModel(sub('same'), art.modelTopology, specs, data)).graph.config.numClasses, 4);
    });
  });
});
