/** `mnv2 infer | export onnx | predict`: thin wrappers over the library (`mnv2 summary`: summary-command.ts). */
import { existsSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-write.js';
import { Command, Option } from 'commander';
import { buildModel } from '../model/registry.js';
import { initWeights } from '../model/weights.js';
import { loadModelFile, type LoadedWeights } from '../io/weights.js';
import { readSafetensors, toFloat32, writeSafetensors } from '../io/safetensors.js';
import { createClassifier, type EngineName } from '../engine/classifier.js';
import { topK } from '../task/classification.js';
import type { DetectPostprocess } from '../engine/onnx/detect-postprocess.js';
import { SSDLITE, type SsdliteConfig } from '../model/ssdlite.js';
import type { detectOptionsOf } from '../detect/ssdlite-detector.js';
import { loadImages, PRESET_NAMES } from '../data/preprocess.js';
import { LABEL_SET_NAMES, type LabelSetName } from '../data/labels.js';
import { exportMetadataOf } from '../io/metadata.js';
import { BUNDLED_MODEL, inputSpec } from '../api/spec.js';
import { deprecatedAlias, int, num, SEED, THREADS, TOP } from './args.js';
import { archNumbers, archOptions, configFrom, type ArchOpts } from './arch-options.js';
import { refuseInputAsOutput } from '../util/outputs.js';

// Imported from here by the other command modules.
export { ALPHA, RESOLUTION, archNumbers, archOptions, type ArchOpts } from './arch-options.js';

/** The model trained by this project on Fashion-MNIST, used when --weights is not given. */
export const DEFAULT_MODEL = BUNDLED_MODEL;

// detect-postprocess.ts's modes, here so registering the option does not load the ONNX encoder.
const DETECT_POSTPROCESS_MODES: readonly DetectPostprocess[] = ['none', 'decode', 'nms'];

/** Weights from --weights (with --arch etc. for a PyTorch state dict), or the built-in default model. */
export function loadModel(o: ArchOpts & { weights?: string }, allowDefault: boolean): LoadedWeights {
  const hint = { arch: o.arch, ...archNumbers(o) };
  const file = o.weights ?? (allowDefault ? DEFAULT_MODEL : undefined);
  if (!file) throw new Error('--weights FILE is required');
  if (!existsSync(file)) {
    throw new Error(o.weights ? `${file}: no such file` : `no --weights given and the default model ${file} is missing (train one with npm start)`);
  }
  return loadModelFile(file, hint);
}

/** --engine; without a fallback the default is native when the addon is built, else ONNX Runtime. */
export function engineOption(cmd: Command, fallback?: EngineName): Command {
  const opt = new Option('--engine <engine>', `inference engine${fallback ? '' : ' (default: native if built, else ort)'}`).choices(['native', 'ort']);
  return cmd
    .addOption(fallback ? opt.default(fallback) : opt)
    .option('--threads <n>', 'threads (default: all cores)');
}

export function registerModelCommands(program: Command): void {
  engineOption(archOptions(program.command('infer').description('run a batch stored as a tensor (key "input", NCHW float32) and write "logits"')))
    .requiredOption('--weights <file>', 'weights: .safetensors, .pth or a catalogue name (mnv2 weights list)')
    .requiredOption('--input <file>', 'input tensor file (.safetensors)')
    .requiredOption('--output <file>', 'output file (.safetensors)')
    .action(async (o: ArchOpts & { weights: string; input: string; output: string; engine?: EngineName; threads?: string }) => {
      const threads = int(o.threads, '--threads', THREADS);
      archNumbers(o); // every flag checked before any file is read
      refuseInputAsOutput({ path: o.output, flag: '--output' }, [{ path: o.input, flag: '--input' }, { path: o.weights, flag: '--weights' }]);
      const file = readSafetensors(o.input);
      const t = file.tensors.get('input');
      if (!t) throw new Error(`${o.input}: no tensor named 'input' (found: ${[...file.tensors.keys()].join(', ') || 'none'})`);
      if (t.shape.length !== 4) throw new Error(`${o.input}: 'input' must be NCHW (4-D), got shape [${t.shape.join(', ')}]`);
      const [n, c, h, w] = t.shape as [number, number, number, number];
      if (h !== w) throw new Error(`${o.input}: input must be square, got ${h}x${w}`);
      const m = loadModel({ ...o, resolution: o.resolution ?? String(h) }, false);
      if (c !== m.graph.config.inChannels) throw new Error(`${o.input}: input has ${c} channels, the model takes ${m.graph.config.inChannels}`);
      const clf = await createClassifier(m.graph, m.weights, o.engine, threads);
      const logits = await clf.run(toFloat32(t, 'input', o.input), n);
      await clf.release();
      writeSafetensors(o.output, { logits: { dtype: 'F32', shape: [n, m.graph.config.numClasses], data: logits } }, { engine: clf.engine });
      console.error(`wrote logits [${n}, ${m.graph.config.numClasses}] to ${o.output} (${clf.engine})`);
    });

  const exp = program.command('export').description('export a model');
  archOptions(exp.command('onnx').description('ONNX (opset 17, BN folded, dynamic batch; input "input", output "logits")'))
    .option('--weights <file>', 'weights (.safetensors, .pth or a catalogue name)')
    .option('--random-init', 'export freshly initialized weights instead (--seed), e.g. to test a deployment')
    .option('--seed <n>', 'init seed of --random-init', '0')
    .option('--opset <n>', 'ONNX opset (13-23)', '17')
    .option('--fp16', 'store weights and compute in float16 (input/output stay float32)')
    .addOption(new Option('--detect-postprocess <mode>', 'SSDLite: box decoding (decode) and also NonMaxSuppression (nms) in the graph').choices([...DETECT_POSTPROCESS_MODES]).default('none'))
    .option('--score <s>', 'with --detect-postprocess nms: score threshold', '1e-8')
    .option('--max-detections <n>', 'with --detect-postprocess nms: at most this many detections per image (default: the SSD style\'s, tf 100)')
    .requiredOption('--out <file>', 'output .onnx file')
    .action(async (o: ArchOpts & { weights?: string; randomInit?: boolean; seed: string; opset: string; fp16?: boolean; out: string; detectPostprocess: DetectPostprocess; score: string; maxDetections?: string }) => {
      const seed = int(o.seed, '--seed', SEED)!;
      const opset = int(o.opset, '--opset', { min: 13, max: 23 });
      if (!o.weights && !o.randomInit) throw new Error('export onnx: no --weights given; pass --weights FILE, or --random-init to export untrained weights');
      if (o.weights && o.randomInit) throw new Error('export onnx: --weights and --random-init exclude each other');
      refuseInputAsOutput({ path: o.out, flag: '--out' }, [{ path: o.weights, flag: '--weights' }]);
      const m = o.weights ? loadModel(o, false) : (() => {
        const graph = buildModel(configFrom(o));
        return { graph, weights: initWeights(graph, seed), info: { config: graph.config } };
      })();
      const { exportOnnx } = await import('../engine/onnx/export.js');
      let bytes = exportOnnx(m.graph, m.weights, { opset, fp16: o.fp16, ...exportMetadataOf(m) });
      const limits = { scoreThreshold: num(o.score, '--score', { min: 0, max: 1 })!, maxDetections: int(o.maxDetections, '--max-detections', { min: 1, max: 100_000 }) };
      if (o.detectPostprocess !== 'none') bytes = await detectorPostprocess(bytes, m, o.detectPostprocess, limits);
      writeFileAtomic(o.out, bytes);
      console.error(`wrote ${o.out} (${(bytes.length / 1e6).toFixed(2)} MB, opset ${o.opset}${o.fp16 ? ', fp16' : ''})`);
    });

  imageOptions(engineOption(archOptions(program.command('predict').description('classify JPEG/PNG images and print the top-k classes'))))
    .argument('<images...>', 'image files')
    .option('--weights <file>', 'weights (.safetensors, .pth or a catalogue name); default: the bundled Fashion-MNIST model')
    .option('--json', 'print JSON')
    .action(async (images: string[], o: ArchOpts & ImageOpts & { weights?: string; json?: boolean; engine?: EngineName; threads?: string }) => {
      const threads = int(o.threads, '--threads', THREADS);
      const k = int(o.top, '--top', TOP)!;
      const m = loadModel(o, true);
      const cfg = m.graph.config;
      const { preset: p, labels } = inputSpec(m.info, o);
      const clf = await createClassifier(m.graph, m.weights, o.engine, threads);
      const results: { file: string; top: { index: number; label: string; prob: number }[] }[] = [];
      // Fixed-size chunks: memory stays flat however many images (one batch of all of them grew ~2.7 MB per image).
      for (let start = 0; start < images.length; start += PREDICT_CHUNK) {
        const files = images.slice(start, start + PREDICT_CHUNK);
        const logits = await clf.run(await loadImages(files, p, { invert: o.invert }), files.length);
        files.forEach((file, i) => results.push({
          file,
          top: topK(logits, cfg.numClasses, i, k).map((t) => ({ index: t.index, label: labels?.[t.index] ?? String(t.index), prob: t.prob })),
        }));
      }
      await clf.release();
      // Text mode: first on stdout, so it reads with the answers; JSON mode: on stderr, the JSON stays as it was.
      (o.json ? console.error : console.log)(answeringModel(o.weights, cfg.numClasses, labels, clf.engine));
      if (o.json) {
        console.log(JSON.stringify(results, null, 2));
        return;
      }
      for (const r of results) {
        console.log(r.file);
        for (const t of r.top) console.log(`  ${(t.prob * 100).toFixed(2).padStart(6)}%  ${t.label}`);
      }
    });
}

export { inputSpec };

/** Which model answers and with which classes: a photo of anything gets one of them. */
/** An SSDLite export with its post-processing in the graph (an imported file's coder scales and NMS IoU kept). */
async function detectorPostprocess(bytes: Uint8Array, m: { graph: LoadedWeights['graph']; info: Parameters<typeof detectOptionsOf>[0]['info']; metadata?: Record<string, string> }, mode: 'decode' | 'nms', limits: { scoreThreshold: number; maxDetections?: number }): Promise<Uint8Array> {
  const cfg = m.graph.config as SsdliteConfig;
  if (cfg.family !== SSDLITE) throw new Error(`--detect-postprocess is for SSDLite detectors, not a ${cfg.family} model`);
  const [{ addDetectPostprocess }, { detectOptionsOf }, { ssdAnchors }] = await Promise.all([
    import('../engine/onnx/detect-postprocess.js'), import('../detect/ssdlite-detector.js'), import('../detect/anchors.js'),
  ]);
  const d = detectOptionsOf({ metadata: m.metadata ?? {}, info: m.info }, 'the model');
  return addDetectPostprocess(bytes, {
    mode, style: cfg.ssdStyle, anchors: ssdAnchors({ height: cfg.resolution, width: cfg.resolution }), numClasses: cfg.numClasses,
    scales: d.scales, iouThreshold: d.iouThreshold, ...limits,
  });
}

function answeringModel(weights: string | undefined, classes: number, labels: readonly string[] | undefined, engine: EngineName): string {
  const names = labels ? `: ${labels.length <= 12 ? labels.join('; ') : `${labels.slice(0, 3).join('; ')}; ...`}` : ' (no class names)';
  const who = weights ? weights : `the bundled Fashion-MNIST model (${DEFAULT_MODEL}, 28x28 greyscale garments)`;
  const hint = weights ? '' : '\n  (every image gets one of these 10 classes; for ImageNet classes pass --weights with ImageNet weights)';
  return `model: ${who} on ${engine}, ${classes} classes${names}${hint}`;
}

/** Images per model run in `predict`. */
const PREDICT_CHUNK = 16;

export interface ImageOpts {
  preprocess?: string;
  labels?: LabelSetName;
  invert?: boolean;
  top: string;
}

/** Options of the commands that classify images: preprocessing, label list, how many classes to report. */
export function imageOptions(cmd: Command): Command {
  return deprecatedAlias(cmd, 'preset', 'preprocess', PRESET_NAMES)
    .addOption(new Option('--preprocess <name>', 'input preprocessing (default: the model file\'s, else its family\'s)').choices([...PRESET_NAMES]))
    .addOption(new Option('--labels <name>', 'label list').choices([...LABEL_SET_NAMES]))
    .option('--invert', 'invert pixel values (photos of garments on white, for fashion-mnist)')
    .option('--top <k>', 'how many classes to report', '5');
}
