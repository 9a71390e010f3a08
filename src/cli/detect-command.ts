/** `mnv2 detect photo.jpg --weights W`: an SSDLite model's detections, drawn and/or as JSON. */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { writeFileAtomic } from '../util/atomic-write.js';
import { refuseInputAsOutput } from '../util/outputs.js';
import { int, num, THREADS } from './args.js';
import { engineOption } from './model-commands.js';
import type { EngineName } from '../engine/classifier.js';

interface DetectOpts {
  weights?: string;
  out?: string;
  json?: boolean;
  score: string;
  max: string;
  threads?: string;
  engine: EngineName;
}

/** Joins the `detect` group of src/cli/detect-data-commands.ts (`detect coco-eval`) when it exists: `mnv2 detect photo.jpg`. */
export function registerDetectCommand(program: Command): void {
  // options after a subcommand name are the subcommand's (`detect coco-eval --json`), not these (main.ts enables it above)
  engineOption((program.commands.find((c) => c.name() === 'detect') ?? program.command('detect')).enablePositionalOptions(), 'ort')
    .description('detect objects in a photo with an SSDLite model (mnv2 import tflite of a TF OD API export), or a detection tool')
    .argument('[image]', 'photo (any format sharp reads)')
    .option('--weights <file>', 'SSDLite model file (.safetensors with metadata), or its ONNX export (raw outputs, float32 or int8) on ONNX Runtime')
    .option('--out <file>', 'write the photo with the boxes drawn (PNG)')
    .option('--json', 'print the detections as JSON')
    .option('--score <s>', 'score threshold (0.5, as the TF OD API draws; lower it to see more)', '0.5')
    .option('--max <n>', 'at most this many detections', '100')
    .action(async (image: string | undefined, o: DetectOpts) => {
      if (image === undefined) throw new Error('detect: an image is required (or a subcommand, e.g. detect coco-eval)');
      const scoreThreshold = num(o.score, '--score', { min: 0, max: 1 })!;
      const maxDetections = int(o.max, '--max', { min: 1, max: 100_000 })!;
      const threads = int(o.threads, '--threads', THREADS);
      if (!o.weights) throw new Error('detect: --weights FILE is required');
      if (o.out) refuseInputAsOutput({ path: o.out, flag: '--out' }, [{ path: image, flag: 'the image' }, { path: o.weights, flag: '--weights' }]);
      if (!existsSync(image)) throw new Error(`${image}: no such file`);
      const { drawDetections, openSsdliteFile } = await import('../detect/ssdlite-detector.js'); // ONNX Runtime, sharp
      const { detector: det, options } = await openSsdliteFile(o.weights, threads, o.engine);
      const r = await det.detect(image, { ...options, scoreThreshold, maxDetections });
      await det.release();
      if (o.out) {
        writeFileAtomic(o.out, await drawDetections(image, r.width, r.height, r.detections));
        console.error(`wrote ${o.out}: ${r.detections.length} detections`);
      }
      if (o.json) console.log(JSON.stringify({ image, width: r.width, height: r.height, detections: r.detections }, null, 2));
      else for (const d of r.detections) console.log(`${d.score.toFixed(3)}  ${d.label}  [${d.box.map((v) => v.toFixed(1)).join(', ')}]`);
    });
}
