/**
 * The training loop on a tiny configuration (the ImageNet architecture at alpha 0.35, 32×32, 10 classes) and a
 * small synthetic Fashion-MNIST-format dataset written to a temp folder (no network, no system dataset):
 * loss decreases (also for MobileNetV1's 32x32 variant); an interrupted-and-resumed run ends bitwise equal to an uninterrupted one; `eval --json`;
 * `plot` writes a valid SVG and PNG.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import sharp from 'sharp';
import { train } from '../src/train/loop.js';
import { resolvePreset, type TrainRecipe } from '../src/train/presets.js';
import { loadCheckpoint } from '../src/train/checkpoint.js';
import { readMetrics, plotRun } from '../src/train/plot.js';
import { loadModelFile, loadWeights } from '../src/io/weights.js';
import type { MobileNetV1Config } from '../src/model/mobilenetv1.js';
import { NativeModel } from '../src/engine/native/model.js';
import { evaluate } from '../src/train/metrics.js';
import { loadFashionMnist } from '../src/data/idx.js';
import { FASHION_MNIST_INPUT } from '../src/data/dataset.js';
import { openDataset } from '../src/data/open.js';
import { Rng } from '../src/util/rng.js';

const tmp = mkdtempSync(join(tmpdir(), 'mnv2-train-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** IDX files of n 28×28 images: class c is a bright horizontal bar at rows 2c+3..2c+5, plus noise. */
function writeSyntheticFmnist(dir: string, nTrain: number, nTest: number): void {
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(123);
  for (const [prefix, n] of [['train', nTrain], ['t10k', nTest]] as const) {
    const img = Buffer.alloc(16 + n * 784);
    img.writeUInt32BE(0x803, 0);
    img.writeUInt32BE(n, 4);
    img.writeUInt32BE(28, 8);
    img.writeUInt32BE(28, 12);
    const lab = Buffer.alloc(8 + n);
    lab.writeUInt32BE(0x801, 0);
    lab.writeUInt32BE(n, 4);
    for (let i = 0; i < n; i++) {
      const c = i % 10;
      lab[8 + i] = c;
      for (let p = 0; p < 784; p++) {
        const y = Math.floor(p / 28);
        const on = y >= 2 * c + 3 && y < 2 * c + 6;
        img[16 + i * 784 + p] = on ? 200 + rng.int(56) : rng.int(40);
      }
    }
    writeFileSync(join(dir, `${prefix}-images-idx3-ubyte`), img);
    writeFileSync(join(dir, `${prefix}-labels-idx1-ubyte`), lab);
  }
}

const dataDir = join(tmp, 'fmnist');
writeSyntheticFmnist(dataDir, 64, 20);

const root = fileURLToPath(new URL('../..', import.meta.url));
/** `mnv2 <args>` with only the train commands registered (they are what is tested); returns stdout. */
function trainCommands(...args: string[]): string {
  const script = join(tmp, 'cli.mjs');
  writeFileSync(script, `
    import { Command } from ${JSON.stringify(join(root, 'node_modules/commander/index.js'))};
    import { registerTrainCommands } from ${JSON.stringify(join(root, 'dist/src/cli/train-commands.js'))};
    const p = new Command().name('mnv2');
    registerTrainCommands(p);
    p.parseAsync(process.argv).catch((e) => { console.error(e.message); process.exitCode = 1; });`);
  return execFileSync(process.execPath, [script, ...args], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function tinyRecipe(over: Partial<TrainRecipe> = {}): TrainRecipe {
  return resolvePreset('fashion-mnist', {
    dataDir, arch: 'imagenet', alpha: 0.35, resolution: 32, batch: 16, epochs: 2, lr: 0.02, schedulePer: 'step', augment: 'none',
    trainLimit: 0, evalLimit: 0, ...over,
  });
}
const quiet = { progress: false, log: () => {}, threads: 2, onnx: false, plots: false, evalBatch: 20 } as const;

const weightsOf = (file: string) => loadWeights(file).weights;
function assertBitwiseEqual(a: Map<string, Float32Array>, b: Map<string, Float32Array>, what: string): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), `${what}: same tensor names`);
  for (const [k, v] of a) {
    const w = b.get(k)!;
    assert.ok(Buffer.from(v.buffer, v.byteOffset, v.byteLength).equals(Buffer.from(w.buffer, w.byteOffset, w.byteLength)), `${what}: ${k} differs`);
  }
}

