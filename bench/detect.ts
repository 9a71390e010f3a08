// SSDLite-MobileNetV2 detection, side by side in one run (issue 9 §4), same weights everywhere:
//  * inference at α 1, 320×320, 90 classes (the COCO layout): batch 1 latency and batch 32 throughput of the
//    native engine, ONNX Runtime on the project's export (the two alternating so background load hits both alike)
//    and PyTorch on the twin (tools/ssdlite_model.py, channels_last, flush-denormal; its own process);
//  * decode + NMS per image: the project's TypeScript post-processing (TF's SSDLITE_NMS, and torchvision's
//    settings) beside torchvision's SSD.postprocess_detections (batched_nms) on the twin's outputs;
//  * the training step (forward + torchvision's SSD loss + backward + SGD) of the native engine — the loss, in
//    TypeScript, also on its own — and of PyTorch, at α 1 @ 320 batch 8 and the fashion-detect recipe's size.
// Weights: the backbone's from the real ImageNet MobileNetV2 in ../shared/data when present (else seeded init),
// extras and heads seeded init with a background prior on the class bias (a trained detector's scores are
// mostly background: decode + NMS times depend on it), every BN's running statistics from one train-mode pass
// over the real detection photos (else synthetic images). Ground truth: 1–3 seeded random boxes per image.
//
// usage: npm run bench:detect -- [--reps R (9)] [--threads T (2)] [--quick] [--python /usr/bin/python3]
//          [--out bench/RESULTS.md]
//   (= node dist/bench/detect.js ...; run `tsc -p .` first). --quick: a smoke run (few repetitions and steps).
// Writes its section to --out between <!-- detect:begin --> and <!-- detect:end -->, leaving the rest of the file.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { archConfig, buildModel } from '../src/model/registry.js';
import { initWeights, type StateDict } from '../src/model/weights.js';
import type { Graph } from '../src/model/graph.js';
import { BOXES, DETECTION_LOGITS, type SsdliteConfig } from '../src/model/ssdlite.js';
import { exportOnnx, ONNX_INPUT } from '../src/engine/onnx/export.js';
import { NativeModel } from '../src/engine/native/model.js';
import { native } from '../src/engine/native/binding.js';
import { saveWeights } from '../src/io/weights.js';
import { loadImage } from '../src/data/preprocess.js';
import { ssdAnchors } from '../src/detect/anchors.js';
import { detectorInit } from '../src/detect/backbone.js';
import type { DetectionTarget } from '../src/detect/losses.js';
import { postprocessSsd, type SsdStyle } from '../src/detect/postprocess.js';
import { detectorPreset } from '../src/detect/ssdlite-detector.js';
import { detection } from '../src/task/detection.js';
import type { Task } from '../src/task/task.js';
import { paramRefs, SGD } from '../src/train/optim.js';
import { presetRecipe } from '../src/train/presets.js';
import { Rng } from '../src/util/rng.js';
import { median, timeStats } from '../src/util/stats.js';
import { lastJson, lastLines } from './child-output.js';
import { machineLine } from '../src/util/machine.js';
import { writeSection } from './sections.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/detect.js -> repo root
const TORCH_PEER = join(ROOT, 'bench', 'peers', 'torch_detect_bench.py');
const PHOTOS = join(ROOT, '..', 'shared', 'data', 'detection', 'photos');
const IMAGENET = join(ROOT, '..', 'shared', 'data', 'imagenet', 'weights', 'mobilenet_v2_imagenet_torchvision_qat_dequantized.safetensors');
const INFER = { alpha: 1, resolution: 320, numClasses: 90 };
const THROUGHPUT_BATCH = 32;
// Class-head bias: background +4.6, each class −4.6 (sigmoid 0.01), as a trained detector scores most anchors.
const BACKGROUND_PRIOR = 4.6;
// The spread (p90 − p10) / median above which a row is flagged ‡ (as bench/run.ts does).
const SPREAD_FLAG = 0.25;

interface Args {
  reps: number;
  threads: number;
  quick: boolean;
  python: string;
  out: string;
}

