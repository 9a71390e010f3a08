/**
 * The package as a dependency: `npm pack`, then a fresh consumer project in a temporary folder installs the
 * tarball with plain `npm install` (the npm registry is the only network; no onnxruntime-node CUDA download),
 * compiles a TypeScript file against the public types with `strict` and `skipLibCheck: false`, and classifies
 * images with load(): first with the native build disabled (ONNX Runtime with a one-line notice), then after
 * `npm rebuild mobilenetv2-ts` on the native engine.
 */
import { before, after, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { load } from '../src/api/load.js';
import { loadFashionMnist } from '../src/data/idx.js';

const run = promisify(execFile);
const ROOT = path.resolve('.');
const TV_WEIGHTS = path.resolve('..', 'shared', 'data', 'imagenet', 'weights', 'mobilenet_v2_imagenet_torchvision_qat_dequantized.safetensors');
const PHOTO = path.resolve('..', 'shared', 'data', 'imagenet', 'photos', 'samoyed_pytorch_hub_dog.jpg');
const DNNL = '/usr/include/oneapi/dnnl/dnnl.hpp';

// The child npm must see neither the outer `npm test`'s npm_* variables nor a CI's ONNXRUNTIME_NODE_INSTALL:
// the install is the one a user gets.
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && !/^ONNXRUNTIME_NODE_INSTALL/.test(k)));
  return { ...env, ...extra };
}

async function npm(args: string[], cwd: string, extra: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; ms: number }> {
  const t = Date.now();
  const r = await run('npm', args, { cwd, env: cleanEnv(extra), maxBuffer: 64 << 20 });
  return { ...r, ms: Date.now() - t };
}

function du(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += du(p);
    else if (e.isFile()) n += statSync(p).size;
  }
  return n;
}

const CONSUMER_TS = `
import { load, type Classification, type LoadOptions } from 'mobilenetv2-ts';
import { readFile } from 'node:fs/promises';

const [image, weights] = process.argv.slice(2) as [string, string | undefined];
const opts: LoadOptions = weights ? { weights } : {};
const model = await load(opts);
const top: Classification[] = await model.classify(await readFile(image), { topk: 3 });
const embedding: Float32Array = await model.embed(image);
console.log(JSON.stringify({ engine: model.engine, preset: model.preprocess.name, top, embedding: embedding.length }));
await model.dispose();
`;

interface ConsumerOut { engine: string; preset: string; top: { className: string; index: number; probability: number }[]; embedding: number }

