/**
 * Weights files of other kinds, recognised by their first bytes (or name), so that `--weights` given an ONNX,
 * PyTorch, Keras, TF.js or TFLite file names the format and the command that reads it instead of a parse error.
 */
import { openSync, readSync, closeSync } from 'node:fs';
import path from 'node:path';

interface OtherFormat {
  name: string;
  /** What to do with such a file. */
  use: (file: string) => string;
  matches: (head: Uint8Array, file: string) => boolean;
}

const ascii = (head: Uint8Array, at: number, s: string): boolean => [...s].every((c, i) => head[at + i] === c.charCodeAt(0));

const FORMATS: OtherFormat[] = [
  { name: 'a Keras HDF5 file', use: (f) => `mnv2 import keras ${f} --out model.safetensors`, matches: (h) => ascii(h, 0, '\x89HDF\r\n\x1a\n') },
  { name: 'a TFLite flatbuffer', use: () => 'a TFLite import (see mnv2 import --help)', matches: (h) => ascii(h, 4, 'TFL3') },
  {
    name: 'a PyTorch checkpoint (torch.save)',
    use: (f) => `/usr/bin/python3 tools/pth-to-safetensors.py ${f} model.safetensors`,
    // torch.save: a zip archive (PyTorch >= 1.6) or a bare pickle (protocol 2+).
    matches: (h, f) => ascii(h, 0, 'PK\x03\x04') || (h[0] === 0x80 && h[1]! >= 2 && h[1]! <= 5) || /\.(pth?|pt|ckpt|bin)$/i.test(f),
  },
  { name: 'a TF.js model.json', use: (f) => `mnv2 import tfjs ${f} --out model.safetensors`, matches: (h, f) => f.endsWith('.json') && h[0] === 0x7b },
  {
    name: 'an ONNX model',
    use: (f) => `mnv2 serve --onnx ${f}, or mnv2 quantize --weights ${f}; the other commands take the .safetensors it was exported from`,
    matches: (_h, f) => path.extname(f).toLowerCase() === '.onnx',
  },
];

/** The kind of a file that is not safetensors, with the command that reads it; undefined when unknown. */
export function otherWeightsFormat(file: string): { name: string; use: string } | undefined {
  const head = new Uint8Array(16);
  try {
    const fd = openSync(file, 'r');
    try {
      readSync(fd, head, 0, head.length, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
  const f = FORMATS.find((k) => k.matches(head, file));
  return f && { name: f.name, use: f.use(file) };
}
