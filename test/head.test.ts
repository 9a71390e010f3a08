/**
 * Classifier heads beyond one linear layer: a stack of Dense layers (activation, dropout) after the pool, as
 * TF.js/Keras transfer-learning models have (nsfwjs's MobileNetV2: 1280 -> 256 -> 128 -> 5). References:
 * PyTorch (tools/make-head-fixtures.py: torchvision's MobileNetV2 α 0.35 @ 96 with a 1280 -> 32 -> 16 -> 5
 * nn.Sequential head) for both engines and for a native training step, and tfjs-layers for the imports.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import type { HeadLayer, ModelConfig } from '../src/model/config.js';
import type { Graph } from '../src/model/graph.js';
import type { StateDict } from '../src/model/weights.js';
import { NativeModel } from '../src/engine/native/model.js';
import { exportOnnx, readOnnxInfo } from '../src/engine/onnx/export.js';
import { loadModelFile, saveWeights } from '../src/io/weights.js';
import { SCHEMA_KEY } from '../src/io/metadata.js';
import { importTfjs } from '../src/io/tfjs.js';
import { importKerasH5 } from '../src/io/keras.js';
import { Rng } from '../src/util/rng.js';
import { replaceClassifier } from '../src/train/run-state.js';
import { assertEnginesMatch, classify } from './helpers/engines.js';
import { get, loadFixture, maxAbsDiff, relL2 } from './helpers/fixtures.js';
import { layerData, writeKerasH5 } from './helpers/keras-h5.js';
import { kerasMobileNetV2, randomizeWeights, saveArtifacts, tf, tfjsPredict, toNhwc, type HiddenDense } from './helpers/keras-model.js';

const HEAD: HeadLayer[] = [{ units: 32, activation: 'relu', dropout: 0.3 }, { units: 16, activation: 'relu6', dropout: 0.3 }];

/** The fixture's model: the committed α 0.35 backbone and the PyTorch head. */
function torchModel(dropouts: boolean): { graph: Graph<ModelConfig>; weights: StateDict; io: Map<string, Float32Array> } {
  const backbone = loadFixture('tv-0.35-96.weights.safetensors').tensors;
  const io = loadFixture('tv-0.35-96-head.safetensors').tensors;
  const head = dropouts ? HEAD : HEAD.map((h) => ({ ...h, dropout: 0 }));
  const graph = mobilenetV2('imagenet', { alpha: 0.35, resolution: 96, numClasses: 5, dropout: dropouts ? 0.2 : 0, head });
  const weights: StateDict = new Map();
  for (const t of [...graph.params, ...graph.buffers]) weights.set(t.name, get(t.name.startsWith('classifier.') ? io : backbone, t.name));
  return { graph, weights, io };
}

const softmaxRows = (logits: Float32Array, k: number): Float32Array =>
  Float32Array.from(logits, (_, i) => {
    const row = logits.subarray(i - (i % k), i - (i % k) + k);
    const m = Math.max(...row);
    return Math.exp(logits[i]! - m) / row.reduce((s, v) => s + Math.exp(v - m), 0);
  });