describe('npm pack → npm install in a fresh consumer project', { skip: existsSync(path.join(ROOT, 'dist', 'src', 'index.js')) ? false : 'dist is not built (run tsc -p . first)' }, () => {
  let tmp: string;
  let consumer: string;
  let image: string;
  let expected: { className: string; probability: number };

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'mnv2-package-'));
    consumer = path.join(tmp, 'consumer');
    // Fashion-MNIST test image 0 and what the library in this checkout says about it.
    const ds = loadFashionMnist(undefined, 'test');
    image = path.join(tmp, 'fmnist-0.png');
    await sharp(Buffer.from(ds.images.subarray(0, 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toFile(image);
    const m = await load({ engine: 'ort' });
    const [top] = await m.classify(image, { topk: 1 });
    await m.dispose();
    expected = { className: top!.className, probability: top!.probability };
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  /** The installed `mnv2` (the bundled CLI, package.json `bin`) answers as the library does, on `engine`. */
  async function binPredicts(file: string, engine: string): Promise<void> {
    const r = await run(path.join(consumer, 'node_modules', '.bin', 'mnv2'), ['predict', '--json', '--top', '1', file], { cwd: consumer });
    const [res] = JSON.parse(r.stdout) as { top: { label: string; prob: number }[] }[];
    assert.equal(res!.top[0]!.label, expected.className);
    assert.ok(Math.abs(res!.top[0]!.prob - expected.probability) < 1e-4);
    assert.match(r.stderr, new RegExp(`on ${engine}, 10 classes`));
  }

  let tarball: string;
  it('packs under 15 MB with the bundled model and without test fixtures or sources', async (t: TestContext) => {
    // dist is current: `npm test` compiles first, so the prepare script need not run again.
    const { stdout } = await npm(['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], ROOT);
    const [info] = JSON.parse(stdout) as { filename: string; size: number; unpackedSize: number; files: { path: string }[] }[];
    tarball = path.join(tmp, info!.filename);
    const files = info!.files.map((f) => f.path);
    t.diagnostic(`tarball ${(info!.size / 1e6).toFixed(2)} MB (${(info!.unpackedSize / 1e6).toFixed(2)} MB unpacked), ${files.length} files`);
    assert.ok(info!.size < 15e6, `tarball is ${info!.size} bytes`);
    for (const f of ['models/fashion-mnist/model.safetensors', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/bundle/cli/main.js', 'dist/bundle/cli/loader-worker.js', 'native/mnv2.cc', 'native/install.cjs', 'binding.gyp']) {
      assert.ok(files.includes(f), `${f} missing from the tarball`);
    }
    const unwanted = files.filter((f) => /^(test|dist\/test|dist\/bench|bench|web|src|tools|build)\//.test(f) || f.endsWith('.map'));
    assert.deepEqual(unwanted, []);
  });

  it('installs with plain npm install, native build disabled: ONNX Runtime classifies with a one-line notice', async (t: TestContext) => {
    mkdirSync(consumer);
    writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    writeFileSync(path.join(consumer, 'main.ts'), CONSUMER_TS);
    writeFileSync(path.join(consumer, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: false, types: ['node'], outDir: 'out' },
      files: ['main.ts'],
    }));
    const typescript = path.join(ROOT, 'node_modules', 'typescript', 'package.json');
    const tsVersion = (JSON.parse(readFileSync(typescript, 'utf8')) as { version: string }).version;
    // --foreground-scripts: npm hides install-script output otherwise (the notice users see is load()'s, below).
    const inst = await npm(['install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts', tarball, `typescript@${tsVersion}`, '@types/node@20'], consumer, { MNV2_SKIP_NATIVE: '1' });
    const footprint = du(path.join(consumer, 'node_modules'));
    t.diagnostic(`npm install: ${(inst.ms / 1000).toFixed(1)} s, node_modules ${(footprint / 1e6).toFixed(0)} MB`);
    const pkg = path.join(consumer, 'node_modules', 'mobilenetv2-ts');
    assert.ok(!existsSync(path.join(pkg, 'build', 'Release', 'mnv2.node')), 'the addon was built although MNV2_SKIP_NATIVE was set');
    assert.match(inst.stdout + inst.stderr, /MNV2_SKIP_NATIVE is set: native engine not built, ONNX Runtime serves/);
    assert.doesNotMatch(inst.stdout + inst.stderr, /nuget|Downloading/i);

    await run(path.join(consumer, 'node_modules', '.bin', 'tsc'), ['-p', '.'], { cwd: consumer }); // throws with the type errors
    const r = await run('node', ['out/main.js', image], { cwd: consumer });
    const out = JSON.parse(r.stdout) as ConsumerOut;
    assert.equal(out.engine, 'ort');
    assert.equal(out.preset, 'fashion-mnist');
    assert.equal(out.top[0]!.className, expected.className);
    assert.ok(Math.abs(out.top[0]!.probability - expected.probability) < 1e-5);
    assert.equal(out.embedding, 1280);
    const notice = r.stderr.trim().split('\n');
    assert.equal(notice.length, 1, r.stderr);
    assert.match(notice[0]!, /^mnv2: native engine not built, using ONNX Runtime \(to enable it: install oneDNN .*npm rebuild mobilenetv2-ts/);
    await binPredicts(image, 'ort');
  });

  it('npm rebuild mobilenetv2-ts builds the native engine, which then serves by default', { skip: existsSync(DNNL) ? false : `${DNNL} absent (libdnnl-dev)` }, async (t: TestContext) => {
    const reb = await npm(['rebuild', 'mobilenetv2-ts'], consumer);
    t.diagnostic(`npm rebuild (addon build): ${(reb.ms / 1000).toFixed(1)} s`);
    const r = await run('node', ['out/main.js', image], { cwd: consumer });
    const out = JSON.parse(r.stdout) as ConsumerOut;
    assert.equal(out.engine, 'native');
    assert.equal(r.stderr, '');
    assert.equal(out.top[0]!.className, expected.className);
    assert.ok(Math.abs(out.top[0]!.probability - expected.probability) < 1e-4);
    await binPredicts(image, 'native');
    // A second rebuild finds the addon current and does not compile again.
    const again = await npm(['rebuild', 'mobilenetv2-ts', '--foreground-scripts'], consumer);
    assert.doesNotMatch(again.stdout + again.stderr, /gyp info|CXX/);
  });

  it('classifies a real photo with real ImageNet weights through the installed package', { skip: existsSync(TV_WEIGHTS) && existsSync(PHOTO) ? false : 'the shared ImageNet weights/photos are absent' }, async () => {
    const r = await run('node', ['out/main.js', PHOTO, TV_WEIGHTS], { cwd: consumer });
    const out = JSON.parse(r.stdout) as ConsumerOut;
    assert.equal(out.preset, 'torchvision');
    assert.match(out.top[0]!.className, /^Samoyed/);
    assert.equal(out.top[0]!.index, 258);
  });
});
