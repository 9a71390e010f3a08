/**
 * `mnv2 eval --task detect`: an SSDLite model file (trained here or imported from TFLite) on ONNX Runtime or the
 * native engine, or an ONNX export of one (float32, or int8 from `mnv2 quantize`) on ONNX Runtime, over a
 * COCO-format dataset: COCOeval's 12 numbers, optionally VOC AP50, the detections as a COCO results JSON and
 * the precision-recall curves as PNG. Registered by train-commands.ts' `eval`, which hands `--task detect` here.
 */
import { dirname } from 'node:path';
import { Option, type Command } from 'commander';
import { COCO_STAT_NAMES, defaultCocoParams, formatCocoStats } from '../detect/coco-eval.js';
import type { CategoryMapping } from '../detect/evaluate.js';
import { SSDLITE_NMS } from '../detect/nms.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { refuseInputAsOutput } from '../util/outputs.js';
import { COUNT_OR_ALL, int, num, SEED, THREADS } from './args.js';
import type { EngineName } from '../engine/classifier.js';

export interface EvalDetectOpts {
  weights?: string;
  onnx?: string;
  dataset?: string;
  data?: string;
  split: string;
  images?: string;
  engine?: EngineName;
  threads?: string;
  limit?: string;
  seed: string;
  score: string;
  max: string;
  metric: 'coco' | 'voc';
  categoryMap: CategoryMapping;
  cocoJson?: string;
  prPng?: string;
  classAgnostic?: boolean;
  json?: boolean;
  progress: boolean;
}

/** The detection options of `eval` (next to its classification ones). */
export function detectEvalOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--task <task>', 'classify (top-1/top-5) or detect (COCO AP of an SSDLite model; ONNX Runtime unless --engine native)').choices(['classify', 'detect']).default('classify'))
    .option('--onnx <file>', 'an ONNX file (mnv2 export onnx: float32 or --fp16; mnv2 quantize or train --qat: int8) instead of --weights; ONNX Runtime')
    .option('--images <dir>', "detect: image folder of a COCO JSON (default: the JSON's folder)")
    .addOption(new Option('--metric <m>', 'detect: coco (the 12 COCOeval numbers) or voc (also Pascal VOC AP50)').choices(['coco', 'voc']).default('coco'))
    .addOption(new Option('--category-map <m>', 'detect: model class k is the dataset\'s k-th category (index) or category id k (id, TF COCO models)').choices(['auto', 'index', 'id']).default('auto'))
    .option('--score <s>', 'detect: score threshold of the detections scored', String(SSDLITE_NMS.scoreThreshold))
    .option('--max <n>', 'detect: at most this many detections per image', '100')
    .option('--class-agnostic', "detect: ignore categories, a detection may match a box of any class (pycocotools' useCats 0): how much of the AP is localization")
    .option('--coco-json <file>', 'detect: write the detections in COCO results format (pycocotools loadRes)')
    .option('--pr-png <file>', 'detect: write the precision-recall curves (IoU 0.5 and 0.75) as PNG');
}

