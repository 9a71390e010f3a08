/**
 * The browser page end to end: `web/build.mjs` builds it, `web/serve.mjs` serves it on 127.0.0.1, Debian's
 * Chromium loads it (onnxruntime-web, wasm), and every answer it gives is checked against onnxruntime-node on
 * the same exported model: the page's input tensor against the library's sharp preprocessing, its
 * probabilities against onnxruntime-node run on exactly the page's input tensor, its top-1 against the CLI path;
 * and an exported SSDLite detector in the page's detection mode, its boxes against onnxruntime-node's.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { chromium, type Browser, type Page } from 'playwright-core';
import { loadFashionMnist } from '../src/data/idx.js';
import { loadImages, preset } from '../src/data/preprocess.js';
import { FASHION_MNIST_LABELS } from '../src/data/labels.js';
import { OrtModel } from '../src/engine/onnx/session.js';
import { topK } from '../src/engine/classifier.js';
import type { PageState } from '../web/src/state.js';
import { PET_CLASSES, writePetModel } from './helpers/pets-model.js';
import * as ortNode from 'onnxruntime-node';
import { archConfig, buildModel } from '../src/model/registry.js';
import { initWeights } from '../src/model/weights.js';
import { loadModelFile, saveWeights } from '../src/io/weights.js';
import { detectOptionsOf, pixelDetections, type Detection } from '../src/detect/ssdlite-output.js';
import { openSsdliteFile, orientedSize } from '../src/detect/ssdlite-detector.js';
import { iou } from '../src/detect/boxes.js';
import type { SsdliteConfig } from '../src/model/ssdlite.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
/** Fashion-MNIST test image 0, an ankle boot (class 9); the bundled model gives it 99.9 %. */
const SAMPLE = 0;
const P = preset('fashion-mnist');
/** Normalized (float32) values of a black pixel (the 2 px padding, the drawing's background) and a mid grey. */
const BLACK = Math.fround((0 - P.mean[0]!) / P.std[0]!);
const GREY = (0.5 - P.mean[0]!) / P.std[0]!;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'mnv2-browser-'));
const dist = path.join(tmp, 'dist');
let server: ChildProcess | undefined;
let browser: Browser | undefined;
let page: Page;
let url = '';
let ort: OrtModel;
/** Every URL the pages requested. */
const requests: string[] = [];

const pageState = (p: Page): Promise<PageState> => p.evaluate(() => (globalThis as unknown as { __mnv2: PageState }).__mnv2);

async function openPage(query: string): Promise<Page> {
  const p = await browser!.newPage();
  p.on('request', (r) => requests.push(r.url()));
  await p.goto(url + query);
  await p.waitForFunction(() => {
    const s = (globalThis as unknown as { __mnv2?: PageState }).__mnv2;
    return s !== undefined && (s.ready || s.error !== '');
  });
  return p;
}

/** Wait for the page to finish classifying `source`, then read the result from the DOM and window.__mnv2. */
async function result(runsBefore: number, source: string, p: Page = page): Promise<{ state: PageState; label: string; prob: number; rows: number }> {
  await p.waitForFunction(
    ([n, s]) => {
      const st = (globalThis as unknown as { __mnv2: PageState }).__mnv2;
      return (st.runs > (n as number) && st.source === s) || st.error !== '';
    },
    [runsBefore, source] as const,
  );
  const state = await pageState(p);
  assert.equal(state.error, '', `the page reported an error for ${source}`);
  const first = p.locator('#results li').first();
  const label = (await first.getAttribute('data-label'))!;
  const prob = Number(await first.getAttribute('data-prob'));
  assert.match(await first.innerText(), new RegExp(`${label.replace(/[/]/g, '\\/')}[\\s\\S]*${(prob * 100).toFixed(2)} %`));
  return { state, label, prob, rows: await p.locator('#results li').count() };
}

