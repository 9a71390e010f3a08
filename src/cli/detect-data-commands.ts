/** `mnv2 data make fashion-detect | fetch-detect | inspect-detect` and `mnv2 detect coco-eval`: thin wrappers over src/detect. */
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Command } from 'commander';
import { int, num, SEED, type Range } from './args.js';
import { FASHION_DETECT_DEFAULTS, makeFashionDetect } from '../detect/fashion-detect.js';
import type { DetectionDataset } from '../detect/dataset.js';
import { DETECTION_SOURCES, fetchDetectionDataset, type DetectionDatasetName } from '../detect/fetch-detect.js';
import { cocoEvaluate, defaultCocoParams, formatCocoStats, type CocoDetection } from '../detect/coco-eval.js';

const IMAGES: Range = { min: 0, max: 10_000_000 };
const OBJECTS: Range = { min: 1, max: 100 };
const SCALE: Range = { above: 0, max: 100 };

/** The `data` group registered by train-commands.ts, or a new one. */
function dataGroup(program: Command): Command {
  return program.commands.find((c) => c.name() === 'data') ?? program.command('data').description('datasets');
}

function printDataset(ds: DetectionDataset): void {
  const boxes = ds.images.reduce((s, i) => s + i.boxes.length, 0);
  console.log(`${ds.name}: ${ds.images.length} images, ${boxes} boxes, ${ds.categories.length} categories`);
  const perLabel = new Array<number>(ds.categories.length).fill(0);
  for (const im of ds.images) for (const b of im.boxes) perLabel[b.label]!++;
  ds.categories.forEach((c, l) => console.log(`  ${String(l).padStart(3)}  id ${String(c.id).padStart(3)}  ${c.name.padEnd(20)} ${perLabel[l]}`));
}