let straightDir = '';

test('a short run decreases the loss and writes the run files', async () => {
  straightDir = join(tmp, 'straight');
  const r = await train({ recipe: tinyRecipe(), out: straightDir, ...quiet, onnx: true, plots: true });
  assert.equal(r.stopped, false);
  assert.equal(r.epochs, 2);
  assert.equal(r.globalStep, 8);
  const { rows } = readMetrics(straightDir);
  assert.equal(rows.length, 2);
  assert.ok(rows[1]!.train_loss < rows[0]!.train_loss, `train loss ${rows[0]!.train_loss} -> ${rows[1]!.train_loss}`);
  for (const f of ['model.safetensors', 'model.onnx', 'best.safetensors', 'last.safetensors', 'eval.txt', 'curves.svg', 'curves.png', 'confusion.png']) {
    assert.ok(readFileSync(join(straightDir, f)).length > 0, f);
  }
  const ck = loadCheckpoint(straightDir);
  assert.equal(ck.position!.epoch, 2);
  assert.ok(ck.optim.size > 0 && ck.rng !== null);
});

test('the same recipe trains MobileNetV1\'s 32x32 variant: loss decreases, the model file rebuilds it', async () => {
  const dir = join(tmp, 'v1');
  const r = await train({ recipe: tinyRecipe({ arch: 'mobilenetv1-cifar', alpha: 0.25 }), out: dir, ...quiet });
  assert.equal(r.epochs, 2);
  const { rows } = readMetrics(dir);
  assert.ok(rows[1]!.train_loss < rows[0]!.train_loss, `train loss ${rows[0]!.train_loss} -> ${rows[1]!.train_loss}`);
  const c = loadModelFile(join(dir, 'model.safetensors')).graph.config as MobileNetV1Config;
  assert.deepEqual([c.family, c.variant, c.alpha, c.resolution, c.numClasses], ['mobilenetv1', 'mobilenetv1-cifar', 0.25, 32, 10]);
});

test('resume: stopped mid-epoch and at an epoch end, then resumed, ends bitwise equal to the straight run', async () => {
  assert.ok(straightDir, 'needs the straight run');
  const straight = weightsOf(join(straightDir, 'last.safetensors'));
  const straightOptim = loadCheckpoint(straightDir).optim;
  for (const stopAt of [4, 6]) {
    // 4 steps per epoch: stop at the end of epoch 1 (4) and in the middle of epoch 2 (6)
    const dir = join(tmp, `resumed-${stopAt}`);
    const a = await train({ recipe: tinyRecipe(), out: dir, ...quiet, stopAfterSteps: stopAt });
    assert.equal(a.stopped, true);
    const mid = loadCheckpoint(dir).position!;
    assert.equal(mid.globalStep, stopAt);
    // a different recipe passed on resume is ignored: the checkpoint's is used
    const b = await train({ recipe: tinyRecipe({ lr: 1 }), resume: dir, ...quiet });
    assert.equal(b.stopped, false);
    assert.equal(b.globalStep, 8);
    assertBitwiseEqual(straight, weightsOf(join(dir, 'last.safetensors')), `stop at ${stopAt}`);
    assertBitwiseEqual(straightOptim, loadCheckpoint(dir).optim, `optimizer state, stop at ${stopAt}`);
    // The final model file is byte-exact (checkpoints differ only in the wall-clock time they record).
    assert.ok(readFileSync(join(dir, 'model.safetensors')).equals(readFileSync(join(straightDir, 'model.safetensors'))), `model.safetensors bytes, stop at ${stopAt}`);
    const m1 = readMetrics(straightDir).rows;
    const m2 = readMetrics(dir).rows;
    assert.deepEqual(m2.map((r) => [r.epoch, r.train_loss, r.train_acc, r.val_top1]), m1.map((r) => [r.epoch, r.train_loss, r.train_acc, r.val_top1]));
    // Classification counts top-1 hits: every row has a training accuracy, also the resumed ones.
    for (const r of [...m1, ...m2]) assert.ok(typeof r.train_acc === 'number' && r.train_acc >= 0 && r.train_acc <= 1, `train_acc ${r.train_acc}`);
  }
});

