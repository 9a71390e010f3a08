/**
 * The browser page: an exported MobileNetV2 (ONNX) run by onnxruntime-web — WebGPU when the browser has an
 * adapter, else single-threaded wasm — on an uploaded/dropped image or a drawing, with the top 5 as bars. An
 * exported SSDLite detector (its metadata says so) switches the page to detection: the uploaded image with the
 * boxes, labels and scores drawn over it, decoded by the library's own post-processing (src/detect/ssdlite-output.ts).
 *
 * Query parameters: `model=URL` another exported model (its config, preprocessing and labels from its
 * metadata, as `mnv2 serve --onnx` reads them; `<model>.json` beside it, when present, overrides the
 * preprocessing and labels); `ep=wasm|webgpu` forces a backend; detectors: `score=` threshold (default 0.5, as
 * `mnv2 detect`), `max=` detections (default 100).
 */
import * as ort from 'onnxruntime-web';
import { CONFIG_KEY, classNamesOf, decodeModelInfo, preprocessOf } from '../../src/io/metadata.js';
import type { BaseConfig } from '../../src/model/family.js';
import { preset as makePreset, type Preset } from '../../src/data/preprocess.js';
import { BOXES, DETECTION_LOGITS, SSDLITE, type SsdliteConfig } from '../../src/model/ssdlite.js';
import { detectOptionsOf, detectorPreset, pixelDetections, type Detection, type DetectOptions } from '../../src/detect/ssdlite-output.js';
import { onnxMetadata } from './onnx-meta.js';
import { prepare } from './pixels.js';
import type { PageState } from './state.js';

/** What the build writes beside the model (model.json). */
interface SideInfo {
  title?: string;
  preprocess?: string;
  labels?: string[];
}

interface Model {
  session: ort.InferenceSession;
  backend: string;
  preset: Preset;
  labels: string[];
  shape: [number, number, number];
  /** An SSDLite model: its config (resolution, SSD style) and post-processing options (metadata, score= and max=). */
  detector?: { config: SsdliteConfig; options: DetectOptions };
}

declare global {
  interface Window {
    __mnv2: PageState;
  }
}

const TOP_K = 5;
const state: PageState = { ready: false, task: '', backend: '', error: '', runs: 0, source: '', lastInput: [], lastLogits: [], lastProbs: [], lastDetections: [] };
window.__mnv2 = state;

const params = new URLSearchParams(location.search);

function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`page is missing #${id}`);
  return e as T;
}

const status = el<HTMLParagraphElement>('status');
const errorBox = el<HTMLParagraphElement>('error');
const results = el<HTMLOListElement>('results');
const fileInput = el<HTMLInputElement>('file');
const drop = el<HTMLDivElement>('drop');
const invertBox = el<HTMLInputElement>('invert');
const preview = el<HTMLImageElement>('preview');
const pad = el<HTMLCanvasElement>('pad');
const seen = el<HTMLCanvasElement>('seen');
const view = el<HTMLCanvasElement>('view');
const padCtx = pad.getContext('2d')!;

function showError(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  state.error = msg;
  errorBox.textContent = msg;
  errorBox.hidden = false;
}

function clearError(): void {
  state.error = '';
  errorBox.hidden = true;
}

// ---- model loading ----

async function fetchOk(url: URL, what: string): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`could not fetch the ${what} ${url.href}: ${(e as Error).message}`);
  }
  if (!res.ok) throw new Error(`could not fetch the ${what} ${url.href}: HTTP ${res.status} ${res.statusText}`);
  return res;
}

/** `<model>.json` beside the model; absent (404) means defaults. */
async function fetchSideInfo(url: URL): Promise<SideInfo> {
  const res = await fetch(url).catch(() => null);
  if (!res || res.status === 404) return {};
  if (!res.ok) throw new Error(`could not fetch ${url.href}: HTTP ${res.status}`);
  let info: SideInfo;
  try {
    info = (await res.json()) as SideInfo;
  } catch {
    throw new Error(`${url.href}: not valid JSON`);
  }
  if (typeof info !== 'object' || info === null || Array.isArray(info)) throw new Error(`${url.href}: expected a JSON object`);
  if (info.labels !== undefined && !(Array.isArray(info.labels) && info.labels.every((l) => typeof l === 'string'))) {
    throw new Error(`${url.href}: "labels" must be an array of strings`);
  }
  if (info.preprocess !== undefined && typeof info.preprocess !== 'string') throw new Error(`${url.href}: "preprocess" must be a preset name`);
  return info;
}

interface GpuNavigator {
  gpu?: { requestAdapter(): Promise<unknown> };
}

