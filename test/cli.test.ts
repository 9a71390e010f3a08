/** The CLI end to end: summary, export, infer on both engines, predict, bench, and its errors. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { copyFileSync, linkSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { readSafetensors, toFloat32, writeSafetensors } from '../src/io/safetensors.js';
import { loadWeights, saveWeights } from '../src/io/weights.js';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { initWeights } from '../src/model/weights.js';
import { fixturePath, get, loadFixture, maxAbs, maxAbsDiff } from './helpers/fixtures.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const mnv2 = (...args: string[]) => run(process.execPath, [CLI, ...args], { maxBuffer: 1 << 24 });
const tmp = mkdtempSync(path.join(os.tmpdir(), 'mnv2-cli-'));

describe('mnv2 CLI', () => {
  it('summary --json totals', async () => {
    const { stdout } = await mnv2('summary', '--json');
    assert.deepEqual(JSON.parse(stdout).totals, { params: 3_504_872, macs: 300_774_272 });
    const seed = JSON.parse((await mnv2('summary', '--arch', 'seed-cifar', '--json')).stdout);
    assert.deepEqual(seed.totals, { params: 2_296_922, macs: 91_154_944 });
    const small = JSON.parse((await mnv2('summary', '--alpha', '0.35', '--resolution', '96', '--classes', '10', '--json')).stdout);
    assert.equal(small.config.numClasses, 10);
    assert.equal(small.rows.at(-1).output[0], 10);
  });

  it('summary runs in 2 GB of address space (h5wasm, which reserves more, is loaded only for .h5 imports)', async () => {
    const { stdout } = await run('/bin/sh', ['-c', `ulimit -v 2000000 && exec "${process.execPath}" "${CLI}" summary --json`]);
    assert.deepEqual(JSON.parse(stdout).totals, { params: 3_504_872, macs: 300_774_272 });
  });

  it('infer: a PyTorch state dict (no metadata) on both engines matches the PyTorch logits', async () => {
    const io = loadFixture('seed-cifar.io.safetensors').tensors;
    const input = path.join(tmp, 'input.safetensors');
    writeSafetensors(input, { input: { dtype: 'F32', shape: [4, 3, 32, 32], data: get(io, 'eval.input') } });
    const ref = get(io, 'eval.logits');
    for (const engine of ['native', 'ort']) {
      const out = path.join(tmp, `logits-${engine}.safetensors`);
      await mnv2('infer', '--weights', fixturePath('seed-cifar.weights.safetensors'), '--input', input, '--output', out, '--engine', engine);
      const t = readSafetensors(out).tensors.get('logits')!;
      assert.deepEqual(t.shape, [4, 10]);
      const logits = toFloat32(t, 'logits', out);
      assert.ok(maxAbsDiff(logits, ref) <= 1e-4 * maxAbs(ref), `${engine}: ${maxAbsDiff(logits, ref)}`);
    }
  });

  it('export onnx writes a model whose config travels in its metadata; checkpoints rebuild from the file alone', async () => {
    const g = mobilenetV2('imagenet', { alpha: 0.5, resolution: 64, numClasses: 7 });
    const w = path.join(tmp, 'own.safetensors');
    saveWeights(w, g, initWeights(g, 4));
    const loaded = loadWeights(w);
    assert.deepEqual(loaded.graph.config, g.config);
    const onnx = path.join(tmp, 'own.onnx');
    await mnv2('export', 'onnx', '--weights', w, '--out', onnx);
    assert.ok(readFileSync(onnx).includes(Buffer.from('mnv2.config')));
  });

  it('predict prints top-k with labels for images', async () => {
    const g = mobilenetV2('seed-cifar');
    const w = path.join(tmp, 'seed.safetensors');
    saveWeights(w, g, initWeights(g, 1), new Map(), { 'mnv2.preprocess': 'fashion-mnist', 'mnv2.labels': 'fashion-mnist' });
    const img = path.join(tmp, 'shirt.png');
    await sharp({ create: { width: 40, height: 50, channels: 3, background: { r: 200, g: 200, b: 200 } } }).png().toFile(img);
    const { stdout } = await mnv2('predict', '--weights', w, '--top', '3', '--json', img);
    const res = JSON.parse(stdout);
    assert.equal(res.length, 1);
    assert.equal(res[0].top.length, 3);
    const probs = res[0].top.map((t: { prob: number }) => t.prob);
    assert.ok(probs[0] >= probs[1] && probs[1] >= probs[2]);
    assert.ok(res[0].top.every((t: { label: string }) => ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'].includes(t.label)));
  });

  it('bench --json prints one line with img_per_s', async () => {
    const { stdout } = await mnv2('bench', '--workload', 'infer-seed', '--batch', '2', '--steps', '1', '--warmup', '0', '--json');
    const r = JSON.parse(stdout);
    assert.equal(r.workload, 'infer-seed');
    assert.ok(r.img_per_s > 0);
  });

  it('bench --workload train-224 trains torchvision\'s α 1.0 @ 224 (its dropout drawn per step) and runs BN + ReLU6 in the addon\'s kernel', async () => {
    const { stdout } = await mnv2('bench', '--workload', 'train-224', '--batch', '2', '--steps', '1', '--warmup', '0', '--json');
    const r = JSON.parse(stdout);
    assert.deepEqual([r.workload, r.batch, r.model], ['train-224', 2, 'MobileNetV2 imagenet, alpha 1, 224x224x3, 1000 classes, relu6']);
    assert.ok(r.img_per_s > 0);
    assert.equal(r.implementations['mnv2:bn_clip'], 70, '35 BN → ReLU6, forward and backward');
  });

  it('bad input: clear errors naming the file, non-zero exit', async () => {
    const garbage = path.join(tmp, 'garbage.safetensors');
    writeFileSync(garbage, 'not a safetensors file at all');
    const cases: [string[], RegExp][] = [
      [['infer', '--weights', garbage, '--input', garbage, '--output', path.join(tmp, 'x.safetensors')], /garbage\.safetensors: header length/],
      [['predict', '--weights', fixturePath('seed-cifar.weights.safetensors'), path.join(tmp, 'missing.jpg')], /could not read image '.*missing\.jpg'/],
      [['predict', '--weights', path.join(tmp, 'nope.safetensors'), 'a.jpg'], /nope\.safetensors: no such file/],
      [['summary', '--resolution', '100'], /multiple of 32/],
      // Fine-tuning keeps the file's architecture: an ablation flag for another one is refused, not ignored.
      [['train', '--weights', 'models/fashion-mnist/model.safetensors', '--activation', 'relu6', '--out', path.join(tmp, 'never-run')],
        /model\.safetensors: was trained with activation relu, but --activation asks for relu6: fine-tuning keeps the weights' architecture/],
      // A resumed run keeps its checkpoint's recipe: flags that would change it are refused, not ignored.
      [['train', '--resume', path.join(tmp, 'some-run'), '--lr', '0.1', '--no-decay-bn-bias', '--epochs', '9'],
        /--lr, --no-decay-bn-bias: --resume continues the checkpoint's recipe; only --epochs, --precise-bn and --freeze-bn change it/],
    ];
    for (const [args, re] of cases) {
      await assert.rejects(mnv2(...args), (e: { stderr: string; code: number }) => {
        assert.match(e.stderr, re);
        assert.equal(e.code, 1);
        return true;
      });
    }
  });

  it('numeric flags out of range are refused up front, naming the flag, the range and the value', async () => {
    const w = fixturePath('seed-cifar.weights.safetensors');
    const out = path.join(tmp, 'never.onnx');
    const cases: [string[], string][] = [
      [['predict', '--top', '0', 'a.png'], "--top expects an integer in [1, 100000], got '0'"],
      [['predict', '--top=-1', 'a.png'], "--top expects an integer in [1, 100000], got '-1'"],
      [['eval', '--weights', w, '--dataset', 'fashion-mnist', '--limit=-1'], "--limit expects an integer in [0, 9007199254740991], got '-1'"],
      [['train', '--stop-after=-1'], "--stop-after expects an integer in [1, 9007199254740991], got '-1'"],
      [['train', '--save-every=-1'], "--save-every expects an integer in [1, 9007199254740991], got '-1'"],
      [['train', '--batch', '1e9'], "--batch expects an integer in [1, 4096], got '1e9'"],
      [['train', '--eval-batch', '0'], "--eval-batch expects an integer in [1, 4096], got '0'"],
      [['train', '--lr', '0'], "--lr expects a number > 0 and <= 1000000, got '0'"],
      [['train', '--epochs', '2.5'], "--epochs expects an integer in [1, 100000], got '2.5'"],
      [['export', 'onnx', '--seed=-1', '--out', out], "--seed expects an integer in [0, 4294967295], got '-1'"],
      [['summary', '--alpha', '0'], "--alpha expects a number > 0 and <= 10, got '0'"],
      [['summary', '--classes', 'many'], "--classes expects an integer in [1, 1000000], got 'many'"],
      [['infer', '--weights', w, '--input', w, '--output', out, '--threads', '0'], "--threads expects an integer in [1, 1024], got '0'"],
      [['serve', '--port', '70000'], "--port expects an integer in [0, 65535], got '70000'"],
      [['serve', '--shutdown-grace=-1'], "--shutdown-grace expects a number in [0, 3600], got '-1'"],
      [['bench', '--workload', 'infer-seed', '--steps', '0'], "--steps expects an integer in [1, 100000], got '0'"],
      [['quantize', '--out', out, '--percentile', '0'], "--percentile expects a number > 50 and <= 100, got '0'"],
      [['import', 'tfjs', 'model.json', '--out', out, '--resolution', '-32'], "--resolution expects an integer in [1, 4096], got '-32'"],
    ];
    for (const [args, msg] of cases) {
      const t0 = performance.now();
      await assert.rejects(mnv2(...args), (e: { stderr: string; code: number }) => {
        assert.ok(e.stderr.includes(msg), `mnv2 ${args.join(' ')}: ${e.stderr}`);
        assert.equal(e.code, 1);
        return true;
      });
      // Up front: no dataset is opened, no model built (an epoch would take minutes).
      assert.ok(performance.now() - t0 < 5000, `mnv2 ${args.join(' ')} took ${(performance.now() - t0).toFixed(0)} ms`);
    }
  });

  it('an output that is an input (same path, a symlink, a hard link) is refused and the input left as it was', async () => {
    const w = path.join(tmp, 'precious.safetensors');
    copyFileSync(fixturePath('seed-cifar.weights.safetensors'), w);
    const link = path.join(tmp, 'precious-link.safetensors');
    symlinkSync(w, link);
    const hard = path.join(tmp, 'precious-hard.safetensors');
    linkSync(w, hard);
    const json = path.join(tmp, 'model.json');
    writeFileSync(json, '{}');
    const before = readFileSync(w);
    const cases: [string[], RegExp][] = [
      [['export', 'onnx', '--weights', w, '--out', w], /--out .*precious\.safetensors is the same file as --weights .*precious\.safetensors: refusing to overwrite an input/],
      [['export', 'onnx', '--weights', w, '--out', link], /--out .*precious-link\.safetensors is the same file as --weights/],
      [['infer', '--weights', w, '--input', w, '--output', hard], /--output .*precious-hard\.safetensors is the same file as --input/],
      [['quantize', '--weights', w, '--out', path.join(tmp, '.', 'precious.safetensors')], /--out .* is the same file as --weights/],
      [['eval', '--weights', w, '--dataset', 'fashion-mnist', '--confusion', w], /--confusion .* is the same file as --weights/],
      [['import', 'tfjs', json, '--out', json], /--out .*model\.json is the same file as the imported file/],
    ];
    for (const [args, re] of cases) {
      await assert.rejects(mnv2(...args), (e: { stderr: string; code: number }) => {
        assert.match(e.stderr, re, `mnv2 ${args.join(' ')}`);
        assert.equal(e.code, 1);
        return true;
      });
    }
    assert.ok(readFileSync(w).equals(before), 'the input is unchanged');
    assert.equal(readFileSync(json, 'utf8'), '{}');

    // A folder holding a run's model files (the bundled model's folder is one) needs --resume or --force.
    const run = path.join(tmp, 'old-run');
    mkdirSync(run);
    copyFileSync(w, path.join(run, 'model.safetensors'));
    await assert.rejects(mnv2('train', '--out', run, '--epochs', '1'), (e: { stderr: string; code: number }) => {
      assert.match(e.stderr, /old-run already holds a run \(model\.safetensors\); resume it with --resume .*old-run, replace it with --force, or choose another --out/);
      assert.equal(e.code, 1);
      return true;
    });
    assert.ok(readFileSync(path.join(run, 'model.safetensors')).equals(before));
  });

  it('loading a state dict with a missing or mis-shaped tensor names it', () => {
    const src = readSafetensors(fixturePath('seed-cifar.weights.safetensors'));
    const tensors = new Map([...src.tensors].filter(([k]) => k !== 'layers.3.bn2.running_var').map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: toFloat32(t, k, 'x') }]));
    const f = path.join(tmp, 'broken.safetensors');
    const conv = tensors.get('layers.5.conv1.weight')!;
    tensors.set('layers.5.conv1.weight', { ...conv, shape: [conv.shape[0]! / 2, conv.shape[1]! * 2, 1, 1] });
    writeSafetensors(f, tensors);
    assert.throws(() => loadWeights(f), (e: Error) => /missing layers\.3\.bn2\.running_var/.test(e.message) && /broken\.safetensors/.test(e.message));
    tensors.set('layers.3.bn2.running_var', { dtype: 'F32', shape: [144], data: new Float32Array(144) });
    writeSafetensors(f, tensors);
    assert.throws(() => loadWeights(f), /layers\.5\.conv1\.weight has shape \[96, 64, 1, 1\], the model expects \[192, 32, 1, 1\]/);
  });
});
