/**
 * Checkpoints: round trip (weights, optimizer state, RNG, position), and kill -9 during a save leaves the previous
 * checkpoint loadable: a child process saves a ~18 MB checkpoint in a loop and is SIGKILLed at random moments.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { initWeights } from '../src/model/weights.js';
import { decodeRng, encodeRng, loadCheckpoint, saveCheckpoint, type TrainPosition } from '../src/train/checkpoint.js';
import { resolvePreset } from '../src/train/presets.js';
import { Rng } from '../src/util/rng.js';

const tmp = mkdtempSync(join(tmpdir(), 'mnv2-ckpt-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const root = fileURLToPath(new URL('../..', import.meta.url));

function position(step: number): TrainPosition {
  return {
    epoch: step, step: 0, globalStep: step, epochLoss: 0, epochCorrect: 0, epochSeen: 0, elapsed: 0, bestTop1: 0, bestEpoch: 0,
    recipe: resolvePreset('fashion-mnist'),
  };
}

test('RNG state encodes exactly into float32', () => {
  const r = new Rng(99);
  for (let i = 0; i < 10; i++) r.nextU32();
  const s = r.state();
  s[0] = 0xffffffff;
  assert.deepEqual(decodeRng(encodeRng(s), 'x'), s);
  assert.throws(() => decodeRng(new Float32Array(8).fill(0.5), 'file.safetensors'), /file\.safetensors: train\.rng/);
});

test('checkpoint round trip: weights, optimizer state, EMA, RNG and position', () => {
  const g = mobilenetV2('imagenet', { alpha: 0.35, resolution: 32, numClasses: 10 });
  const w = initWeights(g, 3);
  const optim = new Map([['features.0.0.weight.momentum_buffer', Float32Array.from({ length: w.get('features.0.0.weight')!.length }, (_, i) => i * 1e-3)]]);
  const rng = new Rng(5).state();
  const pos = { ...position(7), step: 3, epochLoss: 1 / 3 };
  const file = join(tmp, 'rt.safetensors');
  saveCheckpoint(file, g, w, { optim, ema: new Map([['num_updates', new Float32Array([4, 0])]]), rng, position: pos, metadata: { 'mnv2.labels': 'fashion-mnist' } });
  const c = loadCheckpoint(file);
  assert.deepEqual(c.position, pos);
  assert.deepEqual(c.rng, rng);
  assert.deepEqual(c.optim, optim);
  assert.deepEqual([...c.ema.keys()], ['num_updates']);
  assert.equal(c.metadata['mnv2.labels'], 'fashion-mnist');
  for (const [k, v] of w) assert.deepEqual(c.weights.get(k), v, k);
  assert.throws(() => loadCheckpoint(join(tmp, 'missing')), /missing: no such checkpoint file or run folder/);
  assert.throws(() => loadCheckpoint(tmp), /has no last\.safetensors/);
});

test('kill -9 during a checkpoint save leaves the previous checkpoint loadable', async () => {
  const file = join(tmp, 'last.safetensors');
  const g = mobilenetV2('seed-cifar');
  const w = initWeights(g, 0);
  for (const v of w.values()) v.fill(0);
  saveCheckpoint(file, g, w, { position: position(0) });
  // The child rewrites the checkpoint forever; every tensor of save n holds the value n.
  const child = join(tmp, 'saver.mjs');
  writeFileSync(child, `
    import { mobilenetV2 } from ${JSON.stringify(join(root, 'dist/src/model/mobilenetv2.js'))};
    import { initWeights } from ${JSON.stringify(join(root, 'dist/src/model/weights.js'))};
    import { saveCheckpoint } from ${JSON.stringify(join(root, 'dist/src/train/checkpoint.js'))};
    import { resolvePreset } from ${JSON.stringify(join(root, 'dist/src/train/presets.js'))};
    const g = mobilenetV2('seed-cifar');
    const w = initWeights(g, 0);
    const optim = new Map([...g.params].map((p) => [p.name + '.momentum_buffer', new Float32Array(w.get(p.name).length)]));
    const file = process.argv[2];
    for (let n = Number(process.argv[3]); ; n++) {
      for (const v of w.values()) v.fill(n % 1000);
      for (const v of optim.values()) v.fill(n % 1000);
      saveCheckpoint(file, g, w, { optim, position: { epoch: n, step: 0, globalStep: n, epochLoss: 0, epochCorrect: 0, epochSeen: 0, elapsed: 0, bestTop1: 0, bestEpoch: 0, recipe: resolvePreset('fashion-mnist') } });
      if (n === Number(process.argv[3])) process.stdout.write('saved\\n');
    }
  `);
  const rng = new Rng(2024);
  let start = 1;
  for (let round = 0; round < 5; round++) {
    const p = spawn(process.execPath, [child, file, String(start)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      p.stdout!.once('data', () => resolve());
      p.once('exit', (code) => reject(new Error(`saver exited early (code ${code})`)));
    });
    await new Promise((r) => setTimeout(r, 20 + rng.int(400)));
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
    const c = loadCheckpoint(file);
    const n = c.position!.globalStep;
    assert.ok(n >= start, `round ${round}: a save of this round is on disk (step ${n})`);
    for (const [k, v] of c.weights) {
      if (k.endsWith('num_batches_tracked')) continue;
      assert.ok(v.every((x) => x === n % 1000), `round ${round}: ${k} belongs to save ${n}`);
    }
    for (const [k, v] of c.optim) assert.ok(v.every((x) => x === n % 1000), `round ${round}: optim ${k} belongs to save ${n}`);
    start = n + 1;
  }
  // killed saves may leave temp files next to the checkpoint, never a partial checkpoint; the next save removes them
  saveCheckpoint(file, g, w, { position: position(0) });
  assert.deepEqual(readdirSync(tmp).filter((f) => f.startsWith('last.safetensors.tmp-')), []);
});