async function upload(file: string, invert: boolean, p: Page = page): Promise<Awaited<ReturnType<typeof result>>> {
  await p.setChecked('#invert', invert);
  // Toggling invert re-runs the previous image; wait for the queue to settle on this file.
  const runs = (await pageState(p)).runs;
  await p.setInputFiles('#file', file);
  return result(runs, path.basename(file), p);
}

/** onnxruntime-node on exactly the page's input: probabilities within 1e-4 and the same top-1; returns the max |diff|. */
async function checkNumerics(state: PageState, label: string): Promise<number> {
  const logits = await ort.run(Float32Array.from(state.lastInput), 1);
  const probs = topK(logits, 10, 0, 10).sort((a, b) => a.index - b.index).map((t) => t.prob);
  const diff = Math.max(...probs.map((p, i) => Math.abs(p - state.lastProbs[i]!)));
  assert.ok(diff < 1e-4, `page vs onnxruntime-node probabilities differ by ${diff}`);
  const top = probs.indexOf(Math.max(...probs));
  assert.equal(label, FASHION_MNIST_LABELS[top]);
  return diff;
}

function meanAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
}

/** The node side: the library's preprocessing of the same file, onnxruntime-node, top-1 label and probability. */
async function nodeTop1(file: string, invert: boolean): Promise<{ input: Float32Array; label: string; prob: number }> {
  const input = await loadImages([file], P, { invert });
  const [t] = topK(await ort.run(input, 1), 10, 0, 1);
  return { input, label: FASHION_MNIST_LABELS[t!.index]!, prob: t!.prob };
}

before(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: the browser test needs Debian's Chromium (apt-get install chromium)`);
  }
  await promisify(execFile)(process.execPath, [path.join(ROOT, 'web', 'build.mjs'), '--out', dist], { cwd: ROOT });
  ort = await OrtModel.create(path.join(dist, 'model.onnx'), { threads: 1 });

  // The sample, tinted (so the page's greyscale must match sharp's on colours), at 28x28 (no resampling) and
  // resampled to 90x90 like a small photo; and the 90x90 one as a dark garment on white (for invert).
  const ds = loadFashionMnist(undefined, 'test');
  assert.equal(ds.labels[SAMPLE], 9);
  const grey = ds.images.subarray(SAMPLE * 784, (SAMPLE + 1) * 784);
  const rgb = Buffer.alloc(784 * 3);
  grey.forEach((v, i) => rgb.set([v, Math.round(v * 0.8), Math.round(v * 0.55)], i * 3));
  const raw = { raw: { width: 28, height: 28, channels: 3 as const } };
  await sharp(rgb, raw).png().toFile(path.join(tmp, 'boot-28.png'));
  const big = await sharp(rgb, raw).resize(90, 90, { kernel: 'lanczos3' }).raw().toBuffer();
  const big3 = { raw: { width: 90, height: 90, channels: 3 as const } };
  await sharp(big, big3).png().toFile(path.join(tmp, 'boot-90.png'));
  await sharp(big.map((v) => 255 - v), big3).png().toFile(path.join(tmp, 'boot-90-on-white.png'));
  // 784 pseudo-random colours, for the greyscale conversion.
  const noise = Buffer.alloc(784 * 3);
  for (let i = 0, s = 1; i < noise.length; i++) noise[i] = (s = (s * 1103515245 + 12345) >>> 0) >>> 24;
  await sharp(noise, raw).png().toFile(path.join(tmp, 'noise-28.png'));

  server = spawn(process.execPath, [path.join(ROOT, 'web', 'serve.mjs'), dist, '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  url = await new Promise<string>((resolve, reject) => {
    server!.once('exit', (code) => reject(new Error(`web/serve.mjs exited with ${code}`)));
    server!.stdout!.once('data', (d: Buffer) => resolve(/http:\/\/\S+/.exec(String(d))![0]));
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
      // Debian's Chromium offers a SwiftShader (CPU Vulkan) WebGPU adapter with these, so the page's WebGPU path runs too.
      '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan',
    ],
  });
  page = await openPage('?ep=wasm');
});