function args(): Args {
  const a = process.argv.slice(2);
  const o: Args = { reps: 9, threads: 2, quick: false, python: '/usr/bin/python3', out: join(ROOT, 'bench', 'RESULTS.md') };
  for (let i = 0; i < a.length; i++) {
    const k = a[i]!;
    if (k === '--quick') {
      o.quick = true;
      continue;
    }
    const v = a[++i];
    if (v === undefined) throw new Error(`argument '${k}' needs a value (see the usage at the top of bench/detect.ts)`);
    if (k === '--reps') o.reps = Number(v);
    else if (k === '--threads') o.threads = Number(v);
    else if (k === '--python') o.python = v;
    else if (k === '--out') o.out = v;
    else throw new Error(`unknown argument '${k}' (see the usage at the top of bench/detect.ts)`);
  }
  if (o.quick) o.reps = 2;
  for (const k of ['reps', 'threads'] as const) if (!(Number.isInteger(o[k]) && o[k] > 0)) throw new Error(`--${k}: a positive integer, got ${o[k]}`);
  return o;
}

// ---------------------------------------------------------------- inputs, ground truth, weights

/** K preprocessed images [K, 3, R, R]: the real detection photos when there (sharp reads no BMP), else synthetic ones. */
async function benchImages(resolution: number): Promise<{ images: Float32Array; count: number; source: string }> {
  const per = 3 * resolution * resolution;
  const files = existsSync(PHOTOS) ? readdirSync(PHOTOS).filter((f) => f.endsWith('.jpg')).sort() : [];
  if (files.length > 0) {
    const images = new Float32Array(files.length * per);
    for (const [k, f] of files.entries()) images.set(await loadImage(join(PHOTOS, f), detectorPreset(resolution)), k * per);
    return { images, count: files.length, source: `${files.length} real photos (../shared/data/detection/photos)` };
  }
  const count = 4;
  return { images: Float32Array.from({ length: count * per }, (_, i) => Math.sin(i * (1 + Math.floor(i / per) * 0.1)) * 0.9), count, source: 'synthetic images' };
}

/** `batch` images taken cyclically from K (the PyTorch peer does the same). */
function batchOf(images: Float32Array, count: number, batch: number): Float32Array {
  const per = images.length / count;
  const x = new Float32Array(batch * per);
  for (let b = 0; b < batch; b++) x.set(images.subarray((b % count) * per, (b % count + 1) * per), b * per);
  return x;
}

/** 1–3 seeded random boxes (normalized corners, sides 0.1–0.6) with labels 1..C per image. */
function groundTruth(count: number, numClasses: number): DetectionTarget[] {
  const rng = new Rng(7);
  return Array.from({ length: count }, () => {
    const n = 1 + rng.int(3);
    const boxes = new Float32Array(4 * n);
    for (let i = 0; i < n; i++) {
      const w = 0.1 + 0.5 * rng.uniform();
      const h = 0.1 + 0.5 * rng.uniform();
      const x = rng.uniform() * (1 - w);
      const y = rng.uniform() * (1 - h);
      boxes.set([x, y, x + w, y + h], 4 * i);
    }
    return { boxes, labels: Array.from({ length: n }, () => 1 + rng.int(numClasses)) };
  });
}

/** The weights every engine runs (see the file comment); `backbone` says where the backbone's came from. */
function benchWeights(graph: Graph<SsdliteConfig>, images: Float32Array, count: number, gt: DetectionTarget[]): { weights: StateDict; backbone: string } {
  const imagenet = graph.config.alpha === 1 && existsSync(IMAGENET);
  const weights = imagenet ? detectorInit(graph, initWeights(graph, 0), IMAGENET).weights : initWeights(graph, 0);
  const backbone = imagenet ? 'real ImageNet MobileNetV2 (torchvision QAT, dequantized; ../shared/data)' : 'seeded init';
  const columns = graph.config.numClasses + 1;
  for (const p of graph.params) {
    if (/^head\.classification_head\.module_list\.\d+\.1\.bias$/.test(p.name)) {
      weights.get(p.name)!.forEach((_, i, b) => (b[i] = i % columns === 0 ? BACKGROUND_PRIOR : -BACKGROUND_PRIOR));
    }
  }
  // One train-mode pass over the K images with momentum 1: running statistics = those images' batch statistics.
  const model = new NativeModel(graph, weights);
  model.step(images, count, detectionTask(graph), gt, { bnMomentum: 1 });
  for (const b of graph.buffers) weights.set(b.name, model.weights.get(b.name)!.slice());
  return { weights, backbone };
}

