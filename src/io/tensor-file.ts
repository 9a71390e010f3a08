/**
 * The tensors of a weights file, whatever it is: safetensors or a PyTorch .pth read directly; a format that
 * needs an import step (Keras .h5, TF.js model.json, TFLite, a TF frozen graph, ONNX) is named with its command.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import { isPth, readPth } from './pth.js';
import { readSafetensors, type SafetensorsFile } from './safetensors.js';
import { fail } from '../util/errors.js';

/** Formats that are not weights files: how to recognize each, and what to do instead. */
const OTHER_FORMATS: readonly { what: string; is: (head: Uint8Array, ext: string) => boolean; use: string }[] = [
  { what: 'a Keras HDF5 file', is: (h) => ascii(h, 1, 4) === 'HDF', use: 'mnv2 import keras FILE --out W.safetensors' },
  { what: 'a TFLite model', is: (h) => ascii(h, 4, 8) === 'TFL3', use: 'mnv2 import tflite FILE --out W.safetensors' },
  // a GraphDef's first field is node 1, length-delimited: tag 0x0a
  { what: 'a TensorFlow frozen graph (GraphDef)', is: (h, ext) => ext === '.pb' && h[0] === 0x0a, use: 'mnv2 import tf-graph FILE --out W.safetensors' },
  { what: 'a TF.js model.json', is: (h, ext) => ext === '.json' && ascii(h, 0, 16).trimStart().startsWith('{'), use: 'mnv2 import tfjs FILE --out W.safetensors' },
  { what: 'an ONNX model (an export, not a weights file)', is: (_h, ext) => ext === '.onnx', use: 'the .safetensors it was exported from' },
];

const ascii = (b: Uint8Array, from: number, to: number) => String.fromCharCode(...b.subarray(from, to));

function head(path: string): Uint8Array {
  const b = new Uint8Array(16);
  let fd: number;
  try {
    // a FIFO or device would block or never end: regular files only
    if (!statSync(path).isFile()) throw new Error('not a regular file');
    fd = openSync(path, 'r');
  } catch (e) {
    fail(path, `cannot read file: ${(e as Error).message}`, { cause: e });
  }
  try {
    return b.subarray(0, readSync(fd, b, 0, b.length, 0));
  } finally {
    closeSync(fd);
  }
}

/** Reads a .safetensors or .pth file (recognized by its first bytes, not its name). */
export function readTensorFile(path: string): SafetensorsFile {
  const h = head(path);
  if (isPth(h)) return readPth(path);
  const other = OTHER_FORMATS.find((f) => f.is(h, extname(path).toLowerCase()));
  if (other) fail(path, `${other.what}, not a weights file (.safetensors or .pth): use ${other.use}`);
  return readSafetensors(path);
}