export async function evalDetect(o: EvalDetectOpts): Promise<void> {
  // Loaded here, not at import: `mnv2 eval` is registered at every start-up (an XML parser, ONNX Runtime, sharp).
  const [{ formatSkips, loadCocoDetection }, { evaluateDetector, vocAp50, writePrPng }, { openSsdliteFile, openSsdliteOnnx }, { formatDuration, progressBar }, { cocoSplitFile, limitImages }] = await Promise.all([
    import('../detect/dataset.js'), import('../detect/evaluate.js'), import('../detect/ssdlite-detector.js'), import('../train/progress.js'), import('../detect/train-data.js'),
  ]);
  if (o.weights && o.onnx) throw new Error('eval --task detect: give either --weights or --onnx, not both');
  const model = o.onnx ?? o.weights;
  if (!model) throw new Error('eval --task detect: --weights FILE (an SSDLite model) or --onnx FILE (its export) is required');
  const dataset = o.dataset ?? o.data;
  if (!dataset) throw new Error('eval --task detect: --dataset (a COCO JSON, or a folder with <split>.json) is required');
  // Detectors default to ONNX Runtime, as `mnv2 detect` does; --engine native runs the model file on oneDNN.
  const engine = o.engine ?? 'ort';
  const threads = int(o.threads, '--threads', THREADS);
  const limit = int(o.limit, '--limit', COUNT_OR_ALL) ?? 0;
  const seed = int(o.seed, '--seed', SEED)!;
  const scoreThreshold = num(o.score, '--score', { min: 0, max: 1 })!;
  const maxDetections = int(o.max, '--max', { min: 1, max: 100_000 })!;
  const file = cocoSplitFile(dataset, o.split);
  const inputs = [{ path: model, flag: o.onnx ? '--onnx' : '--weights' }, { path: file, flag: '--dataset' }];
  for (const [path, flag] of [[o.cocoJson, '--coco-json'], [o.prPng, '--pr-png']] as const) refuseInputAsOutput({ path, flag }, inputs);
  const full = await loadCocoDetection(file, o.images ?? dirname(file));
  if (full.skipped.total) console.error(`${file}: skipped or changed:\n${formatSkips(full.skipped)}`);
  const ds = limitImages(full, limit, seed);
  const { detector, options } = await (o.onnx ? openSsdliteOnnx : openSsdliteFile)(model, threads, engine);
  const pb = progressBar(o.progress && Boolean(process.stderr.isTTY), 'detecting |{bar}| {value}/{total} images | ETA {eta_formatted}');
  pb?.start(ds.images.length, 0);
  const t0 = performance.now();
  let r;
  try {
    r = await evaluateDetector(
      detector.imageDetector({ ...options, scoreThreshold, maxDetections }),
      ds,
      { mapping: o.categoryMap, onProgress: (d) => pb?.update(d), params: { ...defaultCocoParams(), useCats: !o.classAgnostic } },
    );
  } finally {
    pb?.stop();
    await detector.release();
  }
  const secs = (performance.now() - t0) / 1000;
  if (o.cocoJson) writeFileAtomic(o.cocoJson, `${JSON.stringify(r.detections)}\n`);
  if (o.prPng) await writePrPng(r.coco, o.prPng, `${model} on ${file} (${ds.images.length} images)`);
  const voc = o.metric === 'voc' ? vocAp50(ds, r.detections) : null;
  if (o.json) {
    const coco = Object.fromEntries(COCO_STAT_NAMES.map((k, i) => [k, r.coco.stats[i]!]));
    process.stdout.write(`${JSON.stringify({ images: ds.images.length, detections: r.detections.length, engine: detector.engine, coco, ...(voc ? { voc } : {}) })}\n`);
    return;
  }
  console.log(`${model} on ${file}, ${detector.engine} engine: ${ds.images.length} images, ${r.detections.length} detections (score > ${scoreThreshold}, ≤ ${maxDetections} per image), ${formatDuration(secs)}`);
  if (r.unmapped) console.log(`${r.unmapped} detections of model classes that are no category of the dataset were left out`);
  if (o.classAgnostic) console.log('class-agnostic (useCats 0): a detection may match a box of any category');
  console.log(formatCocoStats(r.coco.stats, r.coco.params));
  if (voc) {
    console.log('Pascal VOC AP at IoU 0.5 (all points | VOC2007 11-point):');
    const f = (v: number): string => (Number.isNaN(v) ? 'no gt' : v.toFixed(4));
    for (const c of voc.perCategory) console.log(`  ${String(c.id).padStart(3)}  ${c.name.padEnd(20)} ${f(c.ap)} | ${f(c.ap07)}`);
    console.log(`  mAP                       ${f(voc.mAP)} | ${f(voc.mAP07)}`);
  }
  if (o.cocoJson) console.log(`detections (COCO results format): ${o.cocoJson}`);
  if (o.prPng) console.log(`precision-recall curves: ${o.prPng}`);
}