/** WebGPU if forced or if the browser offers an adapter, else wasm. */
async function wantWebGpu(): Promise<boolean> {
  const ep = params.get('ep');
  if (ep !== null && ep !== 'wasm' && ep !== 'webgpu') throw new Error(`unknown ep=${ep} (use ep=wasm or ep=webgpu)`);
  if (ep !== null) return ep === 'webgpu';
  const gpu = (navigator as GpuNavigator).gpu;
  return gpu !== undefined && (await gpu.requestAdapter().catch(() => null)) !== null;
}

async function createSession(bytes: Uint8Array, source: string): Promise<{ session: ort.InferenceSession; backend: string }> {
  // Everything is served from the page's own folder (the build copies ort's wasm and its loader), never a CDN.
  ort.env.wasm.wasmPaths = new URL('./', import.meta.url).href;
  // Threads need SharedArrayBuffer, i.e. a cross-origin-isolated page (COOP/COEP headers); plain static hosting is not.
  ort.env.wasm.numThreads = crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const threads = `${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads === 1 ? '' : 's'}`;
  if (await wantWebGpu()) {
    try {
      return { session: await ort.InferenceSession.create(bytes, { executionProviders: ['webgpu'] }), backend: 'webgpu' };
    } catch (e) {
      console.warn(`WebGPU session failed, using wasm: ${(e as Error).message}`);
    }
  }
  try {
    return { session: await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] }), backend: `wasm, ${threads}` };
  } catch (e) {
    throw new Error(`${source}: onnxruntime-web could not load the model (${(e as Error).message})`);
  }
}

/** Input [C, H, W] and class count: the mnv2 config when present, else the model's declared shapes. */
function shapes(cfg: BaseConfig | undefined, session: ort.InferenceSession, source: string): { shape: [number, number, number]; classes: number } {
  if (cfg) return { shape: [cfg.inChannels, cfg.resolution, cfg.resolution], classes: cfg.numClasses };
  const inp = session.inputMetadata[0];
  const out = session.outputMetadata[0];
  const dims = inp?.isTensor ? inp.shape.slice(1) : [];
  const classes = out?.isTensor ? out.shape[1] : undefined;
  if (dims.length !== 3 || !dims.every((d) => typeof d === 'number') || typeof classes !== 'number') {
    throw new Error(`${source}: cannot tell the model's input shape [N, C, H, W] and class count (no ${CONFIG_KEY} metadata)`);
  }
  return { shape: dims as [number, number, number], classes };
}

async function loadModel(): Promise<Model> {
  const url = new URL(params.get('model') ?? 'model.onnx', location.href);
  const side = new URL(url.href);
  side.search = '';
  side.pathname = side.pathname.replace(/(\.onnx)?$/i, '.json');
  const [bytes, info] = await Promise.all([
    fetchOk(url, 'model').then(async (r) => new Uint8Array(await r.arrayBuffer())),
    fetchSideInfo(side),
  ]);
  const props = Object.fromEntries(onnxMetadata(bytes, url.href));
  const meta = decodeModelInfo(props, url.href);
  const { session, backend } = await createSession(bytes, url.href);
  const { shape, classes } = shapes(meta?.config, session, url.href);
  if (meta?.config.family === SSDLITE) {
    return detectorModel(session, backend, meta.config as SsdliteConfig, detectOptionsOf({ metadata: props, info: meta }, url.href), info.title ?? url.pathname.split('/').pop()!, url.href);
  }
  // Same defaults as `mnv2 predict`: the model's own preprocessing and labels, else its family's.
  const presetName = info.preprocess ?? (meta ? preprocessOf(meta) : 'seed-cifar');
  if (shape[1] !== shape[2]) throw new Error(`${url.href}: input ${shape[1]}x${shape[2]} is not square`);
  const p = makePreset(presetName, shape[1]);
  if (p.channels !== shape[0]) throw new Error(`preset ${presetName} makes ${p.channels}-channel inputs, the model takes ${shape[0]}`);
  const labels = info.labels ?? (meta && classNamesOf(meta)?.slice()) ?? Array.from({ length: classes }, (_, i) => `class ${i}`);
  if (labels.length !== classes) throw new Error(`${side.href}: ${labels.length} labels, the model has ${classes} classes`);
  status.textContent = `${info.title ?? url.pathname.split('/').pop()} · ${backend} · ready`;
  return { session, backend, preset: p, labels, shape };
}

/** A number query parameter in [min, max], or its default. */
function numberParam(name: string, dflt: number, min: number, max: number): number {
  const v = params.get(name);
  if (v === null) return dflt;
  const n = Number(v);
  if (v.trim() === '' || !(n >= min && n <= max)) throw new Error(`${name}=${v}: expected a number in [${min}, ${max}]`);
  return n;
}

