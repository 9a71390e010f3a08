/**
 * `mnv2 import keras | tfjs` for keras.applications.MobileNet (V1): a tfjs-layers MobileNet with seeded weights
 * (test/helpers/keras-model.ts), written as a Keras .h5 weight file and as a TF.js model.json, imported into
 * the `mobilenetv1` model (conv1, conv_dw_N, conv_pw_N with their BNs; conv_preds into the linear classifier)
 * and run on the native engine and ONNX Runtime. Reference: tfjs-layers running the Keras model itself.
 * Tolerance: max |ours - tfjs| <= 1e-4 * max |tfjs|.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { importKerasH5, parseKerasFileName } from '../src/io/keras.js';
import { importTfjs } from '../src/io/tfjs.js';
import { loadModelFile } from '../src/io/weights.js';
import { mobilenetV1, type MobileNetV1Config } from '../src/model/mobilenetv1.js';
import { initWeights } from '../src/model/weights.js';
import { Rng } from '../src/util/rng.js';
import { assertEnginesMatch, classify } from './helpers/engines.js';
import { maxAbsDiff } from './helpers/fixtures.js';
import { layerData, writeKerasH5, type LayerData } from './helpers/keras-h5.js';
import { kerasMobileNetV1, randomizeWeights, saveArtifacts, tf, tfjsPredict, toNhwc } from './helpers/keras-model.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ALPHA = 0.25;
const ROWS = 128;
const CLASSES = 5;
const BATCH = 2;
const TOL = 1e-4;
const FILE = 'mobilenet_2_5_128_tf.h5';

describe('import keras / tfjs: MobileNet (V1)', () => {
  let dir: string;
  let layers: LayerData[];
  let h5: string;
  let input: Float32Array;
  let reference: Float32Array;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'mnv2-keras-v1-'));
    // Keras 2.2's stem (conv1_pad + 'valid'); the TF.js case below uses the later 'same'.
    const model = kerasMobileNetV1({ alpha: ALPHA, rows: ROWS, classes: CLASSES, stemPad: true });
    randomizeWeights(model, 4);
    layers = layerData(model);
    h5 = path.join(dir, FILE);
    await writeKerasH5(h5, layers);
    const rng = new Rng(6);
    input = Float32Array.from({ length: BATCH * 3 * ROWS * ROWS }, () => rng.uniform() * 2 - 1);
    reference = tfjsPredict(model, toNhwc(input, BATCH, 3, ROWS, ROWS), BATCH, ROWS);
    model.dispose();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('parses keras.applications MobileNet file names (α as 1_0, 7_5, 5_0, 2_5)', () => {
    assert.deepEqual(parseKerasFileName('/w/mobilenet_2_5_128_tf.h5'), { alpha: 0.25, resolution: 128, noTop: false });
    assert.deepEqual(parseKerasFileName('mobilenet_7_5_224_tf_no_top.h5'), { alpha: 0.75, resolution: 224, noTop: true });
    assert.deepEqual(parseKerasFileName('mobilenet_1_0_160_tf.h5'), { alpha: 1, resolution: 160, noTop: false });
    assert.equal(parseKerasFileName('mobilenet_224_tf.h5'), undefined);
  });

  it('CLI import of the .h5: mobilenetv1 config; native engine and ORT match tfjs-layers; symmetric padding does not', async (t) => {
    const out = path.join(dir, 'model.safetensors');
    const r = spawnSync(process.execPath, [CLI, 'import', 'keras', h5, '--out', out], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /MobileNetV1 α 0\.25 @ 128, 5 classes \(head conv_preds\)/);
    const m = loadModelFile(out);
    const c = m.graph.config as MobileNetV1Config;
    assert.deepEqual([c.variant, c.alpha, c.resolution, c.numClasses, c.padding, c.bnEps, c.activation], ['mobilenetv1', 0.25, 128, 5, 'keras', 1e-3, 'relu6']);
    assert.equal(m.metadata['mnv2.preprocess'], 'keras');
    const scale = await assertEnginesMatch(t, m, input, BATCH, reference, TOL);
    const sym = { graph: mobilenetV1('mobilenetv1', { ...c, padding: 'symmetric' }), weights: m.weights };
    const d = maxAbsDiff(await classify(sym, 'native', input, BATCH), reference);
    t.diagnostic(`symmetric padding instead: max |diff| ${d.toExponential(2)}`);
    assert.ok(d > 100 * TOL * scale, `symmetric padding differs by only ${d}`);
  });

  it('α from the weight shapes when the file name does not tell', async () => {
    const plain = path.join(dir, 'weights.h5');
    copyFileSync(h5, plain);
    const m = await importKerasH5(plain, { resolution: ROWS });
    assert.deepEqual([m.graph.config.family, m.graph.config.alpha, m.headLayer], ['mobilenetv1', 0.25, 'conv_preds']);
  });

  it('no top: requires --classes, keeps the backbone, seeds a fresh head', async () => {
    const noTop = path.join(dir, FILE.replace('.h5', '_no_top.h5'));
    await writeKerasH5(noTop, layers.filter((l) => l.name !== 'conv_preds'));
    await assert.rejects(importKerasH5(noTop), /has no classifier.*--classes N/);
    const full = await importKerasH5(h5);
    const m = await importKerasH5(noTop, { numClasses: 3, seed: 7 });
    assert.equal(m.head, 'initialized');
    const fresh = initWeights(m.graph, 7);
    for (const [k, v] of m.weights) assert.deepEqual(v, k.startsWith('classifier.') ? fresh.get(k)! : full.weights.get(k)!, k);
  });

  it('names missing and mis-shaped layers', async () => {
    const edit = async (name: string, f: (ls: LayerData[]) => LayerData[]): Promise<string> => {
      const file = path.join(dir, name);
      await writeKerasH5(file, f(layers.map((l) => ({ ...l, weights: [...l.weights] }))));
      return file;
    };
    const missing = await edit('missing.h5', (ls) => ls.filter((l) => l.name !== 'conv_pw_7_bn'));
    await assert.rejects(importKerasH5(missing), /not a complete Keras MobileNet, 1 layers missing:\n  conv_pw_7_bn$/);
    const shaped = await edit('shape.h5', (ls) => {
      const l = ls.find((x) => x.name === 'conv_pw_3')!;
      l.weights = [{ ...l.weights[0]!, shape: [1, 1, 32, 16], data: new Float32Array(32 * 16) }];
      return ls;
    });
    await assert.rejects(importKerasH5(shaped), /Keras MobileNet α 0\.25 \(the closest Keras width; pass --alpha for another\) with 5 classes:\n  conv_pw_3 kernel: expected \[1, 1, 32, 32\], got \[1, 1, 32, 16\]$/);
  });

  it('TF.js model.json: α and size from the topology, conv_preds head; native and ORT match tfjs; symmetric stride-2 padding rejected', async (t) => {
    const write = async (name: string, symmetricPad: boolean): Promise<{ file: string; ref: Float32Array }> => {
      const model = kerasMobileNetV1({ alpha: ALPHA, rows: ROWS, classes: CLASSES, symmetricPad });
      randomizeWeights(model, 5);
      const art = await saveArtifacts(model);
      const ref = tfjsPredict(model, toNhwc(input, BATCH, 3, ROWS, ROWS), BATCH, ROWS);
      model.dispose();
      const sub = mkdtempSync(path.join(dir, name));
      writeFileSync(path.join(sub, 'group1-shard1of1.bin'), new Uint8Array(tf.io.CompositeArrayBuffer.join(art.weightData!)));
      const file = path.join(sub, 'model.json');
      writeFileSync(file, JSON.stringify({ format: 'layers-model', modelTopology: art.modelTopology, weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: art.weightSpecs }] }));
      return { file, ref };
    };
    const { file, ref } = await write('tfjs-', false);
    const m = importTfjs(file);
    const c = m.graph.config;
    assert.deepEqual([c.family, c.alpha, c.resolution, c.numClasses, c.padding, m.headLayer], ['mobilenetv1', 0.25, 128, 5, 'keras', 'conv_preds']);
    await assertEnginesMatch(t, m, input, BATCH, ref, TOL);
    const bad = await write('sym-', true);
    assert.throws(() => importTfjs(bad.file), /stride-2 layer conv_dw_2 uses padding 'valid' after conv_pad_2 \[\[1,1\],\[1,1\]\]/);
  });
});
