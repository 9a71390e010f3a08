/**
 * `mnv2 quantize`: post-training static int8 quantization (ONNX QDQ, run by ONNX Runtime) of a classifier or an
 * SSDLite detector (calibrated on detection photos; `--eval` scores both models' COCO AP on a COCO-format set).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.js';
import { Command, Option } from 'commander';
import { CALIBRATION_METHODS, evaluateOnnx, type CalibrationMethod } from '../quant/calibrate.js';
import { archOptions, loadModel, type ArchOpts } from './model-commands.js';
import { BATCH, int, num, SEED, THREADS } from './args.js';
import { exportMetadataOf } from '../io/metadata.js';
import { SSDLITE } from '../model/ssdlite.js';
import type { BaseConfig } from '../model/family.js';
import { refuseInputAsOutput } from '../util/outputs.js';

interface QuantizeFlags extends ArchOpts {
  weights?: string;
  out: string;
  calibDataset?: string;
  evalDataset?: string;
  data?: string;
  calibImages: string;
  method: CalibrationMethod;
  percentile: string;
  weightBits: '7' | '8';
  floatConvs: string;
  seed: string;
  batch: string;
  threads?: string;
  eval?: boolean;
  json?: boolean;
  recalibrate?: boolean;
}

/**
 * The float32 model as ONNX bytes: an .onnx file as it is, else weights exported (BN folded); and for a model
 * trained quantization-aware (`mnv2 train --qat`), its int8 model from the trained ranges.
 */
async function float32Onnx(o: QuantizeFlags): Promise<{ bytes: Uint8Array; source: string; qat: Uint8Array | null }> {
  if (o.weights?.endsWith('.onnx')) {
    if (!existsSync(o.weights)) throw new Error(`${o.weights}: no such file`);
    return { bytes: new Uint8Array(readFileSync(o.weights)), source: o.weights, qat: null };
  }
  const m = loadModel(o, true);
  const source = o.weights ?? 'the bundled Fashion-MNIST model';
  const meta = exportMetadataOf(m);
  const [{ exportOnnx }, { readQatRanges }] = await Promise.all([import('../engine/onnx/export.js'), import('../quant/qat-ranges.js')]);
  const ranges = o.recalibrate ? null : readQatRanges(m.metadata, source);
  const qat = ranges && (await import('../quant/qat.js')).qatOnnx(m.graph, m.weights, ranges, meta, undefined, source);
  return { bytes: exportOnnx(m.graph, m.weights, meta), source, qat };
}

/** A detector's calibration photos: a COCO JSON, a folder with train.json, or a folder of images. */
async function detectorCalibration(o: QuantizeFlags, cfg: BaseConfig) {
  if (!o.calibDataset) throw new Error('quantize: a detector needs --calib-dataset (a COCO JSON, a folder with train.json, or a folder of images, e.g. data/fashion-detect/train)');
  const { calibrationFiles, detectorImages } = await import('../detect/calibration.js');
  return detectorImages(await calibrationFiles(o.calibDataset), cfg.resolution, o.calibDataset);
}

/** The COCO set --eval scores a detector on: --eval-dataset, else the test.json in or beside the calibration folder. */
function detectorEvalSet(o: QuantizeFlags): string {
  // A split's image folder (data/fashion-detect/train) sits beside the set's test.json.
  const set = o.evalDataset ?? (o.calibDataset ? [o.calibDataset, dirname(o.calibDataset)].find((d) => existsSync(join(d, 'test.json'))) : undefined);
  if (!set) throw new Error('quantize --eval of a detector: give --eval-dataset (a COCO JSON, or a folder with test.json)');
  return set;
}

/**
 * COCO AP of the float32 and the int8 detector on the same set, as `mnv2 eval --task detect` scores each
 * ONNX file (score > 1e-8, ≤ 100 detections per image): the mAP cost of quantization.
 */