/** An exported SSDLite (raw `boxes` and `logits` outputs): detection mode. */
function detectorModel(session: ort.InferenceSession, backend: string, config: SsdliteConfig, options: DetectOptions, title: string, source: string): Model {
  for (const o of [BOXES, DETECTION_LOGITS]) {
    if (!session.outputNames.includes(o)) throw new Error(`${source}: a detector without its raw '${o}' output (export it with --detect-postprocess none)`);
  }
  const post = { ...options, scoreThreshold: numberParam('score', 0.5, 0, 1), maxDetections: Math.floor(numberParam('max', 100, 1, 10_000)) };
  const labels = options.classNames?.slice() ?? Array.from({ length: config.numClasses }, (_, i) => `class ${i + 1}`);
  el<HTMLHeadingElement>('output-title').textContent = 'Detections';
  el<HTMLDivElement>('draw').hidden = true;
  invertBox.parentElement!.hidden = true;
  status.textContent = `${title} · detector, score > ${post.scoreThreshold} · ${backend} · ready`;
  const shape: [number, number, number] = [config.inChannels, config.resolution, config.resolution];
  return { session, backend, preset: detectorPreset(config.resolution), labels, shape, detector: { config, options: post } };
}

// ---- classification ----

const modelReady = loadModel();
let queue: Promise<void> = Promise.resolve();

/** Runs jobs one at a time (a session runs one inference at a time); errors go to the page. */
function enqueue(job: (m: Model) => Promise<void>): void {
  queue = queue.then(async () => job(await modelReady)).catch(showError);
}