after(async () => {
  await browser?.close();
  server?.kill();
  await ort?.release();
  rmSync(tmp, { recursive: true, force: true });
});

describe('browser page', { timeout: 60_000 }, () => {
  it('loads the bundled model on the wasm backend, all files from its own server', async () => {
    const s = await pageState(page);
    assert.equal(s.error, '');
    assert.equal(s.backend, 'wasm, 1 thread');
    const foreign = requests.filter((r) => !r.startsWith(url) && !r.startsWith('data:'));
    assert.deepEqual(foreign, []);
    assert.ok(requests.includes(`${url}ort-wasm-simd-threaded.jsep.wasm`), requests.join(', '));
    assert.match(await page.locator('#status').innerText(), /seed-cifar, 32×32\) on Fashion-MNIST · wasm, 1 thread · ready/);
  });

  it('a 28x28 image: the same input tensor as the library (bit for bit) and the same answer as onnxruntime-node', async (t) => {
    const file = path.join(tmp, 'boot-28.png');
    const node = await nodeTop1(file, false);
    assert.equal(node.label, 'Ankle boot');
    assert.ok(node.prob > 0.99, `onnxruntime-node gives the sample ${node.prob}`);
    const r = await upload(file, false);
    // No resampling at 28x28: greyscale (libvips' luminance), padding and normalization must match exactly.
    const maxDiff = Math.max(...r.state.lastInput.map((v, i) => Math.abs(v - node.input[i]!)));
    assert.ok(maxDiff < 1e-6, `page vs library input: max |diff| ${maxDiff}`);
    assert.equal(r.label, node.label);
    assert.ok(Math.abs(r.prob - node.prob) < 1e-4, `top-1 probability: page ${r.prob}, node ${node.prob}`);
    assert.equal(r.rows, 5);
    t.diagnostic(`${r.label} ${r.prob}; probabilities page vs node max |diff| ${await checkNumerics(r.state, r.label)}`);
    // `npm run screenshot:web` regenerates the README's picture from this state.
    if (process.env.MNV2_SCREENSHOT) await page.screenshot({ path: process.env.MNV2_SCREENSHOT });
  });

  it('784 random colours at 28x28: greyscale, padding and normalization bit for bit', async () => {
    const file = path.join(tmp, 'noise-28.png');
    const node = await nodeTop1(file, false);
    const r = await upload(file, false);
    const maxDiff = Math.max(...r.state.lastInput.map((v, i) => Math.abs(v - node.input[i]!)));
    assert.ok(maxDiff < 1e-6, `page vs library input: max |diff| ${maxDiff}`);
    await checkNumerics(r.state, r.label);
  });

  it('a 90x90 image: canvas resampling close to sharp, same top-1 as onnxruntime-node', async (t) => {
    const file = path.join(tmp, 'boot-90.png');
    const node = await nodeTop1(file, false);
    const r = await upload(file, false);
    // Canvas (Skia, high quality) vs sharp's linear kernel: a few 8-bit levels apart at most on average.
    const mad = meanAbsDiff(r.state.lastInput, node.input);
    assert.ok(mad < 0.02, `page vs library input: mean |diff| ${mad} (normalized units)`);
    assert.equal(r.label, node.label);
    const diff = await checkNumerics(r.state, r.label);
    t.diagnostic(`${r.label} ${r.prob} (node ${node.prob}); input mean |diff| ${mad}; probabilities max |diff| ${diff}`);
  });

  it('invert: a dark garment on white, same preprocessing and top-1 as the library with invert', async (t) => {
    const file = path.join(tmp, 'boot-90-on-white.png');
    const node = await nodeTop1(file, true);
    const r = await upload(file, true);
    const mad = meanAbsDiff(r.state.lastInput, node.input);
    assert.ok(mad < 0.02, `page vs library input (inverted): mean |diff| ${mad}`);
    assert.equal(r.label, node.label);
    const diff = await checkNumerics(r.state, r.label);
    t.diagnostic(`${r.label} ${r.prob} (node ${node.prob}); input mean |diff| ${mad}; probabilities max |diff| ${diff}`);
  });

  it('a drawing with the mouse is classified', async (t) => {
    await page.click('#clear');
    const box = (await page.locator('#pad').boundingBox())!;
    const at = (fx: number, fy: number): [number, number] => [box.x + fx * box.width, box.y + fy * box.height];
    const runs = (await pageState(page)).runs;
    // Two legs joined at the waist: a pair of trousers, drawn as one stroke.
    await page.mouse.move(...at(0.35, 0.9));
    await page.mouse.down();
    for (const [fx, fy] of [[0.38, 0.1], [0.62, 0.1], [0.65, 0.9]] as const) await page.mouse.move(...at(fx, fy), { steps: 8 });
    await page.mouse.up();
    const r = await result(runs, 'drawing');
    assert.equal(r.rows, 5);
    assert.equal(r.label, 'Trouser');
    const x = r.state.lastInput;
    assert.equal(x.length, 3 * 32 * 32);
    // The 2 px border is padding (black); inside, the stroke left white pixels and the rest stayed black.
    const border = x.filter((_, i) => { const y = Math.floor(i / 32) % 32; const c = i % 32; return y < 2 || y > 29 || c < 2 || c > 29; });
    assert.ok(border.every((v) => v === BLACK));
    const bright = x.filter((v) => v > GREY).length / 3;
    const black = (x.filter((v) => v === BLACK).length - border.length) / 3;
    assert.ok(bright > 40 && black > 200, `drawing: ${bright} bright and ${black} black pixels of 784`);
    const diff = await checkNumerics(r.state, r.label);
    t.diagnostic(`${r.label} ${r.prob}; ${bright} bright pixels; probabilities max |diff| ${diff}`);
  });

  it('a file that is not an image gets a clear error on the page', async () => {
    await page.setInputFiles('#file', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('this is not an image\n') });
    await page.locator('#error').waitFor({ state: 'visible' });
    assert.match(await page.locator('#error').innerText(), /^notes\.png: not an image this browser can decode/);
    assert.equal(await page.locator('#results li').count(), 0);
  });

  it('the WebGPU backend (SwiftShader adapter) gives the wasm backend\'s input and probabilities', async (t) => {
    const gpu = await openPage('?ep=webgpu');
    const prev = page;
    try {
      const s = await pageState(gpu);
      assert.equal(s.error, '');
      assert.equal(s.backend, 'webgpu');
      assert.match(await gpu.locator('#status').innerText(), /· webgpu · ready/);
      for (const name of ['boot-28.png', 'noise-28.png', 'boot-90.png']) {
        const file = path.join(tmp, name);
        page = prev;
        const wasm = await upload(file, false);
        page = gpu;
        const webgpu = await upload(file, false);
        assert.deepEqual(webgpu.state.lastInput, wasm.state.lastInput, `${name}: the same preprocessing on both backends`);
        const diff = Math.max(...webgpu.state.lastProbs.map((p, i) => Math.abs(p - wasm.state.lastProbs[i]!)));
        assert.ok(diff < 1e-4, `${name}: webgpu vs wasm probabilities differ by ${diff}`);
        assert.equal(webgpu.label, wasm.label);
        await checkNumerics(webgpu.state, webgpu.label);
        t.diagnostic(`${name}: ${webgpu.label} ${webgpu.prob}; webgpu vs wasm probabilities max |diff| ${diff}`);
      }
    } finally {
      page = prev;
      await gpu.close();
    }
  });

  it('?model= pointing at a missing file says so', async () => {
    const p = await openPage('?model=nothing-here.onnx&ep=wasm');
    const s = await pageState(p);
    assert.equal(s.ready, false);
    assert.match(s.error, /could not fetch the model .*nothing-here\.onnx: HTTP 404/);
    assert.match(await p.locator('#error').innerText(), /nothing-here\.onnx: HTTP 404/);
    await p.close();
  });
});