describe('multi-layer classifier heads', () => {
  let root: string;
  before(() => {
    root = mkdtempSync(path.join(tmpdir(), 'mnv2-head-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it("the graph has torchvision's Sequential names (classifier.1, .4, .7) and PyTorch's logits on both engines", async (t) => {
    const m = torchModel(true);
    assert.deepEqual(m.graph.params.filter((p) => p.name.startsWith('classifier.')).map((p) => `${p.name} ${p.shape.join('x')}`), [
      'classifier.1.weight 32x1280', 'classifier.1.bias 32', 'classifier.4.weight 16x32', 'classifier.4.bias 16', 'classifier.7.weight 5x16', 'classifier.7.bias 5',
    ]);
    assert.deepEqual(m.graph.nodes.filter((n) => n.name.startsWith('classifier.')).map((n) => `${n.op} ${n.name}`), [
      'dropout classifier.0', 'linear classifier.1', 'act classifier.2', 'dropout classifier.3', 'linear classifier.4', 'act classifier.5', 'dropout classifier.6', 'linear classifier.7',
    ]);
    await assertEnginesMatch(t, m, get(m.io, 'eval.input'), 2, get(m.io, 'eval.logits'), 1e-4);
  });

  it('a native training step gives PyTorch autograd\'s loss and gradients through the head', (t) => {
    const m = torchModel(false);
    const nm = new NativeModel(m.graph, m.weights, { threads: 1 });
    const labels = Array.from(get(m.io, 'train.labels'));
    const { loss } = nm.trainStep(get(m.io, 'eval.input'), labels, 2, { rng: new Rng(0) });
    assert.ok(Math.abs(loss - get(m.io, 'train.loss')[0]!) < 1e-5, `loss ${loss} vs PyTorch ${get(m.io, 'train.loss')[0]}`);
    for (const name of ['classifier.1.weight', 'classifier.1.bias', 'classifier.4.weight', 'classifier.4.bias', 'classifier.7.weight', 'classifier.7.bias', 'features.18.1.weight', 'features.18.1.bias']) {
      const e = relL2(nm.grads.get(name)!, get(m.io, `grad.${name}`));
      t.diagnostic(`${name}: relative L2 ${e.toExponential(2)}`);
      assert.ok(e < 1e-3, `${name}: relative L2 ${e}`);
    }
  });

  it('--replace-classifier on a multi-layer head re-initializes the last linear only, keeping the hidden layers', () => {
    const m = torchModel(true);
    const r = replaceClassifier(m.graph, m.weights, 3, 0);
    assert.deepEqual([r.graph.config.numClasses, (r.graph.config as ModelConfig).head], [3, HEAD]);
    for (const k of ['classifier.1.weight', 'classifier.4.bias', 'features.18.1.weight']) assert.equal(r.weights.get(k), m.weights.get(k), k);
    assert.equal(r.weights.get('classifier.7.weight')!.length, 3 * 16);
  });

  it('the head travels in the metadata (schema 2; single-linear files stay schema 1) of model files and ONNX exports', () => {
    const m = torchModel(true);
    const file = path.join(root, 'head.safetensors');
    saveWeights(file, m.graph, m.weights);
    const back = loadModelFile(file);
    assert.deepEqual((back.graph.config as ModelConfig).head, HEAD);
    assert.equal(back.metadata[SCHEMA_KEY], '2');
    assert.deepEqual((readOnnxInfo(exportOnnx(m.graph, m.weights), 'x.onnx').config as ModelConfig).head, HEAD);
    const plain = mobilenetV2('imagenet', { alpha: 0.35, resolution: 96, numClasses: 5 });
    saveWeights(file, plain, new Map([...m.weights].filter(([k]) => !k.startsWith('classifier.')).concat(plain.params.filter((p) => p.name.startsWith('classifier.')).map((p) => [p.name, new Float32Array(p.shape.reduce((a, b) => a * b, 1))]))));
    assert.equal(loadModelFile(file).metadata[SCHEMA_KEY], '1');
    assert.throws(() => mobilenetV2('imagenet', { head: [{ units: 8, activation: 'tanh' as 'relu' }] }), /head\[0\]\.activation must be one of relu, relu6, sigmoid, linear, got tanh/);
    assert.throws(() => mobilenetV2('imagenet', { head: [{ units: 0, activation: 'relu' }] }), /head\[0\]\.units must be a positive integer, got 0/);
  });

  describe('import from TF.js and Keras', () => {
    const ROWS = 96;
    let input: Float32Array;
    let nhwc: Float32Array;
    before(() => {
      const rng = new Rng(5);
      input = Float32Array.from({ length: 2 * 3 * ROWS * ROWS }, () => rng.uniform() * 2 - 1);
      nhwc = toNhwc(input, 2, 3, ROWS, ROWS);
    });

    /** A tfjs-layers MobileNetV2 with a Dense stack, seeded, as its model.json + shard, with tfjs's outputs. */
    async function tfjsModel(dir: string, hidden: HiddenDense[], finalActivation: 'linear' | 'softmax' = 'linear') {
      const model = kerasMobileNetV2({ alpha: 0.35, rows: ROWS, classes: 5, nested: true, hidden, finalActivation });
      randomizeWeights(model, 7);
      const art = await saveArtifacts(model);
      mkdirSync(dir);
      writeFileSync(path.join(dir, 'w.bin'), new Uint8Array(tf.io.CompositeArrayBuffer.join(art.weightData!)));
      const file = path.join(dir, 'model.json');
      writeFileSync(file, JSON.stringify({ format: 'layers-model', modelTopology: art.modelTopology, weightsManifest: [{ paths: ['w.bin'], weights: art.weightSpecs }] }));
      const reference = tfjsPredict(model, nhwc, 2, ROWS);
      return { model, file, reference, topology: art.modelTopology };
    }

    it('model.json with Dense(relu) + Dropout, Dense + ReLU layer + Dropout, Dense: native and ORT match tfjs-layers', async (t) => {
      const { model, file, reference } = await tfjsModel(path.join(root, 'tfjs'), [
        { units: 32, activation: 'relu', dropout: 0.5 },
        { units: 16, activation: 'relu6', dropout: 0.2, activationLayer: true },
      ]);
      model.dispose();
      const m = importTfjs(file);
      const c = m.graph.config as ModelConfig;
      assert.deepEqual([c.numClasses, c.dropout, c.head], [5, 0.25, [{ units: 32, activation: 'relu', dropout: 0.5 }, { units: 16, activation: 'relu6', dropout: 0.2 }]]);
      await assertEnginesMatch(t, m, input, 2, reference, 1e-4);
    });

    it('a softmax classifier (nsfwjs style) reads as logits: softmax of both engines = tfjs probabilities', async (t) => {
      const { model, file, reference } = await tfjsModel(path.join(root, 'softmax'), [{ units: 24, activation: 'relu', dropout: 0.1 }, { units: 12, activation: 'relu' }], 'softmax');
      model.dispose();
      const m = importTfjs(file);
      for (const engine of ['native', 'ort'] as const) {
        const d = maxAbsDiff(softmaxRows(await classify(m, engine, input, 2), 5), reference);
        t.diagnostic(`${engine}: max |probability diff| ${d.toExponential(2)}`);
        assert.ok(d < 1e-5, `${engine}: ${d}`);
      }
    });

    it('a whole-model .h5 (model_config) gives the same head; without a topology or with tanh the import says why', async (t) => {
      const hidden: HiddenDense[] = [{ units: 32, activation: 'sigmoid', dropout: 0.5 }, { units: 16, activation: 'relu' }];
      const { model, reference, topology } = await tfjsModel(path.join(root, 'h5'), hidden);
      const layers = layerData(model);
      const h5 = path.join(root, 'h5', 'model.h5');
      await writeKerasH5(h5, layers, JSON.stringify(topology));
      const m = await importKerasH5(h5);
      assert.deepEqual((m.graph.config as ModelConfig).head, [{ units: 32, activation: 'sigmoid', dropout: 0.5 }, { units: 16, activation: 'relu', dropout: 0 }]);
      await assertEnginesMatch(t, m, input, 2, reference, 1e-4);

      const weightsOnly = path.join(root, 'h5', 'weights.h5');
      await writeKerasH5(weightsOnly, layers);
      await assert.rejects(importKerasH5(weightsOnly), /weights\.h5: more than one classifier layer \(.*\); without a model topology \(a model\.json, or an \.h5 saved with its model\) their order and activations are unknown/);
      model.dispose();

      const tanh = await tfjsModel(path.join(root, 'tanh'), [{ units: 8, activation: 'tanh' }]);
      tanh.model.dispose();
      assert.throws(() => importTfjs(tanh.file), /model\.json: layer dense_Dense\d+ has activation 'tanh'; a head's Dense layers may use linear, relu, relu6, sigmoid, softmax/);
    });
  });
});
