/**
 * Serving: `mnv2 serve`, the HTTP inference server (src/serve) on a weights file, an ONNX file or the bundled
 * model, and `mnv2 export triton`, a model repository for NVIDIA Triton Inference Server.
 */
import path from 'node:path';
import { Option, type Command } from 'commander';
import { createClassifier, onnxFileClassifier, type Classifier, type EngineName } from '../engine/classifier.js';
import { LABEL_SET_NAMES, type LabelSetName } from '../data/labels.js';
import { PRESET_NAMES } from '../data/preprocess.js';
import { descriptiveInfo, type ModelInfo } from '../io/metadata.js';
import type { RunningServer, ServedDetector } from '../serve/server.js';
import { SSDLITE, type SsdliteConfig } from '../model/ssdlite.js';
import type { LoadedWeights } from '../io/weights.js';
import type { Preset } from '../data/preprocess.js';
import { archOptions, engineOption, imageOptions, inputSpec, loadModel, type ArchOpts, type ImageOpts } from './model-commands.js';
import { BATCH, deprecatedAlias, int, num, THREADS, TOP } from './args.js';

interface ServeOpts extends ArchOpts, ImageOpts {
  score: string;
  maxDetections: string;
  weights?: string;
  onnx?: string;
  engine: EngineName;
  threads?: string;
  host: string;
  port: string;
  maxBatch: string;
  maxWaitMs: string;
  maxQueue: string;
  bodyLimit: string;
  shutdownGrace: string;
}

const UNITS: Record<string, number> = { '': 1, b: 1, kb: 1024, mb: 1 << 20, gb: 1 << 30 };

/** '10mb', '512kb', '1048576' -> bytes. */
function parseBytes(v: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]?b)?\s*$/i.exec(v);
  const n = m ? Math.floor(Number(m[1]) * UNITS[(m[2] ?? '').toLowerCase()]!) : NaN;
  if (!(n >= 1)) throw new Error(`${flag} expects a size such as 10mb, 512kb or 1048576, got '${v}'`);
  return n;
}

interface OpenedModel {
  classifier: Classifier;
  info: ModelInfo;
  name: string;
  /** A detector's preprocessing, class names and row decoding (POST /v1/detect). */
  detector?: { preset: Preset; labels?: readonly string[]; served: ServedDetector };
}

async function openModel(o: ServeOpts, threads: number | undefined): Promise<OpenedModel> {
  if (o.onnx) {
    if (o.weights) throw new Error('give either --weights or --onnx, not both');
    if (o.engine !== 'ort') throw new Error('--onnx runs on ONNX Runtime: use --engine ort (the default), or --weights for the native engine');
    return { ...(await onnxFileClassifier(o.onnx, threads, 'serve it with --weights (its model file)')), name: path.basename(o.onnx) };
  }
  const m = loadModel(o, true);
  const name = o.weights ? path.basename(o.weights) : 'fashion-mnist (bundled)';
  if (m.graph.config.family === SSDLITE) return openDetector(o, m, name, threads);
  return { classifier: await createClassifier(m.graph, m.weights, o.engine, threads), info: m.info, name };
}

/** An SSDLite model file on ONNX Runtime or the native engine behind the batcher (one row of raw outputs per image). */
async function openDetector(o: ServeOpts, m: LoadedWeights, name: string, threads: number | undefined): Promise<OpenedModel> {
  const scoreThreshold = num(o.score, '--score', { min: 0, max: 1 })!;
  const maxDetections = int(o.maxDetections, '--max-detections', { min: 1, max: 100_000 })!;
  const { detectorPreset, openSsdlite } = await import('../detect/ssdlite-detector.js'); // ONNX Runtime, sharp
  const { detector, options } = await openSsdlite(m, name, threads, o.engine);
  const post = { ...options, scoreThreshold, maxDetections };
  return {
    classifier: { engine: detector.engine, run: (x, n) => detector.forwardRows(x, n), release: () => detector.release() },
    info: m.info,
    name,
    detector: {
      preset: detectorPreset(m.graph.config.resolution),
      labels: options.classNames,
      served: { rowSize: detector.rowSize, detect: (row, w, h) => detector.rowDetections(row, w, h, post) },
    },
  };
}

/** One zero image through the model before listening: a model the server cannot feed fails here, not on every request. */
async function checkFeeds(clf: Classifier, [c, h, w]: [number, number, number], name: string): Promise<void> {
  try {
    await clf.run(new Float32Array(c * h * w), 1);
  } catch (e) {
    throw new Error(`${name}: cannot run on a 1×${c}×${h}×${w} float32 batch as the server feeds it (${(e as Error).message.trim()}); serve a model exported by mnv2 export onnx`);
  }
}