export function registerDetectDataCommands(program: Command): void {
  const d = FASHION_DETECT_DEFAULTS;
  dataGroup(program)
    .command('make')
    .description('make a synthetic dataset')
    .argument('<name>', 'fashion-detect')
    .option('--out <dir>', 'output folder', 'data/fashion-detect')
    .option('--train <n>', 'train images (from Fashion-MNIST train 0..49999)', String(d.train))
    .option('--val <n>', 'val images (from Fashion-MNIST train 50000..59999)', String(d.val))
    .option('--test <n>', 'test images (from Fashion-MNIST test)', String(d.test))
    .option('--canvas <px>', 'canvas side', String(d.canvas))
    .option('--min-objects <n>', 'fewest garments per canvas', String(d.minObjects))
    .option('--max-objects <n>', 'most garments per canvas', String(d.maxObjects))
    .option('--min-scale <f>', 'smallest resize factor of a 28×28 garment', String(d.minScale))
    .option('--max-scale <f>', 'largest resize factor', String(d.maxScale))
    .option('--max-overlap <iou>', 'largest IoU between two garments', String(d.maxOverlap))
    .option('--seed <n>', 'seed', String(d.seed))
    .option('--fashion-mnist <dir>', 'Fashion-MNIST IDX folder (default /usr/share/datasets/fashion-mnist)')
    .option('--force', 'replace a non-empty output folder')
    .action(async (name: string, o: Record<string, string | boolean | undefined>) => {
      if (name !== 'fashion-detect') throw new Error(`unknown dataset '${name}' (known: fashion-detect)`);
      const s = (k: string): string | undefined => o[k] as string | undefined;
      const r = await makeFashionDetect(
        s('out')!,
        {
          train: int(s('train'), '--train', IMAGES), val: int(s('val'), '--val', IMAGES), test: int(s('test'), '--test', IMAGES),
          canvas: int(s('canvas'), '--canvas', { min: 28, max: 4096 }),
          minObjects: int(s('minObjects'), '--min-objects', OBJECTS), maxObjects: int(s('maxObjects'), '--max-objects', OBJECTS),
          minScale: num(s('minScale'), '--min-scale', SCALE), maxScale: num(s('maxScale'), '--max-scale', SCALE),
          maxOverlap: num(s('maxOverlap'), '--max-overlap', { min: 0, max: 1 }),
          seed: int(s('seed'), '--seed', SEED),
        },
        { fashionMnistDir: s('fashionMnist'), force: Boolean(o.force) },
      );
      for (const sp of r.splits) console.log(`${sp.name}: ${sp.images} images, ${sp.boxes} boxes → ${sp.json}`);
    });

  const USE: Record<DetectionDatasetName, (dir: string) => string> = {
    voc2007: (dir) => `mnv2 data inspect-detect --format voc --path ${dir}/VOCdevkit/VOC2007 --split test`,
    'coco2017-val': (dir) => `mnv2 data inspect-detect --format coco --path ${dir}/annotations/instances_val2017.json --images ${dir}/val2017`,
    'penn-fudan': (dir) => `${dir}/PennFudanPed (masks and text annotations; no reader yet)`,
  };
  dataGroup(program)
    .command('fetch-detect')
    .description('download and unpack a detection dataset from its official URLs (md5-checked where published, resumable)')
    .argument('<dataset>', Object.keys(DETECTION_SOURCES).join(' | '))
    .option('--dir <dir>', 'destination folder (default data/<dataset>)')
    .option('--base-url <url>', 'download the files from this base URL instead of the official ones')
    .action(async (name: string, o: { dir?: string; baseUrl?: string }) => {
      if (!(name in DETECTION_SOURCES)) throw new Error(`unknown dataset '${name}' (known: ${Object.keys(DETECTION_SOURCES).join(', ')})`);
      const n = name as DetectionDatasetName;
      const r = await fetchDetectionDataset(n, o.dir ?? `data/${n}`, { baseUrl: o.baseUrl });
      for (const f of r.downloaded) console.error(`downloaded ${f}`);
      for (const f of r.present) console.error(`already present ${f}`);
      for (const f of r.unpacked) console.error(`unpacked ${f}`);
      console.log(r.dir);
      console.error(`use it with: ${USE[n](r.dir)}`);
    });

  dataGroup(program)
    .command('inspect-detect')
    .description('read a detection dataset (COCO JSON, VOC folder or YOLO labels) and print its counts and any skipped entries')
    .requiredOption('--format <coco|voc|yolo>', 'dataset format')
    .requiredOption('--path <p>', 'coco: the annotation JSON; voc: the VOC2007-style root; yolo: the image folder')
    .option('--images <dir>', 'coco: image folder (default: the JSON\'s folder)')
    .option('--split <name>', 'voc: ImageSets/Main/<split>.txt', 'trainval')
    .option('--labels <dir>', 'yolo: label folder')
    .option('--names <file>', 'yolo: class names, one per line')
    .option('--check-images', 'coco, voc: read every image header (unreadable images and size mismatches are skipped)')
    .action(async (o: { format: string; path: string; images?: string; split: string; labels?: string; names?: string; checkImages?: boolean }) => {
      const { formatSkips, loadCocoDetection, loadVocDetection, loadYoloDetection } = await import('../detect/dataset.js'); // an XML parser, sharp
      let ds: DetectionDataset;
      if (o.format === 'coco') ds = await loadCocoDetection(o.path, o.images ?? dirname(o.path), { checkImages: o.checkImages });
      else if (o.format === 'voc') ds = await loadVocDetection(o.path, o.split, { checkImages: o.checkImages });
      else if (o.format === 'yolo') {
        if (!o.labels || !o.names) throw new Error('yolo needs --labels <dir> and --names <file>');
        ds = await loadYoloDetection(o.path, o.labels, readFileSync(o.names, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean));
      } else throw new Error(`--format must be coco, voc or yolo, got '${o.format}'`);
      printDataset(ds);
      if (ds.skipped.total) console.error(`skipped or changed:\n${formatSkips(ds.skipped)}`);
    });

  program
    .command('detect')
    .description('object detection tools')
    .command('coco-eval')
    .description('COCO box AP/AR (pycocotools COCOeval) of a detections JSON against a ground-truth JSON')
    .argument('<gt>', 'COCO instances JSON')
    .argument('<dets>', 'detections JSON: [{image_id, category_id, bbox: [x, y, w, h], score}]')
    .option('--json', 'print the 12 numbers as JSON')
    .option('--class-agnostic', "ignore categories (pycocotools' useCats 0)")
    .action((gtFile: string, detFile: string, o: { json?: boolean; classAgnostic?: boolean }) => {
      const read = (f: string): unknown => {
        try {
          return JSON.parse(readFileSync(f, 'utf8'));
        } catch (e) {
          throw new Error(`${f}: ${(e as Error).message}`);
        }
      };
      const dets = read(detFile);
      if (!Array.isArray(dets)) throw new Error(`${detFile}: expected a JSON array of detections`);
      const r = cocoEvaluate(read(gtFile) as Parameters<typeof cocoEvaluate>[0], dets as CocoDetection[], { ...defaultCocoParams(), useCats: !o.classAgnostic });
      console.log(o.json ? JSON.stringify(r.stats) : formatCocoStats(r.stats, r.params));
    });
}
