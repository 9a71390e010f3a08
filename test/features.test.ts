/**
 * Feature extractors, like Keras's `MobileNetV2(include_top=False, pooling=...)`: `load({ includeTop: false,
 * pooling })` on any weights and on Keras `_no_top` files. References: PyTorch (tools/make-head-fixtures.py:
 * torchvision's `features` of the committed α 0.35 @ 96 model, its mean and torch.amax over H, W) and tfjs-layers
 * running a Keras no-top model.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { load } from '../src/api/load.js';
import { NativeModel } from '../src/engine/native/model.js';
import { featureGraph, type Pooling } from '../src/model/features.js';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { initWeights } from '../src/model/weights.js';
import { Rng } from '../src/util/rng.js';
import { fixturePath, get, loadFixture, maxAbs, maxAbsDiff } from './helpers/fixtures.js';
import { layerData, writeKerasH5 } from './helpers/keras-h5.js';
import { kerasMobileNetV2, randomizeWeights, tf, toNhwc } from './helpers/keras-model.js';

const TOL = 1e-4;

describe('feature extractors (includeTop: false)', () => {
  let root: string;
  before(() => {
    root = mkdtempSync(path.join(tmpdir(), 'mnv2-features-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it("pooling 'avg' | 'max' | 'none' on both engines = PyTorch's features (mean, torch.amax over H, W, the map)", async (t) => {
    const input = get(loadFixture('tv-0.35-96.io.safetensors').tensors, 'eval.input');
    const ref = loadFixture('tv-0.35-96-features.safetensors').tensors;
    for (const [pooling, key, shape] of [['avg', 'avg', [1280]], ['max', 'max', [1280]], ['none', 'map', [1280, 3, 3]]] as const) {
      const want = get(ref, key);
      for (const engine of ['native', 'ort'] as const) {
        const m = await load({ weights: fixturePath('tv-0.35-96.weights.safetensors'), resolution: 96, includeTop: false, pooling, engine, threads: 1 });
        assert.deepEqual([m.embeddingShape, m.embeddingSize, m.labels], [shape, shape.reduce((a, b) => a * b, 1), undefined]);
        const { features } = await m.forward(input, 2);
        const d = maxAbsDiff(features, want);
        t.diagnostic(`${pooling} ${engine}: max |diff| ${d.toExponential(2)}, max |feature| ${maxAbs(want).toFixed(3)}`);
        assert.ok(d <= TOL * maxAbs(want), `${pooling} ${engine}: ${d}`);
        await assert.rejects(m.classify({ data: new Uint8Array(96 * 96 * 3), width: 96, height: 96 }), /classify: .*tv-0\.35-96\.weights\.safetensors was loaded as a feature extractor \(includeTop: false\), which has no classifier; use embed\(\)/);
        await m.dispose();
      }
    }
    // Max and mean differ on these maps (by 0.063) far beyond the tolerance, so 'max' could not pass as an average pool.
    assert.ok(maxAbsDiff(get(ref, 'max'), get(ref, 'avg')) > 100 * TOL * maxAbs(get(ref, 'max')));
  });

  it('embed() of an image is the pooled vector; pooling without includeTop: false and unknown poolings are refused', async () => {
    const weights = fixturePath('tv-0.35-96.weights.safetensors');
    const image = { data: Uint8Array.from({ length: 96 * 96 * 3 }, (_, i) => (i * 37) % 256), width: 96, height: 96 };
    const full = await load({ weights, resolution: 96, engine: 'ort', threads: 1 });
    const avg = await load({ weights, resolution: 96, includeTop: false, engine: 'ort', threads: 1 });
    assert.deepEqual(await avg.embed(image), await full.embed(image), "the default pooling 'avg' embeds as the classifier's own features");
    await Promise.all([full.dispose(), avg.dispose()]);
    await assert.rejects(load({ weights, resolution: 96, pooling: 'max' }), /load: pooling applies to feature extractors only \(includeTop: false\)/);
    await assert.rejects(load({ weights, resolution: 96, includeTop: false, pooling: 'sum' as Pooling }), /pooling must be avg, max, none, got 'sum'/);
  });

  it('the native engine refuses to train through a global max pool, naming it', () => {
    const g = featureGraph(mobilenetV2('imagenet', { alpha: 0.35, resolution: 96, numClasses: 2 }), 'max');
    const nm = new NativeModel(g, initWeights(g, 0), { threads: 1 });
    assert.throws(() => nm.trainStep(new Float32Array(3 * 96 * 96), [0], 1, { rng: new Rng(0) }), /native training: the native engine does not run maxpool nodes yet \(pool\)/);
  });

  it('a Keras _no_top .h5 (a path, or a catalogue name from the cache) = tfjs-layers with global max pooling', async (t) => {
    const model = kerasMobileNetV2({ alpha: 0.35, rows: 96, classes: 0 });
    randomizeWeights(model, 11);
    const rng = new Rng(12);
    const input = Float32Array.from({ length: 2 * 3 * 96 * 96 }, () => rng.uniform() * 2 - 1);
    const map = tf.tidy(() => tf.max(model.predict(tf.tensor(toNhwc(input, 2, 3, 96, 96), [2, 96, 96, 3])) as tf.Tensor, [1, 2]).dataSync() as Float32Array);
    const file = path.join(root, 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5');
    await writeKerasH5(file, layerData(model));
    model.dispose();

    const cache = path.join(root, 'cache');
    mkdirSync(path.join(cache, 'downloads'), { recursive: true });
    copyFileSync(file, path.join(cache, 'downloads', path.basename(file)));
    const saved = process.env['MNV2_CACHE'];
    process.env['MNV2_CACHE'] = cache;
    try {
      for (const weights of [file, 'keras/mobilenet_v2_0.35_96_no_top']) {
        for (const engine of ['native', 'ort'] as const) {
          const m = await load({ weights, includeTop: false, pooling: 'max', engine, threads: 1 });
          assert.equal(m.preprocess.name, 'keras');
          const d = maxAbsDiff((await m.forward(input, 2)).features, map);
          t.diagnostic(`${weights} ${engine}: max |diff| ${d.toExponential(2)}, max |feature| ${maxAbs(map).toFixed(3)}`);
          assert.ok(d <= TOL * maxAbs(map), `${weights} ${engine}: ${d}`);
          await m.dispose();
        }
      }
    } finally {
      if (saved === undefined) delete process.env['MNV2_CACHE'];
      else process.env['MNV2_CACHE'] = saved;
    }
    await assert.rejects(load({ weights: 'keras/mobilenet_v2_0.35_96_no_top' }), /has no classifier/);
  });
});