async function evalDetectors(models: readonly (readonly [string, Uint8Array])[], setPath: string, threads: number | undefined) {
  const [{ loadCocoDetection }, { evaluateDetector }, { SsdliteDetector, detectOptionsOf }, { cocoSplitFile }, { readOnnxInfo, decodeOnnx, onnxProps }, { buildModel }, { COCO_STAT_NAMES }, { SSDLITE_NMS }] = await Promise.all([
    import('../detect/dataset.js'), import('../detect/evaluate.js'), import('../detect/ssdlite-detector.js'), import('../detect/train-data.js'),
    import('../engine/onnx/export.js'), import('../model/registry.js'), import('../detect/coco-eval.js'), import('../detect/nms.js'),
  ]);
  const file = cocoSplitFile(setPath, 'test');
  const ds = await loadCocoDetection(file, dirname(file));
  const coco: Record<string, Record<string, number>> = {};
  for (const [name, bytes] of models) {
    const info = readOnnxInfo(bytes, name);
    const det = await SsdliteDetector.fromOnnx(bytes, buildModel(info.config) as Parameters<typeof SsdliteDetector.fromOnnx>[1], threads);
    try {
      const options = detectOptionsOf({ metadata: onnxProps(decodeOnnx(bytes, name)), info }, name);
      // eval --task detect's defaults (before: detect's drawing threshold 0.3, which cut AP50 0.396 to 0.225 on a trained model)
      const r = await evaluateDetector(det.imageDetector({ ...options, scoreThreshold: SSDLITE_NMS.scoreThreshold, maxDetections: SSDLITE_NMS.maxTotal }), ds);
      coco[name] = Object.fromEntries(COCO_STAT_NAMES.map((k, i) => [k, r.coco.stats[i]!]));
    } finally {
      await det.release();
    }
  }
  return { dataset: file, images: ds.images.length, coco };
}

const mb = (n: number): string => `${(n / 1e6).toFixed(2)} MB`;

