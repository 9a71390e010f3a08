/**
 * `mnv2 import keras | tfjs | tflite | tf-graph`: Keras / TF.js MobileNetV2 or MobileNet, TFLite MobileNetV2 weights, a TF OD API
 * frozen SSDLite graph -> a model file that infer, predict, eval, export (and detect, for detectors) take as is.
 */
import path from 'node:path';
import type { Command } from 'commander';
import type { TfliteImport } from '../io/tflite-mobilenetv2.js';
import type { ImportedModel, KerasImportOptions } from '../io/keras-names.js';
import { saveWeights } from '../io/weights.js';
import { encodeModelInfo, type ModelInfoInput } from '../io/metadata.js';
import { int, SEED } from './args.js';
import { archNumbers } from './model-commands.js';
import { refuseInputAsOutput } from '../util/outputs.js';
import { MOBILENETV1 } from '../model/mobilenetv1.js';

interface ImportOpts {
  out: string;
  alpha?: string;
  resolution?: string;
  classes?: string;
  seed: string;
}

const HELP = `
The model file gets Keras's exact computation: TF 'same' padding (0 before, 1 after on stride-2 convs),
BN eps 1e-3, ReLU6, and the 'keras' preprocessing preset ([-1, 1]) as metadata.
A file without a top (_no_top, or include_top=False) has no classifier: pass --classes N to add a freshly
initialized N-class head (seeded by --seed), then fine-tune it, e.g.
  mnv2 train --dataset ./photos --weights OUT --freeze-backbone`;

function importOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--out <file>', 'output model file (.safetensors)')
    .option('--alpha <alpha>', 'width multiplier (default: from the file/model name, else from the weight shapes)')
    .option('--resolution <px>', 'input size, a multiple of 32 (default: from the file name or topology, else 224)')
    .option('--classes <n>', 'files without a top only: classes of a freshly initialized head')
    .option('--seed <n>', 'init seed of that head', '0')
    .addHelpText('after', HELP);
}

/** The numeric flags, checked, once the output is known not to be the input. */
function options(file: string, o: ImportOpts): KerasImportOptions {
  refuseInputAsOutput({ path: o.out, flag: '--out' }, [{ path: file, flag: 'the imported file' }]);
  return { ...archNumbers(o), seed: int(o.seed, '--seed', SEED) };
}

function save(m: ImportedModel, source: string, o: ImportOpts, info: Omit<ModelInfoInput, 'config' | 'source'> = { preprocess: 'keras' }): void {
  saveWeights(o.out, m.graph, m.weights, new Map(), encodeModelInfo({ config: m.graph.config, source: path.basename(source), ...info }));
  const c = m.graph.config;
  const head = m.head === 'imported' ? `head ${m.headLayer}` : `fresh head (seed ${o.seed}): fine-tune it before use`;
  const family = c.family === MOBILENETV1 ? 'MobileNetV1' : 'MobileNetV2';
  console.error(`wrote ${o.out}: ${family} α ${c.alpha} @ ${c.resolution}, ${c.numClasses} classes (${head}), Keras padding, BN eps ${c.bnEps}, preset ${info.preprocess}`);
}

