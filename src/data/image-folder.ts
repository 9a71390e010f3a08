/** Image folders (one subfolder per class, or train/ + val/), decoded into memory with sharp. */
import { existsSync, readdirSync } from 'node:fs';
import { extname, join } from 'node:path';
import sharp from 'sharp';
import { sharedBytes, type Dataset } from './dataset.js';

const IMAGE_EXT = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.bmp', '.avif']);

function listClasses(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort();
}

function listImages(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && IMAGE_EXT.has(extname(e.name).toLowerCase()))
    .map((e) => e.name)
    .sort();
}

/** Decodes an image folder split into memory: each image resized (shorter side) and centre-cropped to size×size. */
export async function loadImageFolder(
  dir: string, split: 'train' | 'test', size: number, onProgress?: (done: number, total: number) => void,
): Promise<Dataset> {
  let root = dir;
  let holdout: 'none' | 'train' | 'test' = 'none';
  if (existsSync(join(dir, 'train'))) {
    if (split === 'train') root = join(dir, 'train');
    else {
      const v = ['val', 'validation', 'test'].map((s) => join(dir, s)).find((p) => existsSync(p));
      if (!v) throw new Error(`${dir}: has a train folder but no val, validation or test folder to evaluate on`);
      root = v;
    }
  } else {
    holdout = split;
  }
  const classes = listClasses(existsSync(join(dir, 'train')) ? join(dir, 'train') : dir);
  if (classes.length < 2) throw new Error(`${root}: an image folder needs at least 2 class subfolders, found ${classes.length}`);
  const files: { path: string; label: number }[] = [];
  classes.forEach((c, label) => {
    const cdir = join(root, c);
    if (!existsSync(cdir)) return;
    const imgs = listImages(cdir);
    // Held out: every 10th image, or the last one of a class with fewer than 10 (a few-shot folder still has a test split).
    const held = (i: number): boolean => (imgs.length >= 10 ? i % 10 === 9 : imgs.length >= 2 && i === imgs.length - 1);
    imgs.forEach((f, i) => {
      const isVal = held(i);
      if (holdout === 'none' || (holdout === 'test') === isVal) files.push({ path: join(cdir, f), label });
    });
  });
  if (files.length === 0) throw new Error(`${root}: no images (${[...IMAGE_EXT].join(', ')}) in the class folders ${classes.join(', ')}`);
  const per = 3 * size * size;
  const images = sharedBytes(files.length * per);
  const labels = new Uint8Array(files.length);
  if (classes.length > 255) throw new Error(`${root}: ${classes.length} classes; at most 255 are supported`);
  let done = 0;
  let next = 0;
  const work = async (): Promise<void> => {
    while (next < files.length) {
      const i = next++;
      const f = files[i]!;
      let px: Buffer;
      try {
        px = await sharp(f.path).rotate().flatten({ background: '#ffffff' }).toColorspace('srgb')
          .resize(size, size, { fit: 'cover', position: 'centre', kernel: 'linear' }).removeAlpha().raw().toBuffer();
      } catch (e) {
        throw new Error(`${f.path}: cannot decode image (${(e as Error).message})`);
      }
      if (px.length !== size * size * 3) throw new Error(`${f.path}: decoded to ${px.length} bytes, expected ${size}×${size}×3`);
      // HWC -> CHW
      const o = i * per;
      const plane = size * size;
      for (let p = 0; p < plane; p++) {
        images[o + p] = px[3 * p]!;
        images[o + plane + p] = px[3 * p + 1]!;
        images[o + 2 * plane + p] = px[3 * p + 2]!;
      }
      labels[i] = f.label;
      onProgress?.(++done, files.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, files.length) }, work));
  return { name: `folder:${root}${holdout === 'none' ? '' : `[${split}]`}`, count: files.length, channels: 3, height: size, width: size, images, labels, classes };
}