export function registerQuantizeCommand(program: Command): void {
  archOptions(program.command('quantize').description('post-training static int8 quantization to ONNX QDQ, run by ONNX Runtime (classifiers and SSDLite detectors)'))
    .argument('[model]', 'the float32 model (same as --weights)')
    .option('--weights <file>', 'float32 model: .safetensors, or an .onnx from `mnv2 export onnx`; default: the bundled Fashion-MNIST model')
    .requiredOption('--out <file>', 'output .onnx file')
    .option('--calib-dataset <name|dir>', 'calibration images (train split): fashion-mnist (default), cifar10 or an image folder; a detector: a COCO JSON, a folder with train.json, or a folder of images')
    .option('--data <dir>', 'where the dataset is (default: its usual place)')
    .option('--calib-images <n>', 'how many calibration images (a seeded random subset)', '512')
    .addOption(new Option('--method <method>', 'activation range: minmax, percentile (clip each tail), entropy (TensorRT KL)').choices([...CALIBRATION_METHODS]).default('percentile'))
    .option('--percentile <p>', 'percentile kept by --method percentile', '99.99')
    .addOption(new Option('--weight-bits <bits>', '7: no saturation in x86 u8·s8 kernels without VNNI; 8: for VNNI / ARM').choices(['7', '8']).default('7'))
    .option('--float-convs <n>', 'leave the first n convs in float32 (early layers with a few live channels, which per-tensor uint8 erases; see mnv2 diagnose)', '0')
    .option('--seed <n>', 'seed of the calibration subset', '0')
    .option('--batch <n>', 'calibration batch size', '32')
    .option('--threads <n>', 'ONNX Runtime threads (default: all cores)')
    .option('--recalibrate', 'a model trained with --qat: calibrate anew instead of using its trained ranges')
    .option('--eval', 'then evaluate the float32 and int8 models on the test split (a detector: COCO AP on --eval-dataset)')
    .option('--eval-dataset <json|dir>', 'detectors: the COCO set of --eval (a JSON, or a folder with test.json; default: --calib-dataset\'s test.json)')
    .option('--json', 'print a JSON summary on stdout')
    .action(async (model: string | undefined, o: QuantizeFlags) => {
      if (model !== undefined && o.weights !== undefined && model !== o.weights) throw new Error(`quantize: the model is given twice (${model} and --weights ${o.weights})`);
      o.weights ??= model;
      const threads = int(o.threads, '--threads', THREADS);
      const settings = {
        percentile: num(o.percentile, '--percentile', { above: 50, max: 100 }),
        calibImages: int(o.calibImages, '--calib-images', { min: 1, max: 1_000_000 }),
        seed: int(o.seed, '--seed', SEED),
        batch: int(o.batch, '--batch', BATCH),
        floatConvs: int(o.floatConvs, '--float-convs', { min: 0, max: 100_000 }),
      };
      refuseInputAsOutput({ path: o.out, flag: '--out' }, [{ path: o.weights, flag: '--weights' }]);
      const fp32 = await float32Onnx(o);
      const [{ readOnnxConfig }, { OrtModel }, { formatOpCounts, optimizedOpCounts, quantizeOnnx }, { openDataset }] = await Promise.all([
        import('../engine/onnx/export.js'), import('../engine/onnx/session.js'), import('../quant/quantize.js'), import('../data/open.js'),
      ]);
      const cfg = readOnnxConfig(fp32.bytes, fp32.source);
      const detector = cfg.family === SSDLITE;
      if (o.evalDataset && !detector) throw new Error('quantize: --eval-dataset is for detectors; a classifier is evaluated on --calib-dataset\'s test split');
      const evalSet = o.eval && detector ? detectorEvalSet(o) : null; // checked before the calibration runs
      const calibrated = async () => {
        const calib = detector ? await detectorCalibration(o, cfg) : await openDataset(o.calibDataset ?? 'fashion-mnist', 'train', { dir: o.data, resolution: cfg.resolution });
        const calibName = 'dataset' in calib ? calib.dataset.name : calib.name;
        const q = await quantizeOnnx(fp32.bytes, calib, { ...settings, method: o.method, weightBits: Number(o.weightBits) as 7 | 8, threads }, fp32.source);
        return {
          bytes: q.bytes, method: o.method, calib: { calibImages: q.calibImages, calibDataset: calibName },
          how: `${o.method} ranges of ${q.plan.calibrate.length} tensors from ${q.calibImages} ${calibName} images`,
        };
      };
      if (fp32.qat && settings.floatConvs) throw new Error('quantize: --float-convs calibrates anew; a model trained with --qat needs --recalibrate for it');
      const t0 = performance.now();
      const r = fp32.qat
        ? { bytes: fp32.qat, how: 'the ranges trained quantization-aware (no calibration; --recalibrate to calibrate)', method: 'qat', calib: {} }
        : await calibrated();
      const secs = (performance.now() - t0) / 1000;
      writeFileAtomic(o.out, r.bytes);
      const ops = await optimizedOpCounts(r.bytes);
      const summary: Record<string, unknown> = {
        out: o.out, bytes: r.bytes.length, float32Bytes: fp32.bytes.length, method: r.method, ...r.calib, seconds: secs, ortOps: Object.fromEntries(ops),
      };
      const log = o.json ? console.error : console.log;
      log(`wrote ${o.out}: ${mb(r.bytes.length)} (float32 ${mb(fp32.bytes.length)}, ${(fp32.bytes.length / r.bytes.length).toFixed(2)}x smaller); ${r.how} in ${secs.toFixed(1)} s`);
      log(`ONNX Runtime runs it as: ${formatOpCounts(ops)}`);
      if (evalSet) {
        const e = await evalDetectors([['float32', fp32.bytes], ['int8', r.bytes]], evalSet, threads);
        summary.eval = e;
        const [f, q] = [e.coco['float32']!, e.coco['int8']!];
        for (const k of ['AP', 'AP50'] as const) {
          log(`COCO ${k} on ${e.images} images of ${e.dataset}: float32 ${f[k]!.toFixed(4)}, int8 ${q[k]!.toFixed(4)} (${(q[k]! - f[k]!).toFixed(4)})`);
        }
      } else if (o.eval) {
        const test = await openDataset(o.calibDataset ?? 'fashion-mnist', 'test', { dir: o.data, resolution: cfg.resolution });
        const top1: Record<string, number> = {};
        for (const [name, bytes] of [['float32', fp32.bytes], ['int8', r.bytes]] as const) {
          const m = await OrtModel.create(bytes, { threads });
          try {
            top1[name] = (await evaluateOnnx(m, test.dataset, test.input)).top1;
          } finally {
            await m.release();
          }
        }
        summary.eval = { dataset: test.dataset.name, images: test.dataset.count, top1 };
        log(`top-1 on ${test.dataset.count} ${test.dataset.name} images: float32 ${(100 * top1.float32!).toFixed(2)}%, int8 ${(100 * top1.int8!).toFixed(2)}% ` +
          `(${(100 * (top1.int8! - top1.float32!)).toFixed(2)} points)`);
      }
      if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    });
}