test('a checkpoint records the thread count; resuming with another warns', async () => {
  const dir = join(tmp, 'threads');
  await train({ recipe: tinyRecipe({ epochs: 1 }), out: dir, ...quiet, threads: 2, stopAfterSteps: 1 });
  assert.equal(loadCheckpoint(dir).position!.threads, 2);
  const logs: string[] = [];
  await train({ recipe: tinyRecipe(), resume: dir, ...quiet, threads: 1, log: (m) => logs.push(m) });
  assert.ok(logs.some((m) => m === 'warning: this run was trained with 2 threads and resumes with 1: the results will differ from an uninterrupted run\'s (pass --threads 2 to match)'), logs.join('\n'));
  // Classification's epoch lines report the top-1 accuracy of the training batches.
  assert.ok(logs.some((m) => /^epoch \d+\/\d+: train loss [\d.]+ acc [\d.]+% \|/.test(m)), logs.join('\n'));
  assert.equal(loadCheckpoint(dir).position!.threads, 1);
});

test('eval --json prints exactly top1, top5, correct and total', async () => {
  assert.ok(straightDir);
  const model = join(straightDir, 'model.safetensors');
  const out = trainCommands('eval', '--weights', model, '--dataset', 'fashion-mnist',
    '--data', dataDir, '--limit', '15', '--batch', '16', '--threads', '2', '--json');
  const lines = out.trim().split('\n');
  assert.equal(lines.length, 1, `one line on stdout, got: ${out}`);
  const j = JSON.parse(lines[0]!) as Record<string, number>;
  assert.deepEqual(Object.keys(j), ['top1', 'top5', 'correct', 'total']);
  assert.equal(j.total, 15);
  assert.ok(Number.isInteger(j.correct) && j.correct >= 0 && j.correct <= 15);
  assert.equal(j.top1, j.correct / 15);
  assert.ok(j.top5! >= j.top1!);

  // the library gives the same on the whole test split
  const l = loadWeights(model);
  const r = await evaluate(new NativeModel(l.graph, l.weights, { threads: 2 }), loadFashionMnist(dataDir, 'test'), FASHION_MNIST_INPUT, 16);
  assert.equal(r.total, 20);
  assert.equal(r.perClass.reduce((s, c) => s + c.total, 0), 20);
  assert.equal(r.confusion.reduce((s, v) => s + v, 0), 20);
});

test('--decay-bn-bias / --no-decay-bn-bias set the recipe either way; neither keeps the recipe\'s', () => {
  const recipeOf = (name: string, ...flags: string[]): TrainRecipe => {
    const out = join(tmp, name);
    trainCommands('train', '--recipe', 'fashion-mnist', '--data', dataDir, '--train-limit', '16', '--batch', '8', '--epochs', '1', '--stop-after', '1',
      '--threads', '1', '--no-progress', '--no-onnx', '--out', out, ...flags);
    return JSON.parse(readFileSync(join(out, 'recipe.json'), 'utf8')) as TrainRecipe;
  };
  const preset = resolvePreset('fashion-mnist').noDecayBnBias;
  assert.equal(recipeOf('bn-default').noDecayBnBias, preset);
  assert.equal(recipeOf('bn-no-decay', '--no-decay-bn-bias').noDecayBnBias, true);
  assert.equal(recipeOf('bn-decay', '--decay-bn-bias').noDecayBnBias, false);
});

