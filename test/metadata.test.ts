/**
 * The model-family registry and the one model-file metadata schema, written and read the same way by
 * safetensors files and ONNX exports; old files (config without a family, ONNX with only the config) still load.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { archConfig, archNames, configFromJSON, resolveArch } from '../src/model/registry.js';
import { makeConfig } from '../src/model/config.js';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { initWeights } from '../src/model/weights.js';
import { CONFIG_KEY, SCHEMA_KEY, decodeModelInfo, encodeModelInfo } from '../src/io/metadata.js';
import { loadWeights, saveWeights } from '../src/io/weights.js';
import { exportOnnx, readOnnxInfo } from '../src/engine/onnx/export.js';
import { ortClassifier } from '../src/engine/classifier.js';
import { loadFashionMnist } from '../src/data/idx.js';
import { FASHION_MNIST_LABELS } from '../src/data/labels.js';
import { loadImageBuffer, preset } from '../src/data/preprocess.js';
import { DEFAULT_MODEL } from '../src/cli/model-commands.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

describe('model-family registry', () => {
  it('--arch spellings: the family name and its variants', () => {
    assert.deepEqual(archNames().slice(0, 3), ['mobilenetv2', 'imagenet', 'seed-cifar']);
    assert.equal(resolveArch('mobilenetv2').variant, 'imagenet');
    assert.equal(resolveArch('seed-cifar').family.name, 'mobilenetv2');
    assert.deepEqual(archConfig('seed-cifar', { numClasses: 7 }), makeConfig('seed-cifar', { numClasses: 7 }));
    assert.throws(() => resolveArch('resnet'), /unknown arch 'resnet' \(expected one of mobilenetv2, imagenet, seed-cifar/);
  });

  it('configs before the registry ({ arch } without family) read as mobilenetv2; other families are named', () => {
    const legacy = configFromJSON('{"arch":"imagenet","alpha":0.5,"numClasses":3}', 'old.safetensors');
    assert.deepEqual(legacy, makeConfig('imagenet', { alpha: 0.5, numClasses: 3 }));
    assert.equal(legacy.family, 'mobilenetv2');
    assert.throws(() => configFromJSON('{"family":"nope","resolution":32}', 'x.onnx'), /^Error: x\.onnx: unknown model family 'nope' \(known: mobilenetv2/);
    assert.throws(() => configFromJSON('{"arch":"vgg"}', 'x.onnx'), /x\.onnx: model config has unknown arch 'vgg'/);
  });
});

describe('model-file metadata', () => {
  const cfg = makeConfig('seed-cifar', { numClasses: 3 });
  const info = { config: cfg, preprocess: 'keras', classes: ['cat', 'dog', 'eel'], source: 'x.h5' };

  it('round trip; schema 0 files (config only) decode with no extras', () => {
    const meta = encodeModelInfo(info);
    assert.deepEqual(Object.keys(meta).sort(), ['mnv2.classes', 'mnv2.config', 'mnv2.family', 'mnv2.preprocess', 'mnv2.schema', 'mnv2.source']);
    assert.deepEqual(decodeModelInfo(meta, 'f'), { config: cfg, preprocess: 'keras', classes: ['cat', 'dog', 'eel'], source: 'x.h5', schema: 1 });
    assert.deepEqual(decodeModelInfo({ [CONFIG_KEY]: '{"arch":"seed-cifar","numClasses":3}' }, 'f'), { config: cfg, schema: 0 });
    assert.equal(decodeModelInfo({}, 'f'), undefined);
  });

  it('clear errors: a newer schema, a family that disagrees with the config, class names of the wrong count', () => {
    const meta = encodeModelInfo(info);
    assert.throws(() => decodeModelInfo({ ...meta, [SCHEMA_KEY]: '7' }, 'new.safetensors'), /new\.safetensors: unsupported mnv2\.schema '7' \(this version reads up to 2\)/);
    assert.throws(() => decodeModelInfo({ ...meta, 'mnv2.family': 'mobilenetv1' }, 'f'), /f: mnv2\.family 'mobilenetv1' disagrees with the config's family 'mobilenetv2'/);
    assert.throws(() => decodeModelInfo({ ...meta, 'mnv2.classes': '["a"]' }, 'f'), /f: mnv2\.classes has 1 names, the model has 3 classes/);
    assert.throws(() => decodeModelInfo({ ...meta, 'mnv2.classes': '{"a":1}' }, 'f'), /f: mnv2\.classes metadata must be a JSON array of strings/);
  });

  it('safetensors and ONNX carry the same entries', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mnv2-meta-'));
    try {
      const g = mobilenetV2('seed-cifar', { numClasses: 3 });
      const w = initWeights(g, 1);
      const file = path.join(dir, 'm.safetensors');
      saveWeights(file, g, w, new Map(), encodeModelInfo(info));
      const fromFile = loadWeights(file).info;
      const fromOnnx = readOnnxInfo(exportOnnx(g, w, { info }), 'm.onnx');
      assert.deepEqual(fromOnnx, fromFile);
      assert.deepEqual(fromFile, { config: g.config, preprocess: 'keras', classes: ['cat', 'dog', 'eel'], source: 'x.h5', schema: 1 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('an ONNX export of the bundled Fashion-MNIST model answers with Fashion-MNIST labels', () => {
  it('mnv2 export onnx, then mnv2 serve --onnx with no --preset/--labels: the labels and probabilities of the model', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mnv2-meta-'));
    try {
      const file = path.join(dir, 'fm.onnx');
      execFileSync(process.execPath, [CLI, 'export', 'onnx', '--out', file, '--weights', DEFAULT_MODEL], { stdio: 'pipe' });
      const bytes = readFileSync(file);
      const info = readOnnxInfo(bytes, file);
      assert.equal(info.preprocess, 'fashion-mnist');
      assert.equal(info.labels, 'fashion-mnist');
      assert.deepEqual(info.classes, FASHION_MNIST_LABELS);

      const ds = loadFashionMnist(undefined, 'test');
      const ref = await ortClassifier(bytes, 1);
      const child = spawn(process.execPath, [CLI, 'serve', '--onnx', file, '--port', '0', '--threads', '1', '--max-batch', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
      const exited = once(child, 'exit');
      try {
        const url = await new Promise<string>((resolve, reject) => {
          let out = '';
          child.stdout!.on('data', (d: Buffer) => {
            out += d.toString();
            const m = /listening on (http:\/\/\S+)/.exec(out);
            if (m) resolve(m[1]!);
          });
          void exited.then(() => reject(new Error('mnv2 serve exited before listening')));
        });
        let correct = 0;
        for (let i = 0; i < 8; i++) {
          const png = await sharp(Buffer.from(ds.images.subarray(i * 784, (i + 1) * 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer();
          const r = await fetch(`${url}/v1/classify`, { method: 'POST', body: new Uint8Array(png), headers: { 'content-type': 'image/png' } });
          const json = (await r.json()) as { top: { index: number; label: string; prob: number }[] };
          // The model's own preprocessing (fashion-mnist), not the seed-cifar default: same probabilities as ORT on it.
          const logits = await ref.run(await loadImageBuffer(png, preset('fashion-mnist')), 1);
          const best = logits.indexOf(Math.max(...logits));
          assert.equal(json.top[0]!.index, best);
          assert.equal(json.top[0]!.label, FASHION_MNIST_LABELS[best]);
          const probs = Array.from(logits, (v) => Math.exp(v - logits[best]!));
          assert.ok(Math.abs(json.top[0]!.prob - 1 / probs.reduce((a, b) => a + b, 0)) <= 1e-5);
          if (best === ds.labels[i]) correct++;
        }
        assert.ok(correct >= 7, `${correct}/8 test images right`);
      } finally {
        child.kill('SIGTERM');
        await exited;
        await ref.release();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