const ssdlite = (c: { alpha: number; resolution: number; numClasses: number }): Graph<SsdliteConfig> =>
  buildModel(archConfig('ssdlite', { alpha: c.alpha, resolution: c.resolution, numClasses: c.numClasses })) as Graph<SsdliteConfig>;

function detectionTask(graph: Graph): ReturnType<typeof detection> {
  const R = graph.config.resolution;
  return detection({ style: 'torchvision', numClasses: graph.config.numClasses, anchors: ssdAnchors({ height: R, width: R }).corners });
}

// ---------------------------------------------------------------- the PyTorch peer

/** Weights, inputs, anchors and references in one safetensors file for the PyTorch peer (its usage names them). */
function writeSpec(file: string, graph: Graph, weights: StateDict, images: Float32Array, extra: Record<string, Float32Array>): void {
  const R = graph.config.resolution;
  saveWeights(file, graph, weights, new Map(Object.entries({ 'bench.images': images, 'bench.anchors': ssdAnchors({ height: R, width: R }).corners, ...extra })));
}

function gtTensors(gt: DetectionTarget[]): Record<string, Float32Array> {
  return {
    'bench.gt.boxes': Float32Array.from(gt.flatMap((t) => [...t.boxes])),
    'bench.gt.labels': Float32Array.from(gt.flatMap((t) => Array.from(t.labels))),
    'bench.gt.counts': Float32Array.from(gt, (t) => t.labels.length),
  };
}

async function torchPeer(o: Args, spec: string, graph: Graph<SsdliteConfig>, mode: 'infer' | 'train', batch: number, steps: number, warmup: number): Promise<Record<string, unknown>> {
  const c = graph.config;
  const argv = [TORCH_PEER, '--spec', spec, '--alpha', String(c.alpha), '--resolution', String(c.resolution), '--classes', String(c.numClasses),
    '--mode', mode, '--batch', String(batch), '--steps', String(steps), '--warmup', String(warmup), '--threads', String(o.threads)];
  const { stdout, stderr, error } = await new Promise<{ stdout: string; stderr: string; error: Error | null }>((resolve) =>
    execFile(o.python, argv, { cwd: ROOT, maxBuffer: 64 << 20, timeout: 600_000 }, (error, stdout, stderr) => resolve({ stdout, stderr, error })));
  const json = lastJson(stdout);
  if (error || !json) throw new Error(`PyTorch peer (${mode}) failed: ${lastLines(stderr || stdout, 2) || error?.message}`);
  return json;
}

// ---------------------------------------------------------------- timing

type Run = (input: Float32Array, batch: number) => Promise<unknown>;

/** Per engine: the median ms of `per` runs in each repetition, engines alternating, after one warm-up repetition. */
async function timeAlternating(engines: Run[], input: Float32Array, batch: number, reps: number, per: number): Promise<number[][]> {
  const times: number[][] = engines.map(() => []);
  for (let r = -1; r < reps; r++) {
    for (const [i, run] of engines.entries()) {
      const one: number[] = [];
      for (let k = 0; k < per; k++) {
        const t0 = performance.now();
        await run(input, batch);
        one.push(performance.now() - t0);
      }
      if (r >= 0) times[i]!.push(median(one));
    }
  }
  return times;
}

/** Wall ms of each of `runs` calls after `warmup` untimed ones. */
function timeRuns(fn: () => void, warmup: number, runs: number): number[] {
  for (let i = 0; i < warmup; i++) fn();
  return Array.from({ length: runs }, () => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  });
}