describe('browser page: a fine-tuned model', { timeout: 60_000 }, () => {
  it("a model's own class names (cat, dog, owl) reach the page: built with --weights, and an mnv2 export onnx via ?model=", async (t) => {
    const weights = path.join(tmp, 'pets.safetensors');
    writePetModel(weights);
    await promisify(execFile)(process.execPath, [path.join(ROOT, 'web', 'build.mjs'), '--weights', weights, '--out', path.join(dist, 'pets')], { cwd: ROOT });
    await promisify(execFile)(process.execPath, [path.join(ROOT, 'dist', 'src', 'cli', 'main.js'), 'export', 'onnx', '--weights', weights, '--out', path.join(dist, 'pets.onnx')]);
    const pets = await OrtModel.create(path.join(dist, 'pets.onnx'), { threads: 1 });
    try {
      for (const where of ['pets/?ep=wasm', '?model=pets.onnx&ep=wasm']) {
        const p = await openPage(where);
        const r = await upload(path.join(tmp, 'boot-90.png'), false, p);
        const shown = await p.locator('#results li').evaluateAll((els) => els.map((e) => e.getAttribute('data-label')));
        assert.deepEqual([...shown].sort(), PET_CLASSES, `${where}: the page lists ${shown.join(', ')}`);
        const [top] = topK(await pets.run(Float32Array.from(r.state.lastInput), 1), PET_CLASSES.length, 0, 1);
        assert.equal(r.label, PET_CLASSES[top!.index], `${where}: the page's top-1 is onnxruntime-node's on its input`);
        t.diagnostic(`${where}: ${shown.join(', ')}; top-1 ${r.label} ${(r.prob * 100).toFixed(2)} %`);
        await p.close();
      }
    } finally {
      await pets.release();
    }
  });
});