export function registerImportCommands(program: Command): void {
  const imp = program.command('import').description('import Keras (.h5), TF.js (model.json) MobileNetV2 or MobileNet (V1), TFLite MobileNetV2 weights, or a TF OD API SSDLite frozen graph');
  importOptions(imp.command('keras').description('a Keras MobileNetV2 or MobileNet weight file (mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}[_no_top].h5, mobilenet_{1_0|7_5|5_0|2_5}_{rows}_tf[_no_top].h5)'))
    .argument('<file>', 'Keras .h5 weight file (save_weights or keras.applications)')
    .action(async (file: string, o: ImportOpts) => save(await (await import('../io/keras.js')).importKerasH5(file, options(file, o)), file, o));
  importOptions(imp.command('tfjs').description('a TF.js layers model of a Keras MobileNetV2 or MobileNet, any single-Dense head; uint8/uint16/float16-quantized weights too'))
    .argument('<model.json>', 'model.json with its weight shards beside it')
    .action(async (file: string, o: ImportOpts) => save((await import('../io/tfjs.js')).importTfjs(file, options(file, o)), file, o));
  importOptions(imp.command('tflite').description("a MobileNetV2 classifier in TFLite (TF-slim or Keras names; uint8/int8 weights dequantized, BN already folded); 1001 classes = background + ImageNet"))
    .argument('<file>', '.tflite model')
    .action(async (file: string, o: ImportOpts) => {
      if ((await import('../io/tflite-ssdlite.js')).isSsdliteTflite(file)) return saveSsdlite(file, o);
      const m = (await import('../io/tflite-mobilenetv2.js')).importTflite(file, options(file, o));
      checkTfliteInput(m, file);
      // TF-slim's eval preprocessing; 1001 classes are TF-slim's background + ImageNet
      save(m, file, o, { preprocess: 'tf-slim', ...(m.graph.config.numClasses === 1001 ? { labels: 'imagenet-background' } : {}) });
    });
  imp.command('tf-graph')
    .description("a TF Object Detection API SSDLite-MobileNetV2 frozen graph (frozen_inference_graph.pb; BN unfolded); α, classes and input size from the graph")
    .argument('<file>', 'frozen GraphDef (.pb)')
    .requiredOption('--out <file>', 'output model file (.safetensors)')
    .action(async (file: string, o: { out: string }) => {
      refuseInputAsOutput({ path: o.out, flag: '--out' }, [{ path: file, flag: 'the imported file' }]);
      const m = (await import('../io/tf-graph-ssdlite.js')).importTfGraphSsdliteTo(file, o.out, path.basename(file));
      const c = m.graph.config;
      const labels = c.numClasses === 90 ? ', COCO labels' : '';
      const p = m.postprocess;
      const post = p ? `; from its Postprocessor: ${Object.entries(p).map(([k, v]) => `${k} ${+v.toPrecision(6)}`).join(', ')}` : '; no Postprocessor constants (the defaults apply)';
      console.error(`wrote ${o.out}: SSDLite MobileNetV2 α ${c.alpha} @ ${c.resolution} (input size: ${m.resolution.from}), ${c.numClasses} classes + background${labels}, TF 'SAME' padding, BN eps ${c.bnEps}, preset keras ([-1, 1])${post}`);
    });
}

/** A TF OD API SSDLite-MobileNetV2 export: the detector, its post-processing options as metadata. */
async function saveSsdlite(file: string, o: ImportOpts): Promise<void> {
  refuseInputAsOutput({ path: o.out, flag: '--out' }, [{ path: file, flag: 'the imported file' }]);
  const [{ importTfliteSsdlite }, { POSTPROCESS_KEY }] = await Promise.all([import('../io/tflite-ssdlite.js'), import('../detect/ssdlite-detector.js')]);
  const m = importTfliteSsdlite(file);
  const info = encodeModelInfo({ config: m.graph.config, source: path.basename(file), preprocess: 'keras' });
  saveWeights(o.out, m.graph, m.weights, new Map(), { ...info, ...(m.postprocess ? { [POSTPROCESS_KEY]: JSON.stringify(m.postprocess) } : {}) });
  const c = m.graph.config;
  console.error(`wrote ${o.out}: SSDLite MobileNetV2 α ${c.alpha} @ ${c.resolution}, ${c.numClasses} classes + background${m.postprocess ? ', TFLite_Detection_PostProcess options as metadata' : ''}`);
}

/** The 'tf-slim' preset feeds [-1, 1]: a quantized input must mean the same (TF-slim: q/128 - 1). */
function checkTfliteInput(m: TfliteImport, file: string): void {
  const { scale, zeroPoint } = m.input;
  if (scale === undefined) return;
  const [qmin, qmax] = m.input.type === 'int8' ? [-128, 127] : [0, 255];
  const lo = scale * (qmin - zeroPoint!);
  const hi = scale * (qmax - zeroPoint!);
  if (Math.abs(lo + 1) > 0.02 || Math.abs(hi - 1) > 0.02) {
    console.error(`${file}: note: the quantized input spans [${lo.toFixed(3)}, ${hi.toFixed(3)}], not [-1, 1]; pass --preprocess to predict accordingly`);
  }
}
