/** `mnv2 diagnose`: dead kernels and dead channels of the depthwise and pointwise convs of a model. */
import type { Command } from 'commander';
import { loadModelFile } from '../io/weights.js';
import { SSDLITE } from '../model/ssdlite.js';
import { refuseInputAsOutput } from '../util/outputs.js';
import { BATCH, COUNT_OR_ALL, SEED, THREADS, int, num } from './args.js';

interface DiagnoseOpts {
  weights: string;
  dataset?: string;
  data?: string;
  limit: string;
  seed: string;
  batch: string;
  kernelFraction: string;
  zeroShare: string;
  threads?: string;
  json?: boolean;
  png?: string;
}

export function registerDiagnoseCommand(program: Command): void {
  program
    .command('diagnose')
    .description('dead kernels (filter norm below a fraction of the layer median) and dead channels (zero on most of a sample) of every depthwise and pointwise conv')
    .requiredOption('--weights <file>', 'model file (.safetensors)')
    .option('--dataset <name|dir>', 'measure dead channels on the test split of fashion-mnist, cifar10 or an image folder; a detector: a COCO JSON, a folder with test.json, or an image folder')
    .option('--data <dir>', 'where the dataset is')
    .option('--limit <n>', 'images of the sample (a fixed random subset; 0: all)', '1000')
    .option('--seed <n>', 'seed of the sample', '0')
    .option('--batch <n>', 'batch size', '50')
    .option('--kernel-fraction <x>', 'a filter is dead below this fraction of its layer\'s median L2 norm', '1e-3')
    .option('--zero-share <x>', 'a channel is dead when zero on at least this share of its values', '0.99')
    .option('--threads <n>', 'ONNX Runtime threads', '1')
    .option('--json', 'print the diagnosis as JSON (per layer: relative norms, zero shares, counts)')
    .option('--png <file>', 'write a heat map: one band per layer, one column per channel (zero share, or relative norm without --dataset; dead: red)')
    .action(async (o: DiagnoseOpts) => {
      refuseInputAsOutput({ path: o.png, flag: '--png' }, [{ path: o.weights, flag: '--weights' }]);
      const m = loadModelFile(o.weights);
      const [{ diagnose }, { formatDiagnosis, writeHeatmapPng }, { detectionSample, testSample }] =
        await Promise.all([import('../diagnose/dead.js'), import('../diagnose/report.js'), import('../diagnose/sample.js')]);
      const at = { resolution: m.graph.config.resolution, limit: int(o.limit, '--limit', COUNT_OR_ALL)!, seed: int(o.seed, '--seed', SEED)!, batch: int(o.batch, '--batch', BATCH)! };
      const detector = m.graph.config.family === SSDLITE;
      if (detector && o.data) throw new Error('diagnose: a detector reads its photos from --dataset (a COCO JSON, a folder with test.json, or an image folder); --data is for classification sets');
      const sample = o.dataset === undefined ? undefined
        : detector ? await detectionSample(o.dataset, at)
        : await testSample(o.dataset, { ...at, dir: o.data, preprocess: m.info.preprocess });
      const d = await diagnose(m.graph, m.weights, {
        kernelFraction: num(o.kernelFraction, '--kernel-fraction'), zeroShare: num(o.zeroShare, '--zero-share'),
        batches: sample?.batches, threads: int(o.threads, '--threads', THREADS),
      });
      if (o.png) await writeHeatmapPng(d, o.png);
      if (o.json) process.stdout.write(`${JSON.stringify({ weights: o.weights, dataset: sample?.name ?? null, ...d })}\n`);
      else console.log(`${o.weights}${sample ? ` on ${sample.name}` : ''}\n${formatDiagnosis(d)}${o.png ? `\nheat map: ${o.png}` : ''}`);
    });
}