/** A detector's Triton outputs: raw codes and logits, or (decode) normalized boxes and sigmoid scores, per image. */
async function tritonDetector(m: LoadedWeights, mode: 'none' | 'decode') {
  const [{ detectOptionsOf, detectorPreset }, { ssdAnchors }, { addDetectPostprocess }] = await Promise.all([
    import('../detect/ssdlite-detector.js'), import('../detect/anchors.js'), import('../engine/onnx/detect-postprocess.js'),
  ]);
  const cfg = m.graph.config as SsdliteConfig;
  const anchors = ssdAnchors({ height: cfg.resolution, width: cfg.resolution });
  const options = detectOptionsOf(m, 'the model');
  const tf = cfg.ssdStyle === 'tf';
  const [boxes, scores] = mode === 'decode' ? ['decoded_boxes', 'scores'] : ['boxes', 'logits'];
  return {
    spec: { preset: detectorPreset(cfg.resolution), labels: options.classNames },
    outputs: [{ name: boxes, dims: [anchors.count, 4] }, { name: scores, dims: [anchors.count, cfg.numClasses + 1] }],
    transform: mode === 'decode'
      ? (bytes: Uint8Array) => addDetectPostprocess(bytes, { mode: 'decode', style: cfg.ssdStyle, anchors, numClasses: cfg.numClasses, scales: options.scales })
      : undefined,
    note: mode === 'decode'
      ? `outputs: decoded_boxes (normalized x1, y1, x2, y2 per anchor) and scores (${tf ? 'sigmoid' : 'softmax'}, column 0 background); per-class NMS is the client's.`
      : `outputs: boxes (${tf ? 'ty, tx, th, tw' : 'dx, dy, dw, dh'} codes per SSD anchor) and logits (column 0 background); decode + NMS as src/detect/postprocess.ts.`,
  };
}

