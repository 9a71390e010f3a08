/** `mnv2 knn add | predict`: few-shot classes from a handful of images, on a model's embeddings. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { KnnClassifier } from '../api/knn.js';
import type { EngineName } from '../engine/classifier.js';
import { archOptions, engineOption, type ArchOpts } from './model-commands.js';
import { int, num, THREADS } from './args.js';

interface KnnOpts extends ArchOpts {
  db: string;
  weights?: string;
  engine?: EngineName;
  threads?: string;
  invert?: boolean;
}

/** Embeddings of `images` with the classifier's model (or --weights for a new classifier). */
async function embedAll(images: string[], knn: KnnClassifier | null, o: KnnOpts): Promise<{ model: string; vectors: Float32Array[] }> {
  const { load, weightsFile } = await import('../api/load.js');
  const model = knn?.model ?? path.resolve(await weightsFile(o.weights ?? 'fashion-mnist'));
  if (o.weights && knn?.model && path.resolve(await weightsFile(o.weights)) !== knn.model) {
    throw new Error(`${o.db} holds embeddings of ${knn.model}, not of ${o.weights}`);
  }
  const m = await load({
    weights: model, engine: o.engine, threads: int(o.threads, '--threads', THREADS), invert: o.invert,
    arch: o.arch, alpha: num(o.alpha, '--alpha'), classes: num(o.classes, '--classes'), resolution: num(o.resolution, '--resolution'),
  });
  try {
    const vectors: Float32Array[] = [];
    for (const img of images) vectors.push(await m.embed(img));
    return { model, vectors };
  } finally {
    await m.dispose();
  }
}

const common = (cmd: Command): Command =>
  engineOption(archOptions(cmd))
    .requiredOption('--db <file>', 'the classifier (JSON)')
    .option('--invert', 'invert pixel values (photos of garments on white, for fashion-mnist)');

export function registerKnnCommand(program: Command): void {
  const knn = program.command('knn').description('k-nearest-neighbour classes on embeddings (few-shot learning)');

  common(knn.command('add').description('add images as examples of a class (creates the classifier file if needed)'))
    .argument('<images...>', 'image files')
    .requiredOption('--label <name>', 'their class')
    .option('--weights <file>', 'the model that makes the embeddings (a new classifier only; default: the bundled model)')
    .action(async (images: string[], o: KnnOpts & { label: string }) => {
      const old = existsSync(o.db) ? KnnClassifier.load(o.db) : null;
      const { model, vectors } = await embedAll(images, old, o);
      const c = old ?? new KnnClassifier(model);
      for (const v of vectors) c.addExample(v, o.label);
      c.save(o.db);
      const counts = Object.entries(c.exampleCount()).map(([l, n]) => `${l} ${n}`).join(', ');
      console.error(`${o.db}: ${counts} (embeddings of ${model})`);
    });

  common(knn.command('predict').description('the class of each image by its k nearest examples'))
    .argument('<images...>', 'image files')
    .option('--k <n>', 'neighbours', '3')
    .option('--json', 'print JSON')
    .action(async (images: string[], o: KnnOpts & { k: string; json?: boolean }) => {
      if (!existsSync(o.db)) throw new Error(`${o.db}: no such classifier (create it with mnv2 knn add)`);
      const c = KnnClassifier.load(o.db);
      const k = int(o.k, '--k', { min: 1 })!;
      const { vectors } = await embedAll(images, c, o);
      const results = images.map((file, i) => ({ file, ...c.predict(vectors[i]!, k) }));
      if (o.json) {
        console.log(JSON.stringify(results, null, 2));
        return;
      }
      for (const r of results) console.log(`${r.file}: ${r.label} (${(r.confidences[r.label]! * 100).toFixed(0)} % of ${r.neighbours.length} neighbours)`);
    });
}