const FISH = path.resolve(ROOT, '..', 'shared', 'data', 'detection', 'clownfish-ssdlite');

describe('browser page: a detector', { timeout: 180_000 }, () => {
  it('an SSDLite export (?model=): detection mode; its boxes, scores and classes = onnxruntime-node + the TS post-processing on the page\'s input', async (t) => {
    // The real clownfish model on its photo when the shared data is here, else a random tiny SSDLite on noise with
    // a low score threshold (so there are detections to compare).
    const fish = existsSync(path.join(FISH, 'ssdlite_mobilenet_v2_clownfish.tflite'));
    const weights = path.join(tmp, 'detector.safetensors');
    let photo: string;
    let score: number;
    if (fish) {
      await promisify(execFile)(process.execPath, [path.join(ROOT, 'dist', 'src', 'cli', 'main.js'), 'import', 'tflite', path.join(FISH, 'ssdlite_mobilenet_v2_clownfish.tflite'), '--out', weights]);
      [photo, score] = [path.join(FISH, 'clownfish.jpg'), 0.5];
    } else {
      t.diagnostic(`${FISH} is absent: a random tiny SSDLite instead of the clownfish model`);
      const g = buildModel(archConfig('ssdlite', { resolution: 129, numClasses: 3, alpha: 0.35 }));
      saveWeights(weights, g, initWeights(g, 5), new Map(), { 'mnv2.classes': JSON.stringify(['thing 1', 'thing 2', 'thing 3']) });
      const raw = Buffer.from(Array.from({ length: 180 * 130 * 3 }, (_, k) => (k * 32 + (k >> 7) * 17) % 256));
      photo = path.join(tmp, 'noise-180x130.png');
      await sharp(raw, { raw: { width: 180, height: 130, channels: 3 } }).png().toFile(photo);
      score = 0.3;
    }
    await promisify(execFile)(process.execPath, [path.join(ROOT, 'dist', 'src', 'cli', 'main.js'), 'export', 'onnx', '--weights', weights, '--out', path.join(dist, 'detector.onnx')]);
    const p = await openPage(`?model=detector.onnx&ep=wasm&score=${score}`);
    try {
      const s0 = await pageState(p);
      assert.equal(s0.error, '');
      assert.equal(s0.task, 'detect');
      assert.match(await p.locator('#status').innerText(), new RegExp(`detector, score > ${score} · wasm, 1 thread · ready`));
      assert.equal(await p.locator('#output-title').innerText(), 'Detections');
      await p.setInputFiles('#file', photo);
      await p.waitForFunction(([n, src]) => {
        const st = (globalThis as unknown as { __mnv2: PageState }).__mnv2;
        return (st.runs > (n as number) && st.source === src) || st.error !== '';
      }, [s0.runs, path.basename(photo)] as const);
      const st = await pageState(p);
      assert.equal(st.error, '');
      const shown = st.lastDetections;

      // onnxruntime-node on exactly the page's input tensor, decoded by the same TS post-processing.
      const m = loadModelFile(weights);
      const cfg = m.graph.config as SsdliteConfig;
      const session = await ortNode.InferenceSession.create(readFileSync(path.join(dist, 'detector.onnx')), { intraOpNumThreads: 1 });
      const out = await session.run({ input: new ortNode.Tensor('float32', Float32Array.from(st.lastInput), [1, 3, cfg.resolution, cfg.resolution]) });
      await session.release();
      const { width, height } = await orientedSize(photo);
      const options = { ...detectOptionsOf(m, weights), scoreThreshold: score, maxDetections: 100 };
      const want = pixelDetections(out['boxes']!.data as Float32Array, out['logits']!.data as Float32Array, cfg, width, height, options);
      assert.ok(want.length >= 2, `${want.length} detections to compare`);
      assert.equal(shown.length, want.length, 'detections');
      let worst = { score: 0, box: 0 };
      shown.forEach((d, i) => {
        const w = want[i]!;
        assert.deepEqual([d.classId, d.label], [w.classId, w.label], `#${i}`);
        worst = { score: Math.max(worst.score, Math.abs(d.score - w.score)), box: Math.max(worst.box, ...d.box.map((v, k) => Math.abs(v - w.box[k]!))) };
      });
      // onnxruntime-web's wasm kernels against onnxruntime-node's: float32 rounding apart.
      assert.ok(worst.score < 1e-4 && worst.box < 0.5, `page vs node: scores ${worst.score}, boxes ${worst.box} px`);

      // What the page shows: one list row per detection (label, score), the boxes drawn over the image.
      const rows = await p.locator('#results li').evaluateAll((els) => els.map((e) => [e.getAttribute('data-label'), Number(e.getAttribute('data-score'))] as const));
      assert.deepEqual(rows, shown.map((d) => [d.label, d.score]));
      assert.match(await p.locator('#results li').first().innerText(), new RegExp(`${(shown[0]!.score * 100).toFixed(1)} %`));
      const canvas = await p.locator('#view').evaluate((c: HTMLCanvasElement) => [c.hidden, c.width, c.height] as const);
      assert.deepEqual(canvas, [false, Math.round(width * Math.min(1, 640 / width)), Math.round(height * Math.min(1, 640 / width))]);
      if (fish) {
        // Against the CLI path (sharp's resize instead of the canvas's): the page's two best boxes are the two fish.
        const { detector, options: o } = await openSsdliteFile(weights, 1);
        const cli = (await detector.detect(photo, { ...o, scoreThreshold: score })).detections;
        await detector.release();
        const overlap = (a: Detection, b: Detection): number => iou(Float32Array.from(a.box), 0, Float32Array.from(b.box), 0);
        for (const k of [0, 1]) assert.ok(Math.max(...shown.slice(0, 2).map((d) => overlap(d, cli[k]!))) > 0.95, `fish ${k}`);
        t.diagnostic(`CLI ${cli.slice(0, 2).map((d) => d.score.toFixed(3)).join(', ')}`);
      }
      t.diagnostic(`${shown.length} detections, best ${shown.slice(0, 3).map((d) => `${d.label} ${d.score.toFixed(3)}`).join(', ')}; page vs node max |diff| scores ${worst.score.toExponential(2)}, boxes ${worst.box.toExponential(2)} px`);
    } finally {
      await p.close();
    }
  });
});