function softmax(logits: Float32Array): number[] {
  const max = logits.reduce((a, b) => Math.max(a, b), -Infinity);
  const exps = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

function render(m: Model, probs: number[]): void {
  const top = probs
    .map((prob, index) => ({ prob, index }))
    .sort((a, b) => b.prob - a.prob)
    .slice(0, TOP_K);
  results.replaceChildren(
    ...top.map(({ prob, index }) => {
      const li = document.createElement('li');
      li.dataset.label = m.labels[index]!;
      li.dataset.prob = String(prob);
      const label = document.createElement('span');
      label.className = 'label';
      label.textContent = m.labels[index]!;
      const bar = document.createElement('span');
      bar.className = 'bar';
      const fill = document.createElement('span');
      fill.style.width = `${(prob * 100).toFixed(2)}%`;
      bar.append(fill);
      const pct = document.createElement('span');
      pct.className = 'pct';
      pct.textContent = `${(prob * 100).toFixed(2)} %`;
      li.append(label, bar, pct);
      return li;
    }),
  );
}

/** Draws the model's input back as 8-bit pixels, so the user sees what the model sees. */
function showInput(m: Model, x: Float32Array): void {
  const [c, h, w] = m.shape;
  seen.width = w;
  seen.height = h;
  const img = new ImageData(w, h);
  const plane = h * w;
  for (let i = 0; i < plane; i++) {
    for (let k = 0; k < 3; k++) {
      const ch = Math.min(k, c - 1);
      img.data[i * 4 + k] = (x[ch * plane + i]! * m.preset.std[ch]! + m.preset.mean[ch]!) * 255;
    }
    img.data[i * 4 + 3] = 255;
  }
  seen.getContext('2d')!.putImageData(img, 0, 0);
}

/** Detections drawn over the image (scaled to at most 640 px wide) and listed with their scores. */
function renderDetections(bitmap: ImageBitmap, detections: readonly Detection[]): void {
  const scale = Math.min(1, 640 / bitmap.width);
  view.width = Math.round(bitmap.width * scale);
  view.height = Math.round(bitmap.height * scale);
  const ctx = view.getContext('2d')!;
  ctx.drawImage(bitmap, 0, 0, view.width, view.height);
  ctx.lineWidth = 2;
  ctx.font = '13px sans-serif';
  ctx.textBaseline = 'bottom';
  for (const d of detections) {
    const [x1, y1, x2, y2] = d.box.map((v) => v * scale) as [number, number, number, number];
    ctx.strokeStyle = ctx.fillStyle = '#ff2d55';
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${d.label} ${d.score.toFixed(2)}`;
    const top = Math.max(16, y1);
    ctx.fillRect(x1, top - 16, ctx.measureText(text).width + 6, 16);
    ctx.fillStyle = '#fff';
    ctx.fillText(text, x1 + 3, top - 1);
  }
  view.hidden = false;
  results.replaceChildren(...detections.map((d) => {
    const li = document.createElement('li');
    li.className = 'detection';
    li.dataset.label = d.label;
    li.dataset.score = String(d.score);
    li.dataset.box = JSON.stringify(d.box);
    const label = document.createElement('span');
    label.className = 'label';
    label.textContent = `${d.label} [${d.box.map((v) => v.toFixed(0)).join(', ')}]`;
    const pct = document.createElement('span');
    pct.className = 'pct';
    pct.textContent = `${(d.score * 100).toFixed(1)} %`;
    li.append(label, pct);
    return li;
  }));
}

/** A detector on one uploaded image: the library's post-processing of the raw outputs, in the image's pixels. */
async function detect(m: Model, det: NonNullable<Model['detector']>, input: Float32Array, bitmap: ImageBitmap, source: string): Promise<void> {
  const [c, h, w] = m.shape;
  const out = await m.session.run({ [m.session.inputNames[0]!]: new ort.Tensor('float32', input, [1, c, h, w]) });
  const detections = pixelDetections(out[BOXES]!.data as Float32Array, out[DETECTION_LOGITS]!.data as Float32Array, det.config, bitmap.width, bitmap.height, det.options);
  clearError();
  renderDetections(bitmap, detections);
  showInput(m, input);
  Object.assign(state, { source, lastInput: Array.from(input), lastDetections: detections, runs: state.runs + 1 });
}

async function classify(m: Model, input: Float32Array, source: string): Promise<void> {
  const [c, h, w] = m.shape;
  const out = await m.session.run({ [m.session.inputNames[0]!]: new ort.Tensor('float32', input, [1, c, h, w]) });
  const logits = out[m.session.outputNames[0]!]!.data as Float32Array;
  const probs = softmax(logits);
  clearError();
  render(m, probs);
  showInput(m, input);
  Object.assign(state, { source, lastInput: Array.from(input), lastLogits: Array.from(logits), lastProbs: probs, runs: state.runs + 1 });
}

// ---- uploaded images ----

let image: { bitmap: ImageBitmap; name: string } | null = null;
let previewUrl = '';

async function classifyImage(m: Model): Promise<void> {
  if (!image) return;
  const { bitmap, name } = image;
  const input = prepare(bitmap, bitmap.width, bitmap.height, m.preset, !m.detector && invertBox.checked);
  await (m.detector ? detect(m, m.detector, input, bitmap, name) : classify(m, input, name));
}

function openFile(file: File): void {
  enqueue(async (m) => {
    let bitmap: ImageBitmap;
    if (file.size === 0) throw new Error(`${file.name}: the file is empty`);
    try {
      // EXIF orientation applied, as the library's sharp .rotate() does.
      bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
    } catch {
      results.replaceChildren();
      throw new Error(`${file.name}: not an image this browser can decode (${file.type || 'unknown type'}, ${file.size} bytes)`);
    }
    image?.bitmap.close();
    image = { bitmap, name: file.name };
    URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.hidden = false;
    await classifyImage(m);
  });
}

fileInput.addEventListener('change', () => {
  const f = fileInput.files?.[0];
  if (f) openFile(f);
  fileInput.value = '';
});
invertBox.addEventListener('change', () => enqueue(classifyImage));
// A file dropped anywhere else must not navigate away from the page.
for (const type of ['dragover', 'drop']) window.addEventListener(type, (e) => e.preventDefault());
drop.addEventListener('dragover', () => drop.classList.add('over'));
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  drop.classList.remove('over');
  const f = e.dataTransfer?.files[0];
  if (f) openFile(f);
});

// ---- drawing (white on black, like Fashion-MNIST) ----

function clearPad(): void {
  padCtx.fillStyle = '#000';
  padCtx.fillRect(0, 0, pad.width, pad.height);
}

let last: [number, number] | null = null;

function padPoint(e: PointerEvent): [number, number] {
  const r = pad.getBoundingClientRect();
  return [((e.clientX - r.left) * pad.width) / r.width, ((e.clientY - r.top) * pad.height) / r.height];
}

function stroke(to: [number, number]): void {
  const from = last ?? to;
  padCtx.strokeStyle = '#fff';
  padCtx.lineWidth = pad.width / 12;
  padCtx.lineCap = 'round';
  padCtx.lineJoin = 'round';
  padCtx.beginPath();
  padCtx.moveTo(from[0], from[1]);
  padCtx.lineTo(to[0], to[1]);
  padCtx.stroke();
  last = to;
}

pad.addEventListener('pointerdown', (e) => {
  pad.setPointerCapture(e.pointerId);
  last = null;
  stroke(padPoint(e));
});
pad.addEventListener('pointermove', (e) => {
  if (last) stroke(padPoint(e));
});
const endStroke = (): void => {
  if (!last) return;
  last = null;
  enqueue(async (m) => classify(m, prepare(pad, pad.width, pad.height, m.preset, false), 'drawing'));
};
pad.addEventListener('pointerup', endStroke);
pad.addEventListener('pointercancel', endStroke);
el<HTMLButtonElement>('clear').addEventListener('click', () => {
  clearPad();
  results.replaceChildren();
});
clearPad();

modelReady.then(
  (m) => {
    state.backend = m.backend;
    state.task = m.detector ? 'detect' : 'classify';
    state.ready = true;
  },
  (e: unknown) => {
    status.textContent = 'The model could not be loaded.';
    showError(e);
  },
);
