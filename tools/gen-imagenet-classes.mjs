#!/usr/bin/env node
// Regenerates src/data/imagenet-classes.ts from the `imagenet_classes` module of
// the npm package @tensorflow-models/mobilenet (Apache-2.0, Copyright 2019 Google LLC).
//
// Usage (no internet needed beyond the npm registry):
//   cd /tmp && npm pack @tensorflow-models/mobilenet@2.1.1 && tar xzf tensorflow-models-mobilenet-2.1.1.tgz
//   node tools/gen-imagenet-classes.mjs /tmp/package/dist/imagenet_classes.js
//
// The source is a CommonJS object { 0: 'tench, Tinca tinca', ..., 999: 'toilet tissue, ...' }.
// The script checks that it has exactly the indices 0..999 and writes the full
// names (unchanged) as an array in index order.
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const src = process.argv[2];
if (!src) {
  console.error('usage: node tools/gen-imagenet-classes.mjs <path/to/imagenet_classes.js>');
  process.exit(2);
}
const require = createRequire(import.meta.url);
const mod = require(resolve(src));
const classes = mod.IMAGENET_CLASSES;
if (!classes || typeof classes !== 'object') throw new Error(`${src}: no IMAGENET_CLASSES export`);

const keys = Object.keys(classes).map(Number);
if (keys.length !== 1000) throw new Error(`expected 1000 classes, got ${keys.length}`);
const uniq = new Set(keys);
if (uniq.size !== 1000) throw new Error('duplicate indices');
for (let i = 0; i < 1000; i++) {
  if (!uniq.has(i)) throw new Error(`missing index ${i}`);
  if (typeof classes[i] !== 'string' || classes[i].length === 0) throw new Error(`bad name at ${i}`);
}
const names = Array.from({ length: 1000 }, (_, i) => classes[i]);
if (!names[0].startsWith('tench') || !names[1].startsWith('goldfish') || !names[999].startsWith('toilet tissue')) {
  throw new Error('unexpected class order (expected 0 tench, 1 goldfish, 999 toilet tissue)');
}

const out = `// GENERATED FILE - do not edit by hand. Regenerate with tools/gen-imagenet-classes.mjs.
//
// The 1000 ILSVRC-2012 (ImageNet-1k) class names in the standard index order used
// by torchvision and Keras (0 'tench', 1 'goldfish', ..., 999 'toilet tissue').
// Source: npm package @tensorflow-models/mobilenet@2.1.1, file dist/imagenet_classes.js,
// Copyright 2019 Google LLC, licensed under the Apache License, Version 2.0
// (http://www.apache.org/licenses/LICENSE-2.0). Names are kept in full as given there.

export const IMAGENET_CLASSES: readonly string[] = Object.freeze([
${names.map((n, i) => `  ${JSON.stringify(n)}, // ${i}`).join('\n')}
]);
`;
const here = dirname(fileURLToPath(import.meta.url));
const dest = resolve(here, '..', 'src', 'data', 'imagenet-classes.ts');
writeFileSync(dest, out);
console.log(`wrote ${dest} (${names.length} classes)`);
