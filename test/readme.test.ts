/**
 * The README's TypeScript examples, as a consumer writes them: each ```ts block is type-checked against the
 * package's public types (`import ... from 'mobilenetv2-ts'` through its `exports` map; strict, skipLibCheck
 * false) and run with node in a folder holding the images it names.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { FASHION_MNIST_DIR, loadFashionMnist } from '../src/data/idx.js';

const run = promisify(execFile);
const ROOT = path.resolve('.');
// Inside the package (dist/ is ignored by git), so 'mobilenetv2-ts' resolves to this package by self-reference.
const DIR = path.join(ROOT, 'dist', 'readme-examples');
const blocks = [...readFileSync(path.join(ROOT, 'README.md'), 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);

describe('README TypeScript examples', { skip: existsSync(FASHION_MNIST_DIR) ? false : `${FASHION_MNIST_DIR} is absent (the examples classify its images)` }, () => {
  const cwd = mkdtempSync(path.join(os.tmpdir(), 'mnv2-readme-'));
  before(async () => {
    rmSync(DIR, { recursive: true, force: true });
    mkdirSync(DIR, { recursive: true });
    blocks.forEach((code, i) => writeFileSync(path.join(DIR, `example-${i}.ts`), code));
    writeFileSync(path.join(DIR, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: false, types: ['node'], rootDir: '.', outDir: 'out' },
      include: ['*.ts'],
    }));
    // Fashion-MNIST test images 4 (a shirt) and 0 (an ankle boot), as the examples name them.
    const ds = loadFashionMnist(undefined, 'test');
    const png = (i: number, name: string): Promise<unknown> =>
      sharp(Buffer.from(ds.images.subarray(i * 784, (i + 1) * 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toFile(path.join(cwd, name));
    await png(4, 'shirt.png');
    await png(0, 'boot.png');
  });

  it('there are examples to check', () => assert.ok(blocks.length >= 2, `${blocks.length} ts blocks`));

  const outputs: string[] = [];
  it('every example type-checks (strict, skipLibCheck false) and runs', async (t) => {
    await run(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', DIR]).catch((e: { stdout?: string }) => {
      throw new Error(`README examples do not type-check:\n${e.stdout ?? String(e)}`);
    });
    for (let i = 0; i < blocks.length; i++) {
      const { stdout } = await run(process.execPath, [path.join(DIR, 'out', `example-${i}.js`)], { cwd, maxBuffer: 1 << 24 });
      outputs.push(stdout);
      t.diagnostic(`example ${i}: ${stdout.trim().split('\n').at(-1)}`);
    }
  });

  it('the library example prints what its comments say', async () => {
    const i = blocks.findIndex((b) => b.includes('KnnClassifier'));
    assert.deepEqual(outputs[i]?.trim().split('\n'), ['Shirt 1280 fashion-mnist 10', 'mine']);
    assert.ok(existsSync(path.join(cwd, 'knn.json')));
  });

  it('the heads and feature-extractor example prints what its comments say', () => {
    const i = blocks.findIndex((b) => b.includes('includeTop'));
    assert.deepEqual(outputs[i]?.trim().split('\n'), ['classifier.1.weight classifier.4.weight classifier.7.weight', '1280 1280', '1280x4x4 20480']);
  });
});