export function registerServeCommands(program: Command): void {
  imageOptions(engineOption(archOptions(program.command('serve').description('HTTP inference server: POST an image to /v1/classify (a detector: /v1/detect); /healthz, /metrics')), 'ort'))
    .option('--weights <file>', 'weights (.safetensors, .pth or a catalogue name); default: the bundled Fashion-MNIST model')
    .option('--onnx <file>', 'serve an ONNX model exported by mnv2 (ONNX Runtime) instead of --weights')
    .option('--score <s>', 'detectors: score threshold of the detections returned', '0.5')
    .option('--max-detections <n>', 'detectors: at most this many detections per image', '100')
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port (0: any free port)', '8080')
    .option('--max-batch <n>', 'most images per model run (1: no batching)', '32')
    .option('--max-wait-ms <ms>', 'how long the first queued image waits for a batch to fill', '5')
    .option('--max-queue <n>', 'most requests in progress at once; more get 503 with Retry-After', '256')
    .option('--body-limit <size>', 'largest request body (413 beyond it)', '10mb')
    .option('--shutdown-grace <s>', 'on SIGINT/SIGTERM, seconds unfinished requests may take before their connections are cut', '10')
    .addHelpText('after', '\nThe bound address is printed on stdout as "listening on http://HOST:PORT". SIGINT/SIGTERM: close idle connections, finish the requests in progress (cut after --shutdown-grace), then exit 0.')
    .action(async (o: ServeOpts) => {
      const maxBatch = int(o.maxBatch, '--max-batch', BATCH)!;
      const maxWaitMs = num(o.maxWaitMs, '--max-wait-ms', { min: 0, max: 60_000 })!;
      const graceS = num(o.shutdownGrace, '--shutdown-grace', { min: 0, max: 3600 })!;
      const threads = int(o.threads, '--threads', THREADS);
      const settings = {
        host: o.host,
        port: int(o.port, '--port', { min: 0, max: 65535 })!,
        maxBatch,
        maxWaitMs,
        maxQueue: int(o.maxQueue, '--max-queue', { min: 1, max: 1_000_000 })!,
        bodyLimit: parseBytes(o.bodyLimit, '--body-limit'),
        top: int(o.top, '--top', TOP)!,
        shutdownGraceMs: graceS * 1000,
      };
      const m = await openModel(o, threads);
      const cfg = m.info.config;
      let spec: ReturnType<typeof inputSpec>;
      let srv: RunningServer;
      try {
        spec = m.detector ? { preset: m.detector.preset, labels: m.detector.labels } : inputSpec(m.info, o);
        await checkFeeds(m.classifier, [cfg.inChannels, cfg.resolution, cfg.resolution], m.name);
        const { startServer } = await import('../serve/server.js'); // fastify: only for this command
        srv = await startServer({
          ...settings,
          classifier: m.classifier,
          detector: m.detector?.served,
          inputShape: [cfg.inChannels, cfg.resolution, cfg.resolution],
          numClasses: cfg.numClasses,
          preset: spec.preset,
          labels: spec.labels,
          invert: o.invert,
          modelName: m.name,
          // Decoding is bounded by pixels too: a small PNG can expand to gigabytes.
          maxPixels: 50_000_000,
        });
      } catch (e) {
        await m.classifier.release();
        throw e;
      }
      console.log(`listening on ${srv.url} (model ${m.name}${m.detector ? ', detector: POST /v1/detect' : ''}, engine ${m.classifier.engine}, preset ${spec.preset.name}, max batch ${maxBatch}, max wait ${maxWaitMs} ms)`);
      const stop = (signal: NodeJS.Signals): void => {
        console.error(`mnv2 serve: ${signal}: finishing the requests in progress`);
        srv.close().then(
          (r) => {
            if (r.cut) console.error(`mnv2 serve: ${r.cut} unfinished request(s) cut after the ${graceS} s grace period (--shutdown-grace)`);
            console.error('mnv2 serve: stopped');
          },
          (e: unknown) => {
            console.error(`mnv2 serve: shutdown failed: ${e instanceof Error ? e.message : String(e)}`);
            process.exitCode = 1;
          },
        );
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });

  const exp = program.commands.find((c) => c.name() === 'export');
  if (!exp) throw new Error('mnv2: the export command must be registered before the serving commands');
  deprecatedAlias(archOptions(exp.command('triton').description('a Triton Inference Server model repository: DIR/NAME/config.pbtxt + DIR/NAME/1/model.onnx'))
    .argument('<dir>', 'model repository directory (created if missing)'), 'preset', 'preprocess', PRESET_NAMES)
    .option('--weights <file>', 'weights (.safetensors, .pth or a catalogue name); default: the bundled Fashion-MNIST model')
    .option('--name <name>', 'model name (its directory in the repository)', 'mobilenetv2')
    .option('--max-batch <n>', 'max_batch_size', '128')
    .option('--preferred-batch <sizes>', 'dynamic batcher preferred batch sizes, comma-separated (capped at --max-batch)', '16,32')
    .option('--max-queue-delay-us <us>', 'dynamic batcher max_queue_delay_microseconds', '5000')
    .option('--instances <n>', 'CPU instances (instance_group count)', '1')
    .addOption(new Option('--preprocess <name>', 'preprocessing the clients must apply (noted in config.pbtxt)').choices([...PRESET_NAMES]))
    .addOption(new Option('--labels <name>', 'label list for labels.txt').choices([...LABEL_SET_NAMES]))
    .option('--fp16', 'float16 weights and compute (input and output stay float32)')
    .addOption(new Option('--detect-postprocess <mode>', 'SSDLite: raw outputs (none) or box decoding + sigmoid in the graph (decode)').choices(['none', 'decode']).default('none'))
    .option('--force', 'replace an existing model directory')
    .action(async (dir: string, o: ArchOpts & { weights?: string; name: string; maxBatch: string; preferredBatch: string; maxQueueDelayUs: string; instances: string; preprocess?: string; labels?: LabelSetName; fp16?: boolean; force?: boolean; detectPostprocess: 'none' | 'decode' }) => {
      const maxBatch = int(o.maxBatch, '--max-batch', BATCH)!;
      const preferred = [...new Set(o.preferredBatch.split(',').filter((s) => s.trim()).map((s) => Math.min(int(s.trim(), '--preferred-batch', BATCH)!, maxBatch)))];
      const maxQueueDelayUs = int(o.maxQueueDelayUs, '--max-queue-delay-us', { min: 0, max: 60_000_000 })!;
      const instances = int(o.instances, '--instances', { min: 1, max: 1024 })!;
      const m = loadModel(o, true);
      const det = m.graph.config.family === SSDLITE ? await tritonDetector(m, o.detectPostprocess) : null;
      if (!det && o.detectPostprocess !== 'none') throw new Error(`--detect-postprocess is for SSDLite detectors, not a ${m.graph.config.family} model`);
      const spec = det ? det.spec : inputSpec(m.info, o);
      const { exportTriton } = await import('../engine/onnx/triton.js');
      const modelDir = exportTriton(dir, m.graph, m.weights, {
        ...(det ? { outputs: det.outputs, transform: det.transform } : {}),
        name: o.name,
        maxBatch,
        preferredBatch: preferred,
        maxQueueDelayUs,
        instances,
        labels: spec.labels,
        fp16: o.fp16,
        force: o.force,
        info: descriptiveInfo(m.info),
        notes: [
          `Written by mobilenetv2-ts (mnv2 export triton) from ${o.weights ?? 'the bundled Fashion-MNIST model'}.`,
          `input: float32 NCHW, images preprocessed with mnv2's '${spec.preset.name}' preset; ${det ? det.note : 'output: logits (softmax gives probabilities).'}`,
        ],
      });
      console.error(`wrote ${modelDir}/config.pbtxt, ${modelDir}/1/model.onnx${spec.labels ? ` and ${modelDir}/labels.txt` : ''}${o.fp16 ? ' (fp16)' : ''}`);
    });
}
