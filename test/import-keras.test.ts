/**
 * `mnv2 import keras`: a Keras-layout .h5 weight file (written here with h5wasm from a tfjs-layers Keras
 * MobileNetV2 with seeded weights) imported and run on the native engine and on ONNX Runtime via our export;
 * the reference logits come from tfjs-layers running the Keras model itself (asymmetric 'same'/correct_pad
 * padding, BN eps 1e-3). Tolerance: max |ours - tfjs| <= 1e-4 * max |tfjs|.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, truncateSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import h5wasm from 'h5wasm/node';
import { createClassifier, type EngineName } from '../src/engine/classifier.js';
import { importKerasH5, parseKerasFileName } from '../src/io/keras.js';
import { permute } from '../src/io/keras-names.js';
import { readSafetensors, toFloat32, writeSafetensors } from '../src/io/safetensors.js';
import { loadWeights } from '../src/io/weights.js';
import { makeConfig } from '../src/model/config.js';
import { buildGraph } from '../src/model/mobilenetv2.js';
import { initWeights } from '../src/model/weights.js';
import { Rng } from '../src/util/rng.js';
import { maxAbs, maxAbsDiff, relL2 } from './helpers/fixtures.js';
import { NativeModel } from '../src/engine/native/model.js';
import { kerasMobileNetV2, randomizeWeights, tf, tfjsPredict, toNhwc } from './helpers/keras-model.js';
import { layerData, writeKerasH5, type LayerData } from './helpers/keras-h5.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ALPHA = 0.35;
const ROWS = 96;
const CLASSES = 5;
const BATCH = 2;
const TOL = 1e-4;
const FILE = `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_${ALPHA}_${ROWS}.h5`;

function randomInput(seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: BATCH * 3 * ROWS * ROWS }, () => rng.uniform() * 2 - 1);
}

async function runEngine(file: string, engine: EngineName, input: Float32Array): Promise<Float32Array> {
  const m = loadWeights(file);
  const clf = await createClassifier(m.graph, m.weights, engine, 1);
  try {
    return await clf.run(input, BATCH);
  } finally {
    await clf.release();
  }
}

function cli(...args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

describe('import keras (.h5)', () => {
  let dir: string;
  let layers: LayerData[];
  let h5: string;
  let input: Float32Array;
  let reference: Float32Array;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'mnv2-keras-'));
    const model = kerasMobileNetV2({ alpha: ALPHA, rows: ROWS, classes: CLASSES, headName: 'Logits' });
    randomizeWeights(model, 1);
    layers = layerData(model);
    h5 = path.join(dir, FILE);
    await writeKerasH5(h5, layers);
    input = randomInput(5);
    reference = tfjsPredict(model, toNhwc(input, BATCH, 3, ROWS, ROWS), BATCH, ROWS);
    model.dispose();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('parses keras.applications file names', () => {
    assert.deepEqual(parseKerasFileName('/x/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5'), { alpha: 1, resolution: 224, noTop: false });
    assert.deepEqual(parseKerasFileName('mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5'), { alpha: 0.35, resolution: 96, noTop: true });
    assert.equal(parseKerasFileName('weights.h5'), undefined);
  });

  it('permute: HWIO -> OIHW moves element (h, w, i, o) to (o, i, h, w)', () => {
    const shape = [2, 3, 4, 5];
    const data = Float32Array.from({ length: 120 }, (_, i) => i);
    const out = permute(data, shape, [3, 2, 0, 1]);
    for (const [h, w, i, o] of [[1, 2, 3, 4], [0, 1, 2, 3], [1, 0, 0, 2]] as const) {
      assert.equal(out[((o * 4 + i) * 2 + h) * 3 + w], data[((h * 3 + w) * 4 + i) * 5 + o]);
    }
  });

  it('CLI import: config, metadata; native engine and ORT match tfjs-layers', async (t) => {
    const out = path.join(dir, 'model.safetensors');
    const r = cli('import', 'keras', h5, '--out', out);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /α 0\.35 @ 96, 5 classes \(head Logits\)/);
    const m = loadWeights(out);
    const c = m.graph.config;
    assert.deepEqual([c.arch, c.alpha, c.resolution, c.numClasses, c.padding, c.bnEps, c.activation], ['imagenet', 0.35, 96, 5, 'keras', 1e-3, 'relu6']);
    assert.equal(m.metadata['mnv2.preprocess'], 'keras');
    // Stride-2 convs pad 0 before, 1 after, as Keras does.
    const stem = m.graph.nodes.find((n) => n.name === 'features.0.0');
    assert.deepEqual(stem?.op === 'conv' && stem.pads, [0, 0, 1, 1]);

    const scale = maxAbs(reference);
    assert.ok(scale > 0.1, `reference logits are not trivial (max ${scale})`);
    for (const engine of ['native', 'ort'] as const) {
      const logits = await runEngine(out, engine, input);
      const d = maxAbsDiff(logits, reference);
      t.diagnostic(`${engine}: max |diff| ${d.toExponential(2)}, max |logit| ${scale.toFixed(3)}`);
      assert.ok(d <= TOL * scale, `${engine}: max |diff| ${d} > ${TOL} * ${scale}`);
    }
    // The check can tell the paddings apart: PyTorch's symmetric padding on the same weights is far off.
    const sym = buildGraph(makeConfig('imagenet', { ...c, padding: 'symmetric' }));
    const clf = await createClassifier(sym, m.weights, 'native', 1);
    const d = maxAbsDiff(await clf.run(input, BATCH), reference);
    await clf.release();
    t.diagnostic(`symmetric padding instead: max |diff| ${d.toExponential(2)}`);
    assert.ok(d > 100 * TOL * scale, `symmetric padding differs by only ${d}`);
  });

  it('fine-tuning an imported model: training-mode loss and gradients (through the asymmetric padding) match tfjs', async (t) => {
    // Training-mode BN (batch statistics) and mean cross-entropy, as `mnv2 train --weights` runs them. The input
    // gradient passes backward through every conv (stride-2 ones padded 0 before / 1 after); the stem kernel's
    // gradient checks backward-weights on the asymmetric padding. With generic weights, ReLU6 inputs within fp32
    // rounding of 0 switch sides between two fp32 implementations and train-mode BN spreads each switch over its
    // channel (measured: 1.8e-2 relative L2 here). So, as in the PyTorch training fixture, the BNs that feed a
    // ReLU6 get gamma 0.09 and beta +-1: their outputs stay within ~0.3 of +-1, away from both kinks.
    const labels = [1, 3];
    const model = kerasMobileNetV2({ alpha: ALPHA, rows: ROWS, classes: CLASSES, headName: 'Logits' });
    randomizeWeights(model, 1);
    for (const l of model.layers) {
      if (l.getClassName() !== 'BatchNormalization' || l.name.endsWith('project_BN')) continue;
      const [gamma, , mean, variance] = l.getWeights();
      const c = gamma!.shape[0]!;
      l.setWeights([tf.fill([c], 0.09), tf.tensor1d(Array.from({ length: c }, (_, i) => (i % 2 ? -1 : 1))), mean!, variance!]);
    }
    const file = path.join(dir, 'kinkless.h5');
    await writeKerasH5(file, layerData(model));
    const x = tf.tensor(toNhwc(input, BATCH, 3, ROWS, ROWS), [BATCH, ROWS, ROWS, 3]);
    const onehot = tf.oneHot(tf.tensor1d(labels, 'int32'), CLASSES);
    const lossOf = (xin: tf.Tensor): tf.Scalar =>
      tf.losses.softmaxCrossEntropy(onehot, model.apply(xin, { training: true }) as tf.Tensor) as tf.Scalar;
    const stemVar = model.getLayer('Conv1').trainableWeights[0]!.read() as tf.Variable;
    const { value, grads } = tf.variableGrads(() => lossOf(x), [stemVar]);
    const refLoss = value.dataSync()[0]!;
    const refStem = grads[stemVar.name]!.dataSync() as Float32Array;
    const refInput = tf.grad(lossOf)(x).dataSync() as Float32Array;
    const kernelShape = stemVar.shape as [number, number, number, number];
    tf.dispose([x, onehot, value, ...Object.values(grads)]);
    model.dispose();

    const m = await importKerasH5(file, { resolution: ROWS });
    const native = new NativeModel(m.graph, m.weights, { threads: 1 });
    const r = native.trainStep(input, labels, BATCH, { inputGrad: true });
    assert.ok(Math.abs(r.loss - refLoss) <= 1e-4 * Math.abs(refLoss), `loss ${r.loss} vs tfjs ${refLoss}`);
    const eInput = relL2(toNhwc(native.inputGrad(BATCH), BATCH, 3, ROWS, ROWS), refInput);
    const eStem = relL2(native.grads.get('features.0.0.weight')!, permute(refStem, kernelShape, [3, 2, 0, 1]));
    t.diagnostic(`loss ${r.loss.toFixed(6)} vs ${refLoss.toFixed(6)}; input gradient rel L2 ${eInput.toExponential(2)}; stem kernel gradient ${eStem.toExponential(2)}`);
    assert.ok(eInput <= 1e-3, `input gradient relative L2 error ${eInput}`);
    assert.ok(eStem <= 1e-3, `stem kernel gradient relative L2 error ${eStem}`);
  });

  it('mnv2 infer runs the imported file unchanged (ORT)', () => {
    const model = path.join(dir, 'model.safetensors');
    const inFile = path.join(dir, 'input.safetensors');
    const outFile = path.join(dir, 'logits.safetensors');
    writeSafetensors(inFile, { input: { dtype: 'F32', shape: [BATCH, 3, ROWS, ROWS], data: input } });
    execFileSync(process.execPath, [CLI, 'infer', '--weights', model, '--input', inFile, '--output', outFile, '--engine', 'ort', '--threads', '1'], { stdio: 'pipe' });
    const t = readSafetensors(outFile).tensors.get('logits')!;
    assert.ok(maxAbsDiff(toFloat32(t, 'logits', outFile), reference) <= TOL * maxAbs(reference));
  });

  it('no top: requires --classes, keeps the backbone, seeds a fresh head', async () => {
    const noTop = path.join(dir, FILE.replace('.h5', '_no_top.h5'));
    await writeKerasH5(noTop, layers.filter((l) => l.name !== 'Logits'));
    await assert.rejects(importKerasH5(noTop), /has no classifier.*--classes N/);
    const full = await importKerasH5(h5);
    const m = await importKerasH5(noTop, { numClasses: 3, seed: 7 });
    assert.equal(m.head, 'initialized');
    assert.equal(m.graph.config.numClasses, 3);
    const fresh = initWeights(m.graph, 7);
    for (const [k, v] of m.weights) {
      const want = k.startsWith('classifier.') ? fresh.get(k)! : full.weights.get(k)!;
      assert.deepEqual(v, want, k);
    }
    await assert.rejects(importKerasH5(h5, { numClasses: 3 }), /has a 5-class head \(Logits\)/);
  });

  describe('errors', () => {
    const variant = async (name: string, edit: (l: LayerData[]) => LayerData[]): Promise<string> => {
      const file = path.join(dir, name);
      await writeKerasH5(file, edit(layers.map((l) => ({ ...l, weights: [...l.weights] }))));
      return file;
    };

    it('names missing layers', async () => {
      const file = await variant('missing.h5', (ls) => ls.filter((l) => l.name !== 'block_5_project_BN' && l.name !== 'Conv_1'));
      await assert.rejects(importKerasH5(file), (e: Error) => /2 layers missing/.test(e.message) && /block_5_project_BN/.test(e.message) && /Conv_1\b/.test(e.message));
    });

    it('names a mis-shaped layer with expected and got', async () => {
      const file = await variant('shape.h5', (ls) => {
        const l = ls.find((x) => x.name === 'block_3_expand')!;
        l.weights = [{ ...l.weights[0]!, shape: [1, 1, 8, 40], data: new Float32Array(8 * 40) }];
        return ls;
      });
      // α stays the one the other layers fit; the odd layer is named.
      await assert.rejects(importKerasH5(file), /α 0\.35 \(the closest Keras width; pass --alpha for another\) with 5 classes:\n  block_3_expand kernel: expected \[1, 1, 8, 48\], got \[1, 1, 8, 40\]$/);
      await assert.rejects(importKerasH5(h5, { alpha: 0.5 }), /α 0\.5 with 5 classes[\s\S]*block_1_project kernel: expected \[1, 1, 48, 16\], got \[1, 1, 48, 8\]/);
    });

    it('rejects non-MobileNetV2 Keras files, non-Keras HDF5, non-HDF5 and truncated files, without writing --out', async () => {
      const other = await variant('other.h5', () => [{ name: 'dense_1', weights: [{ name: 'dense_1/kernel:0', shape: [4, 2], data: new Float32Array(8) }] }]);
      await assert.rejects(importKerasH5(other), /not a Keras MobileNetV2.*dense_1/);

      await h5wasm.ready;
      const plain = path.join(dir, 'plain.h5');
      const f = new h5wasm.File(plain, 'w');
      f.create_dataset({ name: 'x', data: new Float32Array(4) });
      f.close();
      await assert.rejects(importKerasH5(plain), /plain\.h5: not a Keras weight file: no 'layer_names' attribute \(top-level entries: x\)/);

      const text = path.join(dir, 'text.h5');
      writeFileSync(text, 'hello, not HDF5');
      await assert.rejects(importKerasH5(text), /text\.h5: not an HDF5 file/);

      const cut = await variant('cut.h5', (ls) => ls);
      truncateSync(cut, Math.floor(statSync(cut).size / 2));
      await assert.rejects(importKerasH5(cut), /cut\.h5: truncated HDF5 file: \d+ bytes of \d+/);
      await assert.rejects(importKerasH5(path.join(dir, 'nope.h5')), /nope\.h5: no such file/);

      const out = path.join(dir, 'never.safetensors');
      const r = cli('import', 'keras', cut, '--out', out);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /^mnv2: .*cut\.h5: truncated HDF5 file/);
      assert.doesNotMatch(r.stderr, /HDF5-DIAG/);
      assert.equal(existsSync(out), false);
    });
  });
});
