/** A model file with its own class names, as `mnv2 train --dataset pets/` writes one for the folders cat/, dog/, owl/. */
import { mobilenetV2 } from '../../src/model/mobilenetv2.js';
import { initWeights } from '../../src/model/weights.js';
import { saveWeights } from '../../src/io/weights.js';
import { encodeModelInfo } from '../../src/io/metadata.js';

export const PET_CLASSES = ['cat', 'dog', 'owl'];

/** Writes a seeded seed-cifar α 0.35 model (32×32, preprocessing `seed-cifar`) whose 3 classes are PET_CLASSES. */
export function writePetModel(file: string): void {
  const g = mobilenetV2('seed-cifar', { alpha: 0.35, numClasses: PET_CLASSES.length });
  saveWeights(file, g, initWeights(g, 5), new Map(), encodeModelInfo({ config: g.config, preprocess: 'seed-cifar', classes: PET_CLASSES }));
}