test('plot writes a valid SVG and PNG', async () => {
  assert.ok(straightDir);
  const out = join(tmp, 'plots');
  const p = await plotRun(straightDir, out);
  const svg = readFileSync(p.svg, 'utf8');
  assert.match(svg, /^<\?xml[^>]*>\s*<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>\s*$/);
  assert.ok((svg.match(/<path /g) ?? []).length >= 5, 'one path per curve');
  const png = readFileSync(p.png);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const meta = await sharp(png).metadata();
  assert.equal(meta.format, 'png');
  assert.equal(meta.width, 1200);
  assert.equal(meta.height, 420);
  await assert.rejects(plotRun(join(tmp, 'nope')), /no such metrics log/);
});

test('--val-split: epochs are chosen on the last n training images; the test split is scored once, with the val-chosen weights', async () => {
  const dir = join(tmp, 'val-split');
  const r = await train({ recipe: tinyRecipe({ valSplit: 16 }), out: dir, ...quiet });
  assert.equal(r.globalStep, 6, '48 training images (64 - 16 held out), 3 steps of 16 per epoch');
  const model = loadModelFile(join(dir, 'model.safetensors'));
  assertBitwiseEqual(model.weights, weightsOf(join(dir, 'best.safetensors')), 'the model is the val-chosen checkpoint');
  const { rows } = readMetrics(dir);
  const full = loadFashionMnist(dataDir, 'train');
  const heldOut = { ...full, count: 16, images: full.images.subarray(48 * 784), labels: full.labels.subarray(48) };
  const net = new NativeModel(model.graph, model.weights, { threads: 2 });
  const val = await evaluate(net, heldOut, FASHION_MNIST_INPUT, 8);
  assert.equal(val.top1, rows[r.bestEpoch - 1]!.val_top1, 'val_top1 of the best epoch is the held-out images\' top-1');
  const test = await evaluate(net, loadFashionMnist(dataDir, 'test'), FASHION_MNIST_INPUT, 8);
  assert.equal(test.total, 20);
  assert.equal(r.test!.correct, test.correct);
  const report = JSON.parse(readFileSync(join(dir, 'test-eval.json'), 'utf8')) as { dataset: string; top1: number; total: number };
  assert.deepEqual([report.dataset, report.top1, report.total], ['fashion-mnist-test', test.top1, 20]);
  assert.equal(model.metadata['mnv2.test_top1'], String(test.top1));
  assert.equal(model.metadata['mnv2.val_top1'], String(r.bestTop1));
  assert.throws(() => readFileSync(join(dir, 'eval.txt')), /ENOENT/, 'no eval.txt: the only report is the test split\'s');
});

test('--augment canvas: the run trains and evaluates on garments drawn on its frame; the model file says so, and eval opens the data that way', async () => {
  const dir = join(tmp, 'canvas');
  const r = await train({ recipe: tinyRecipe({ augment: 'canvas', resolution: 64, epochs: 1 }), out: dir, ...quiet });
  const model = loadModelFile(join(dir, 'model.safetensors'));
  assert.equal(model.metadata['mnv2.preprocess'], 'fashion-mnist-canvas');
  const src = await openDataset('fashion-mnist', 'test', { dir: dataDir, resolution: 64, preprocess: model.metadata['mnv2.preprocess'] });
  assert.deepEqual(src.input.canvas, { minSize: 14, maxSize: 37 }, "fashion-detect's 21-56 px on 96, at two thirds of the scale");
  const net = new NativeModel(model.graph, model.weights, { threads: 2 });
  const val = await evaluate(net, src.dataset, src.input, 8);
  assert.equal(val.top1, r.bestTop1, 'the run\'s val top-1 is the canvas-drawn test split\'s');
});

test('--val-split is refused where it cannot hold: all the training images, a detection recipe, --qat', async () => {
  await assert.rejects(train({ recipe: tinyRecipe({ valSplit: 64 }), out: join(tmp, 'vs-all'), ...quiet }), /--val-split 64: fashion-mnist-train has 64 training images; hold out between 1 and 63/);
  assert.throws(() => resolvePreset('fashion-detect', { valSplit: 100 }), /--val-split is for classification/);
  assert.throws(() => tinyRecipe({ valSplit: 8, qat: { epochs: 1, freezeBnEpochs: 1, weightBits: 7 } }), /--val-split with --qat/);
});
