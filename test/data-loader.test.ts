import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Dataset } from '../src/data/dataset.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../src/data/idx.js';
import { BatchLoader, type Batch, type BatchLoaderOptions } from '../src/data/loader.js';
import { Rng } from '../src/util/rng.js';

function synth(count: number, seed = 1): Dataset {
  const rng = new Rng(seed);
  const images = new Uint8Array(count * 28 * 28);
  for (let i = 0; i < images.length; i++) images[i] = rng.int(256);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) labels[i] = rng.int(10);
  return { name: 'fashion-mnist-synth', count, channels: 1, height: 28, width: 28, images, labels, classes: [...'0123456789'] };
}

async function collect(opts: BatchLoaderOptions, epoch: number, startBatch = 0): Promise<Batch[]> {
  const loader = new BatchLoader(opts);
  try {
    const out: Batch[] = [];
    for await (const b of loader.epoch(epoch, { startBatch })) out.push(b);
    return out;
  } finally {
    await loader.close();
  }
}

const ds = synth(1000);
const base: BatchLoaderOptions = { dataset: ds, batchSize: 128, shuffle: true, augment: 'seed', seed: 42 };

test('same seed and epoch give identical batches (worker and in-thread); epochs differ', async () => {
  const a = await collect(base, 3);
  const b = await collect(base, 3);
  const c = await collect({ ...base, worker: false }, 3);
  assert.equal(a.length, 8);
  for (let i = 0; i < a.length; i++) {
    assert.equal(a[i]!.index, i);
    assert.equal(a[i]!.epoch, 3);
    assert.deepEqual(a[i]!.indices, b[i]!.indices);
    assert.deepEqual(a[i]!.input, b[i]!.input);
    assert.deepEqual(a[i]!.labels, b[i]!.labels);
    assert.deepEqual(a[i]!.input, c[i]!.input);
    assert.deepEqual(a[i]!.indices, c[i]!.indices);
    // transferred, not views into something bigger
    assert.equal(a[i]!.input.byteLength, a[i]!.input.buffer.byteLength);
  }
  const d = await collect(base, 4);
  assert.notDeepEqual(d[0]!.indices, a[0]!.indices);
  const e = await collect({ ...base, seed: 43 }, 3);
  assert.notDeepEqual(e[0]!.indices, a[0]!.indices);
  // resume mid-epoch reproduces the tail
  const tail = await collect(base, 3, 5);
  assert.deepEqual(tail.map((x) => x.index), [5, 6, 7]);
  for (let i = 0; i < 3; i++) assert.deepEqual(tail[i]!.input, a[5 + i]!.input);
});

test('every index exactly once per epoch, labels match, shapes right, dropLast', async () => {
  const batches = await collect({ ...base, augment: 'none' }, 0);
  assert.deepEqual(batches.map((b) => b.size), [128, 128, 128, 128, 128, 128, 128, 104]);
  const seen = new Uint8Array(ds.count);
  for (const b of batches) {
    assert.equal(b.input.length, b.size * 3 * 32 * 32);
    assert.equal(b.labels.length, b.size);
    for (let i = 0; i < b.size; i++) {
      const idx = b.indices[i]!;
      seen[idx]!++;
      assert.equal(b.labels[i], ds.labels[idx]);
    }
  }
  assert.ok(seen.every((v) => v === 1));
  const dropped = await collect({ ...base, dropLast: true }, 0);
  assert.equal(dropped.length, 7);
  assert.ok(dropped.every((b) => b.size === 128));
  const ordered = await collect({ ...base, shuffle: false, augment: 'none', batchSize: 300 }, 9);
  assert.deepEqual([...ordered[3]!.indices], Array.from({ length: 100 }, (_, i) => 900 + i));
});

test('breaking out of an epoch early, then running the next one, then closing', async () => {
  const loader = new BatchLoader({ ...base, prefetch: 2 });
  let n = 0;
  for await (const b of loader.epoch(0)) {
    assert.equal(b.index, n++);
    if (n === 2) break;
  }
  const full: Batch[] = [];
  for await (const b of loader.epoch(1)) full.push(b);
  assert.equal(full.length, 8);
  const ref = await collect(base, 1);
  assert.deepEqual(full[7]!.input, ref[7]!.input);
  await loader.close();
  await loader.close(); // idempotent
  await assert.rejects(async () => {
    for await (const _ of loader.epoch(2)) break;
  }, /closed/);
});

test('worker errors surface as rejected promises', async () => {
  const l1 = new BatchLoader(base);
  (l1.plan as { input: unknown }).input = { channels: 3, pad: -1, mean: [0], std: [1] }; // breaks in the worker
  await assert.rejects(async () => {
    for await (const _ of l1.epoch(0)) { /* */ }
  }, /BatchLoader worker: input convention: pad must be an integer/);
  await l1.close();

  const l2 = new BatchLoader({ ...base, prefetch: 1 });
  await assert.rejects(async () => {
    for await (const b of l2.epoch(0)) {
      if (b.index === 1) await (l2 as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    }
  }, /worker exited unexpectedly/);
  await l2.close();
  assert.throws(() => new BatchLoader({ ...base, batchSize: 0 }), /batchSize/);
  assert.throws(() => new BatchLoader({ ...base, dataset: { ...ds, labels: ds.labels.subarray(1) } }), /999 labels for 1000 images/);
});

test('the process exits after close(), and even without it', () => {
  const url = new URL('../src/data/loader.js', import.meta.url).href;
  for (const close of [true, false]) {
    const script = `
      import { BatchLoader } from ${JSON.stringify(url)};
      const n = 500, images = new Uint8Array(n * 784), labels = new Uint8Array(n);
      const ds = { name: 'fashion-mnist-x', count: n, channels: 1, height: 28, width: 28, images, labels, classes: [...'0123456789'] };
      const loader = new BatchLoader({ dataset: ds, batchSize: 64, augment: 'seed', seed: 1 });
      let k = 0;
      for await (const b of loader.epoch(0)) k += b.size;
      ${close ? 'await loader.close();' : ''}
      console.log('done', k);`;
    const file = join(mkdtempSync(join(tmpdir(), 'mnv2-loader-')), 'exit.mjs');
    writeFileSync(file, script);
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 20000 });
    rmSync(file);
    assert.equal(r.error, undefined, `close=${close}: ${r.error?.message}`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'done 500');
  }
});

test('a full epoch of real Fashion-MNIST train (batch 128, seed augmentation)', async (t) => {
  if (!existsSync(join(FASHION_MNIST_DIR, 'train-images-idx3-ubyte.gz'))) {
    t.skip(`${FASHION_MNIST_DIR} not present`);
    return;
  }
  const t0 = performance.now();
  const train = loadFashionMnist(FASHION_MNIST_DIR, 'train');
  t.diagnostic(`load train split: ${(performance.now() - t0).toFixed(0)} ms`);
  for (const worker of [true, false]) {
    const loader = new BatchLoader({ dataset: train, batchSize: 128, augment: 'seed', seed: 0, worker });
    const t1 = performance.now();
    let n = 0;
    let images = 0;
    for await (const b of loader.epoch(0)) {
      n++;
      images += b.size;
    }
    const s = (performance.now() - t1) / 1000;
    await loader.close();
    assert.equal(n, 469);
    assert.equal(images, 60000);
    t.diagnostic(`${worker ? 'worker' : 'in-thread'}: ${n} batches in ${s.toFixed(2)} s = ${(n / s).toFixed(0)} batches/s, ${(images / s).toFixed(0)} img/s`);
  }
});

