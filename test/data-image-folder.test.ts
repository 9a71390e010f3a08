/** Image folders as datasets: class subfolders, the deterministic hold-out split, and the model's normalisation. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { IMAGENET_NORM, openDataset } from '../src/data/open.js';

test('image folder: 9/1 split per class, pixels resized and cropped, torchvision or keras normalisation', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mnv2-folder-'));
  try {
    for (const [c, value] of [['cat', 40], ['dog', 200]] as const) {
      mkdirSync(join(dir, c));
      for (let i = 0; i < 10; i++) {
        const png = await sharp({ create: { width: 48, height: 40, channels: 3, background: { r: value, g: value, b: value } } }).png().toBuffer();
        writeFileSync(join(dir, c, `${String(i).padStart(2, '0')}.png`), png);
      }
    }
    writeFileSync(join(dir, 'cat', 'notes.txt'), 'not an image');
    const train = await openDataset(dir, 'train', { resolution: 32 });
    const test = await openDataset(dir, 'test', { resolution: 32 });
    assert.deepEqual([train.dataset.count, test.dataset.count], [18, 2]);
    assert.deepEqual(train.dataset.classes, ['cat', 'dog']);
    assert.deepEqual([test.dataset.height, test.dataset.width], [32, 32]);
    assert.deepEqual(Array.from(test.dataset.labels), [0, 1]);
    assert.equal(test.dataset.images[0], 40);
    assert.equal(test.dataset.images[test.dataset.images.length - 1], 200);
    assert.deepEqual([train.preprocess, train.input.mean, train.input.std], ['torchvision', IMAGENET_NORM.mean, IMAGENET_NORM.std]);
    const keras = await openDataset(dir, 'test', { resolution: 32, preprocess: 'keras' });
    assert.deepEqual([keras.preprocess, keras.input.mean, keras.input.std], ['keras', [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]);
    await assert.rejects(openDataset(dir, 'test', { resolution: 32, preprocess: 'seed-cifar' }), /normalised like torchvision or keras models, not 'seed-cifar'/);
    await assert.rejects(openDataset(join(dir, 'nope'), 'test'), /not fashion-mnist, cifar10 or an existing folder/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
