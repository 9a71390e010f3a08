/**
 * The k-nearest-neighbour classifier on embeddings (src/api/knn.ts) and `mnv2 knn add | predict`: exact
 * neighbours and confidences on hand-made vectors, JSON round trip, few-shot accuracy on real Fashion-MNIST
 * embeddings of the bundled model, and the CLI on image files.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { KnnClassifier, type KnnPrediction } from '../src/api/knn.js';
import { load } from '../src/api/load.js';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../src/data/idx.js';
import { FASHION_MNIST_LABELS } from '../src/data/labels.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const tmp = mkdtempSync(path.join(os.tmpdir(), 'mnv2-knn-'));
const v = (...x: number[]): Float32Array => Float32Array.from(x);

describe('KnnClassifier', () => {
  it('k nearest by cosine similarity, confidences = share of the k neighbours, ties to the nearer class', () => {
    const knn = new KnnClassifier('test');
    knn.addExample(v(1, 0), 'east');
    knn.addExample(v(10, 1), 'east'); // scale does not matter
    knn.addExample(v(0, 1), 'north');
    knn.addExample(v(-1, 0.1), 'west');
    assert.deepEqual(knn.exampleCount(), { east: 2, north: 1, west: 1 });
    const p = knn.predict(v(1, 0.05), 3);
    assert.equal(p.label, 'east');
    assert.deepEqual(p.neighbours.map((n) => n.label), ['east', 'east', 'north']);
    // The nearest is (10, 1): cos = 10.05 / (|q| · |(10, 1)|), a hair above (1, 0)'s 1 / |q|.
    assert.ok(Math.abs(p.neighbours[0]!.similarity - 10.05 / (Math.hypot(1, 0.05) * Math.hypot(10, 1))) < 1e-6);
    assert.ok(Math.abs(p.neighbours[1]!.similarity - 1 / Math.hypot(1, 0.05)) < 1e-6);
    assert.ok(Math.abs(p.confidences.east! - 2 / 3) < 1e-12 && Math.abs(p.confidences.north! - 1 / 3) < 1e-12);
    assert.equal(p.confidences.west, 0);
    // k = 2 between north and east examples: one each, the nearer (north) wins.
    const tie = knn.predict(v(0.2, 1), 2);
    assert.deepEqual(tie.neighbours.map((n) => n.label), ['north', 'east']);
    assert.equal(tie.label, 'north');
  });

  it('JSON round trip gives the same predictions; bad files and mismatched vectors are named', () => {
    const knn = new KnnClassifier('model-a');
    knn.addExample(v(1, 2, 3), 'a');
    knn.addExample(v(-3, 2, 1), 'b');
    const file = path.join(tmp, 'k.json');
    knn.save(file);
    const back = KnnClassifier.load(file);
    assert.equal(back.model, 'model-a');
    const q = v(0.5, 2, 2.5);
    assert.deepEqual(back.predict(q, 2), knn.predict(q, 2));
    assert.throws(() => knn.addExample(v(1, 2), 'a'), /embedding has 2 values, the examples have 3/);
    assert.throws(() => knn.predict(v(1, 2, 3), 0), /k must be a positive integer/);
    assert.throws(() => new KnnClassifier().predict(v(1)), /no examples added yet/);
    writeFileSync(path.join(tmp, 'bad.json'), '{"format":"other"}');
    assert.throws(() => KnnClassifier.load(path.join(tmp, 'bad.json')), /bad\.json: not a KNN classifier file/);
    writeFileSync(path.join(tmp, 'bad2.json'), '{"format":"mnv2-knn","version":1,"dim":2,"examples":{"a":[[1,"x"]]}}');
    assert.throws(() => KnnClassifier.load(path.join(tmp, 'bad2.json')), /bad2\.json: an example of 'a' is not a list of numbers/);
    assert.throws(() => KnnClassifier.load(path.join(tmp, 'missing.json')), /missing\.json: cannot read/);
  });
});

const noFmnist = existsSync(FASHION_MNIST_DIR) ? false : `${FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)`;

describe('few-shot on the bundled model\'s embeddings (Fashion-MNIST)', { skip: noFmnist }, () => {
  it('10 training examples per class label 200 test images far above chance', async (t) => {
    const train = loadFashionMnist(undefined, 'train');
    const test = loadFashionMnist(undefined, 'test');
    const model = await load({ engine: 'native' });
    const png = (ds: typeof train, i: number): Promise<Buffer> =>
      sharp(Buffer.from(ds.images.subarray(i * 784, (i + 1) * 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer();
    const knn = new KnnClassifier('bundled');
    const per = new Map<number, number>();
    for (let i = 0; per.size < 10 || [...per.values()].some((n) => n < 10); i++) {
      const label = train.labels[i]!;
      if ((per.get(label) ?? 0) >= 10) continue;
      per.set(label, (per.get(label) ?? 0) + 1);
      knn.addExample(await model.embed(await png(train, i)), FASHION_MNIST_LABELS[label]!);
    }
    let correct = 0;
    const n = 200;
    for (let i = 0; i < n; i++) {
      const p: KnnPrediction = knn.predict(await model.embed(await png(test, i)), 5);
      if (p.label === FASHION_MNIST_LABELS[test.labels[i]!]) correct++;
    }
    await model.dispose();
    // Measured 93 % (186/200); chance is 10 %.
    t.diagnostic(`${correct}/${n} correct`);
    assert.ok(correct >= 170, `${correct}/${n} correct`);
  });
});

describe('mnv2 knn add | predict', { skip: noFmnist }, () => {
  it('adds examples from image files and predicts the class of new ones', async () => {
    const ds = loadFashionMnist(undefined, 'test');
    const files = new Map<string, string[]>([['Trouser', []], ['Bag', []]]);
    const queries: { file: string; label: string }[] = [];
    for (let i = 0; i < ds.labels.length && queries.length < 4; i++) {
      const label = FASHION_MNIST_LABELS[ds.labels[i]!]!;
      const list = files.get(label);
      if (!list) continue;
      const file = path.join(tmp, `fm-${i}.png`);
      await sharp(Buffer.from(ds.images.subarray(i * 784, (i + 1) * 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toFile(file);
      if (list.length < 3) list.push(file);
      else queries.push({ file, label });
    }
    const db = path.join(tmp, 'cli-knn.json');
    for (const [label, imgs] of files) await run(process.execPath, [CLI, 'knn', 'add', '--db', db, '--label', label, ...imgs]);
    const { stdout } = await run(process.execPath, [CLI, 'knn', 'predict', '--db', db, '--json', ...queries.map((q) => q.file)]);
    const out = JSON.parse(stdout) as (KnnPrediction & { file: string })[];
    assert.deepEqual(out.map((r) => r.label), queries.map((q) => q.label));
    assert.deepEqual(KnnClassifier.load(db).exampleCount(), { Trouser: 3, Bag: 3 });
    await assert.rejects(run(process.execPath, [CLI, 'knn', 'predict', '--db', path.join(tmp, 'none.json'), queries[0]!.file]), /no such classifier \(create it with mnv2 knn add\)/);
  });
});