/** The native training step as src/train/epochs.ts takes it (step, SGD update, weightsChanged); the loss timed on its own. */
function nativeTrainStep(graph: Graph, weights: StateDict, x: Float32Array, batch: number, targets: DetectionTarget[], threads: number): { step: () => void; lossMs: number[]; losses: number[] } {
  const model = new NativeModel(graph, weights, { threads });
  const inner = detectionTask(graph);
  const lossMs: number[] = [];
  const task: Task<readonly DetectionTarget[]> = {
    ...inner,
    loss(outputs, target, n, grads) {
      const t0 = performance.now();
      const r = inner.loss(outputs, target, n, grads);
      lossMs.push(performance.now() - t0);
      return r;
    },
  };
  const params = paramRefs(model);
  const sgd = new SGD({ momentum: 0.9, weightDecay: 4e-5 });
  const losses: number[] = [];
  const step = (): void => {
    losses.push(model.step(x, batch, task, targets, { bnMomentum: 0.1 }).loss);
    sgd.step(params, 0.01);
    model.weightsChanged();
  };
  return { step, lossMs, losses };
}

// ---------------------------------------------------------------- report helpers

const f1 = (x: number): string => x.toFixed(1);
const f2 = (x: number): string => x.toFixed(2);
/** median (min–max) of repetitions, ‡ when they spread widely. */
const range = (v: number[], f: (x: number) => string): string =>
  `${f(median(v))} (${f(Math.min(...v))}–${f(Math.max(...v))})${(Math.max(...v) - Math.min(...v)) / median(v) > SPREAD_FLAG ? ' ‡' : ''}`;
/** median, min and the ‡ flag of a peer's stats. */
const peerMs = (s: { median_ms: number; min_ms: number; spread: number }): string => `${f1(s.median_ms)} (min ${f1(s.min_ms)})${s.spread > SPREAD_FLAG ? ' ‡' : ''}`;
const ratio = (x: number): string => `${f2(x)}×`;

