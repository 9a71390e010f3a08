/** `mnv2 quantize`: post-training static int8 quantization (ONNX QDQ, run by ONNX Runtime). */
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-write.js';
import { Command, Option } from 'commander';
import { CALIBRATION_METHODS, evaluateOnnx, type CalibrationMethod } from '../quant/calibrate.js';
import { archOptions, loadModel, type ArchOpts } from './model-commands.js';
import { BATCH, int, num, SEED, THREADS } from './args.js';
import { descriptiveInfo } from '../io/metadata.js';
import { refuseInputAsOutput } from '../util/outputs.js';

interface QuantizeFlags extends ArchOpts {
  weights?: string;
  out: string;
  calibDataset: string;
  data?: string;
  calibImages: string;
  method: CalibrationMethod;
  percentile: string;
  weightBits: '7' | '8';
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
  const info = { info: descriptiveInfo(m.info) };
  const [{ exportOnnx }, { readQatRanges }] = await Promise.all([import('../engine/onnx/export.js'), import('../quant/qat-ranges.js')]);
  const ranges = o.recalibrate ? null : readQatRanges(m.metadata, source);
  const qat = ranges && (await import('../quant/qat.js')).qatOnnx(m.graph, m.weights, ranges, info, undefined, source);
  return { bytes: exportOnnx(m.graph, m.weights, info), source, qat };
}

const mb = (n: number): string => `${(n / 1e6).toFixed(2)} MB`;

export function registerQuantizeCommand(program: Command): void {
  archOptions(program.command('quantize').description('post-training static int8 quantization to ONNX QDQ, run by ONNX Runtime'))
    .option('--weights <file>', 'float32 model: .safetensors, or an .onnx from `mnv2 export onnx`; default: the bundled Fashion-MNIST model')
    .requiredOption('--out <file>', 'output .onnx file')
    .option('--calib-dataset <name|dir>', 'calibration images (train split): fashion-mnist, cifar10 or an image folder', 'fashion-mnist')
    .option('--data <dir>', 'where the dataset is (default: its usual place)')
    .option('--calib-images <n>', 'how many calibration images (a seeded random subset)', '512')
    .addOption(new Option('--method <method>', 'activation range: minmax, percentile (clip each tail), entropy (TensorRT KL)').choices([...CALIBRATION_METHODS]).default('percentile'))
    .option('--percentile <p>', 'percentile kept by --method percentile', '99.99')
    .addOption(new Option('--weight-bits <bits>', '7: no saturation in x86 u8·s8 kernels without VNNI; 8: for VNNI / ARM').choices(['7', '8']).default('7'))
    .option('--seed <n>', 'seed of the calibration subset', '0')
    .option('--batch <n>', 'calibration batch size', '32')
    .option('--threads <n>', 'ONNX Runtime threads (default: all cores)')
    .option('--recalibrate', 'a model trained with --qat: calibrate anew instead of using its trained ranges')
    .option('--eval', 'then evaluate the float32 and int8 models on the test split')
    .option('--json', 'print a JSON summary on stdout')
    .action(async (o: QuantizeFlags) => {
      const threads = int(o.threads, '--threads', THREADS);
      const settings = {
        percentile: num(o.percentile, '--percentile', { above: 50, max: 100 }),
        calibImages: int(o.calibImages, '--calib-images', { min: 1, max: 1_000_000 }),
        seed: int(o.seed, '--seed', SEED),
        batch: int(o.batch, '--batch', BATCH),
      };
      refuseInputAsOutput({ path: o.out, flag: '--out' }, [{ path: o.weights, flag: '--weights' }]);
      const fp32 = await float32Onnx(o);
      const [{ readOnnxConfig }, { OrtModel }, { formatOpCounts, optimizedOpCounts, quantizeOnnx }, { openDataset }] = await Promise.all([
        import('../engine/onnx/export.js'), import('../engine/onnx/session.js'), import('../quant/quantize.js'), import('../data/open.js'),
      ]);
      const cfg = readOnnxConfig(fp32.bytes, fp32.source);
      const calibrated = async (bytes: Uint8Array, source: string, resolution: number) => {
        const calib = await openDataset(o.calibDataset, 'train', { dir: o.data, resolution });
        const q = await quantizeOnnx(bytes, calib, { ...settings, method: o.method, weightBits: Number(o.weightBits) as 7 | 8, threads }, source);
        return {
          bytes: q.bytes, method: o.method, calib: { calibImages: q.calibImages, calibDataset: calib.dataset.name },
          how: `${o.method} ranges of ${q.plan.calibrate.length} tensors from ${q.calibImages} ${calib.dataset.name} images`,
        };
      };
      const t0 = performance.now();
      const r = fp32.qat
        ? { bytes: fp32.qat, how: 'the ranges trained quantization-aware (no calibration; --recalibrate to calibrate)', method: 'qat', calib: {} }
        : await calibrated(fp32.bytes, fp32.source, cfg.resolution);
      const secs = (performance.now() - t0) / 1000;
      writeFileAtomic(o.out, r.bytes);
      const ops = await optimizedOpCounts(r.bytes);
      const summary: Record<string, unknown> = {
        out: o.out, bytes: r.bytes.length, float32Bytes: fp32.bytes.length, method: r.method, ...r.calib, seconds: secs, ortOps: Object.fromEntries(ops),
      };
      const log = o.json ? console.error : console.log;
      log(`wrote ${o.out}: ${mb(r.bytes.length)} (float32 ${mb(fp32.bytes.length)}, ${(fp32.bytes.length / r.bytes.length).toFixed(2)}x smaller); ${r.how} in ${secs.toFixed(1)} s`);
      log(`ONNX Runtime runs it as: ${formatOpCounts(ops)}`);
      if (o.eval) {
        const test = await openDataset(o.calibDataset, 'test', { dir: o.data, resolution: cfg.resolution });
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
