#!/usr/bin/env node
/**
 * Builds the browser page into web/dist (static files, servable by any HTTP server):
 *   index.html, style.css, app.js (web/src bundled with onnxruntime-web by esbuild),
 *   model.onnx (the weights exported with the library), model.json (title, preprocessing preset, labels),
 *   ort-wasm-simd-threaded.jsep.{mjs,wasm} (the wasm runtime and its loader, served locally, never from a CDN).
 * web/src is type-checked (tsc -p web) alongside. Uses the library's tsc output in dist/ (npm run build).
 *
 *   node web/build.mjs [--weights model.safetensors] [--out web/dist]
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { build } from 'esbuild';

const WEB = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(WEB);
const ORT_DIST = path.join(ROOT, 'node_modules', 'onnxruntime-web', 'dist');
// The `onnxruntime-web` entry with external wasm (ort.min.mjs: WebGPU via JSEP, and wasm) loads exactly these.
const ORT_FILES = ['ort-wasm-simd-threaded.jsep.mjs', 'ort-wasm-simd-threaded.jsep.wasm'];
const DATASET_NAMES = { imagenet: 'ImageNet', cifar10: 'CIFAR-10', 'fashion-mnist': 'Fashion-MNIST' };

/** The library, from its tsc output. */
async function lib(rel) {
  const file = path.join(ROOT, 'dist', 'src', rel);
  if (!existsSync(file)) throw new Error(`${file} is missing: build the library first (npm run build)`);
  return import(pathToFileURL(file).href);
}

/** Node-only modules that src/data/preprocess.ts imports for its file loading (sharp, util/read-file.ts), which the page does not use. */
const stubNodeOnly = {
  name: 'stub-node-only',
  setup(b) {
    // sharp and the bounded file reader (src/util/read-file.ts) behind loadImage: never called by the page.
    b.onResolve({ filter: /^(sharp|node:fs|node:fs\/promises|node:path)$/ }, (a) => ({ path: a.path, namespace: 'stub' }));
    b.onLoad({ filter: /.*/, namespace: 'stub' }, (a) => ({
      contents: `const no = () => { throw new Error('${a.path} is not available in the browser'); }; export default no; export const readFile = no, open = no, openSync = no, fstatSync = no, readSync = no, closeSync = no, realpathSync = no, constants = {};`,
    }));
  },
};

function typecheck() {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  return promisify(execFile)(process.execPath, [tsc, '-p', WEB], { cwd: ROOT }).catch((e) => {
    throw new Error(`type errors in web/src (tsc -p web):\n${e.stdout || e.message}`);
  });
}

/** Export `weights` and build the page into `out` (replaced as a whole only when everything succeeded). */
export async function buildWeb({ weights, out = path.join(WEB, 'dist') } = {}) {
  const t0 = performance.now();
  const [{ loadModelFile }, { exportOnnx }, cli, { exportMetadataOf }] = await Promise.all([
    lib('io/weights.js'),
    lib('engine/onnx/export.js'),
    lib('cli/model-commands.js'),
    lib('io/metadata.js'),
  ]);
  const file = weights ?? cli.DEFAULT_MODEL;
  if (!existsSync(file)) throw new Error(`${file}: no such weights file`);
  for (const f of ORT_FILES) {
    if (!existsSync(path.join(ORT_DIST, f))) throw new Error(`${path.join(ORT_DIST, f)} is missing: is onnxruntime-web installed (npm ci)?`);
  }
  const tmp = `${out}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    const checked = typecheck();
    const bundled = build({
      entryPoints: [path.join(WEB, 'src', 'main.ts')],
      outfile: path.join(tmp, 'app.js'),
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      minify: true,
      sourcemap: true,
      conditions: ['onnxruntime-web-use-extern-wasm'],
      plugins: [stubNodeOnly],
      logLevel: 'warning',
    });

    const m = loadModelFile(file);
    const cfg = m.graph.config;
    // The preset and labels `mnv2 predict` would use for this file.
    let spec;
    try {
      spec = cli.inputSpec(m.info, {});
    } catch (e) {
      throw new Error(`${file}: ${e.message}`);
    }
    const info = {
      // A detector (its metadata says so) puts the page in detection mode.
      title: cfg.family === 'ssdlite'
        ? `SSDLite-MobileNetV2 detector (${cfg.resolution}×${cfg.resolution}, ${cfg.numClasses} classes)`
        : `MobileNetV2 (${cfg.arch}, ${cfg.resolution}×${cfg.resolution})${spec.labelSet ? ` on ${DATASET_NAMES[spec.labelSet] ?? spec.labelSet}` : ''}`,
      source: path.relative(ROOT, path.resolve(file)),
      preprocess: spec.preset.name,
      ...(spec.labels && { labels: spec.labels }),
      config: cfg,
    };
    await writeFile(path.join(tmp, 'model.onnx'), exportOnnx(m.graph, m.weights, exportMetadataOf(m)));
    await writeFile(path.join(tmp, 'model.json'), `${JSON.stringify(info, null, 2)}\n`);
    await Promise.all([
      ...['index.html', 'style.css'].map((f) => copyFile(path.join(WEB, f), path.join(tmp, f))),
      ...ORT_FILES.map((f) => copyFile(path.join(ORT_DIST, f), path.join(tmp, f))),
    ]);
    await Promise.all([checked, bundled]);
    await rm(out, { recursive: true, force: true });
    await rename(tmp, out);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  const mb = async (f) => ((await stat(path.join(out, f))).size / 1e6).toFixed(2);
  return {
    out,
    seconds: (performance.now() - t0) / 1000,
    sizes: { 'app.js': await mb('app.js'), 'model.onnx': await mb('model.onnx'), [ORT_FILES[1]]: await mb(ORT_FILES[1]) },
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const { values } = parseArgs({ options: { weights: { type: 'string' }, out: { type: 'string' } } });
    const r = await buildWeb({ weights: values.weights, out: values.out && path.resolve(values.out) });
    const sizes = Object.entries(r.sizes).map(([f, s]) => `${f} ${s} MB`).join(', ');
    console.log(`built ${path.relative(process.cwd(), r.out) || '.'} in ${r.seconds.toFixed(1)} s (${sizes}); serve it with npm run serve:web`);
  } catch (e) {
    console.error(`build:web: ${e.message}`);
    process.exitCode = 1;
  }
}