type PeerStats = { median_ms: number; min_ms: number; spread: number; img_per_s?: number; loss_ms?: number; detections_per_image?: number };

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const o = args();
  const t0 = performance.now();
  const load = loadavg()[0]!;
  const host = machineLine();
  const tmp = mkdtempSync(join(tmpdir(), 'mnv2-bench-detect-'));
  const notes: string[] = [];
  try {
    // ---- inference ----
    const graph = ssdlite(INFER);
    const R = INFER.resolution;
    const { images, count, source } = await benchImages(R);
    const gt = groundTruth(count, INFER.numClasses);
    const { weights, backbone } = benchWeights(graph, images, count, gt);
    notes.push(`Inputs: ${source}, resized to ${R}×${R} without a crop, [-1, 1]. Backbone weights: ${backbone}; extras and heads: seeded init, ` +
      `class bias background +${BACKGROUND_PRIOR} / classes −${BACKGROUND_PRIOR}; every BN's running statistics: one train-mode pass over the ${count} images.`);
    const model = new NativeModel(graph, weights, { threads: o.threads });
    const session = await ort.InferenceSession.create(exportOnnx(graph, weights), { intraOpNumThreads: o.threads, interOpNumThreads: 1 });
    const engines: Run[] = [
      (x, n) => Promise.resolve(model.predictOutputs(x, n)),
      (x, n) => session.run({ [ONNX_INPUT]: new ort.Tensor('float32', x, [n, 3, R, R]) }),
    ];
    const rows: string[] = [];
    console.error(`inference: ${o.reps} repetitions per engine, batch 1 and ${THROUGHPUT_BATCH}…`);
    const [nat1, ort1] = await timeAlternating(engines, batchOf(images, count, 1), 1, o.reps, o.quick ? 3 : 10) as [number[], number[]];
    const [natB, ortB] = await timeAlternating(engines, batchOf(images, count, THROUGHPUT_BATCH), THROUGHPUT_BATCH, o.reps, 1) as [number[], number[]];
    await session.release();

    // ---- decode + NMS (TypeScript) on the native outputs of each image ----
    const anchors = ssdAnchors({ height: R, width: R }).corners;
    const per = 3 * R * R;
    const outs = Array.from({ length: count }, (_, k) => model.predictOutputs(images.slice(k * per, (k + 1) * per), 1));
    const post = (style: SsdStyle): { ms: number[]; detections: number } => {
      const found: number[] = [];
      const ms = timeRuns(() => outs.forEach((m) => found.push(postprocessSsd(m.get(BOXES)!, m.get(DETECTION_LOGITS)!, anchors, style).count)), 1, o.quick ? 2 : 5)
        .map((t) => t / count);
      return { ms, detections: median(found) };
    };
    const postTf = post('tf');
    const postTv = post('torchvision');

    // ---- PyTorch: inference and torchvision's post-processing ----
    const inferSpec = join(tmp, 'infer.safetensors');
    writeSpec(inferSpec, graph, weights, images, { 'bench.ref.boxes': outs[0]!.get(BOXES)!, 'bench.ref.logits': outs[0]!.get(DETECTION_LOGITS)! });
    console.error('PyTorch inference…');
    const tInfer = await torchPeer(o, inferSpec, graph, 'infer', THROUGHPUT_BATCH, o.quick ? 5 : 50, o.quick ? 1 : 5);
    const t1 = tInfer.b1 as PeerStats;
    const tB = tInfer[`b${THROUGHPUT_BATCH}`] as PeerStats;
    const tPost = tInfer.postprocess as PeerStats;
    const ips = (v: number[]): number[] => v.map((ms) => (1e3 * THROUGHPUT_BATCH) / ms);
    rows.push(`| inference α 1 @ ${R}, batch 1 latency (ms) | ${range(nat1, f1)} | ${range(ort1, f1)} | ${peerMs(t1)} | ${ratio(median(ort1) / median(nat1))} | ${ratio(t1.median_ms / median(nat1))} |`);
    rows.push(`| inference α 1 @ ${R}, batch ${THROUGHPUT_BATCH} throughput (img/s) | ${range(ips(natB), f1)} | ${range(ips(ortB), f1)} | ${f1(tB.img_per_s!)}${tB.spread > SPREAD_FLAG ? ' ‡' : ''} ` +
      `| ${ratio(median(ortB) / median(natB))} | ${ratio(tB.median_ms / median(natB))} |`);
    rows.push(`| decode + NMS per image, TF SSDLITE_NMS (ms) | ${range(postTf.ms, f1)} TS, ${postTf.detections} dets | — | — (torchvision has no TF-style post-processing) | — | — |`);
    rows.push(`| decode + NMS per image, torchvision settings (ms) | ${range(postTv.ms, f1)} TS, ${postTv.detections} dets | — | ${peerMs(tPost)}, ${tPost.detections_per_image} dets (postprocess_detections) | — | ${ratio(tPost.median_ms / median(postTv.ms))} |`);
    const s = tInfer.sanity as Record<string, number>;
    notes.push(`Same weights: the PyTorch twin's eval outputs on image 0 differ from the native engine's by at most ${s.max_abs_diff_boxes_vs_native!.toExponential(1)} (boxes) ` +
      `and ${s.max_abs_diff_logits_vs_native!.toExponential(1)} (logits; largest |logit| ${f2(s.max_abs_native_logit!)}).`);
    notes.push('Decode + NMS: TF SSDLITE_NMS = sigmoid, score > 1e-8, IoU 0.6, 100 per class and in all (src/detect/postprocess.ts); torchvision settings = ' +
      'softmax, score > 0.001, IoU 0.55, 300 per image — the TS version without torchvision\'s top-300 per class before NMS.');

    // ---- training ----
    const fd = presetRecipe('fashion-detect');
    const trainConfigs = [
      { alpha: 1, resolution: 320, numClasses: 90, batch: 8, label: 'α 1 @ 320, 90 classes, batch 8' },
      { alpha: fd.alpha, resolution: fd.resolution, numClasses: 10, batch: fd.batch, label: `fashion-detect: α ${fd.alpha} @ ${fd.resolution}, 10 classes, batch ${fd.batch}` },
    ];
    const [warmup, steps] = o.quick ? [1, 2] : [2, 6];
    for (const c of trainConfigs) {
      const g = ssdlite(c);
      const im = c.resolution === R ? { images, count } : await benchImages(c.resolution);
      const truth = groundTruth(im.count, c.numClasses);
      const w = c.resolution === R && c.numClasses === INFER.numClasses ? weights : benchWeights(g, im.images, im.count, truth).weights;
      const targets = Array.from({ length: c.batch }, (_, b) => truth[b % im.count]!);
      console.error(`training ${c.label}: native…`);
      const nat = nativeTrainStep(g, w, batchOf(im.images, im.count, c.batch), c.batch, targets, o.threads);
      const ms = timeRuns(nat.step, warmup, steps);
      const natStats = timeStats(ms);
      const lossMs = median(nat.lossMs.slice(warmup));
      const spec = join(tmp, `train-${c.alpha}-${c.resolution}.safetensors`);
      writeSpec(spec, g, w, im.images, gtTensors(truth));
      console.error(`training ${c.label}: PyTorch…`);
      const tTrain = await torchPeer(o, spec, g, 'train', c.batch, steps, warmup);
      const tt = tTrain.train as PeerStats;
      const natIps = (1e3 * c.batch) / natStats.median_ms;
      rows.push(`| training ${c.label}: img/s (step ms) | ${f1(natIps)} (${f1(natStats.median_ms)}${natStats.spread > SPREAD_FLAG ? ' ‡' : ''}) | — | ${f1(tt.img_per_s!)} (${peerMs(tt)}) | — | ${ratio(natIps / tt.img_per_s!)} |`);
      rows.push(`| … of it the loss (match + loss + gradients), ms | ${f1(lossMs)} (TypeScript) | — | ${f1(tt.loss_ms!)} (torchvision, autograd graph) | — | ${ratio(tt.loss_ms! / lossMs)} |`);
      const ts = tTrain.sanity as Record<string, number>;
      notes.push(`Training ${c.label}: loss native ${f2(nat.losses[0]!)} → ${f2(nat.losses.at(-1)!)}, PyTorch ${f2(ts.loss_first!)} → ${f2(ts.loss_last!)} (the same batch repeated).`);
    }

    const md = [
      `## SSDLite-MobileNetV2 detection: native vs ONNX Runtime vs PyTorch${o.quick ? ' — QUICK smoke run, not for comparison' : ''}`,
      '',
      `\`npm run bench:detect${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}\` — ${new Date().toISOString()}. ${host.replace(/; 1-min load average .*$/, '')}; ` +
        `load average at the start ${load.toFixed(2)} (other jobs may have run during the measurement). ${o.threads} threads everywhere; ` +
        `oneDNN ${native().info().onednn} (activations ${native().info().actFormat}), onnxruntime-node, PyTorch ${String(tInfer.torch)} ` +
        `(channels_last, flush_denormal ${String(tInfer.flush_denormal)}).`,
      '',
      `Native and ORT: median of ${o.reps} alternating repetitions (range in brackets). PyTorch runs in its own process afterwards: median (min) ` +
        `of its runs. ‡ = spread > ${SPREAD_FLAG}: (max − min) / median of the repetitions (native, ORT), (p90 − p10) / median of the runs (PyTorch). ` +
        "Training: one step = forward + torchvision's SSD loss + backward + " +
        `SGD (momentum 0.9, wd 4e-5), ${warmup} warm-up + ${steps} timed steps. Ratios are speed ratios, > 1: native faster (targets: ≥ 1.0× ORT, training ≥ 3× PyTorch).`,
      '',
      '| | native (oneDNN) | ONNX Runtime (export) | PyTorch (twin) | native / ORT | native / PyTorch |',
      '|---|---|---|---|---|---|',
      ...rows,
      '',
      ...notes.map((n) => `- ${n}`),
      `- Total time of this run: ${((performance.now() - t0) / 60e3).toFixed(1)} min.`,
    ].join('\n');
    writeSection(o.out, 'detect', md);
    console.log(md);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
