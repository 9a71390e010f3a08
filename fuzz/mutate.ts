/** Seeded mutations of a valid input: truncations, bit flips, byte runs overwritten with edge values, insertions, deletions. */
import type { Rng } from '../src/util/rng.js';

/** 32-bit values that break size and offset arithmetic. */
const EDGES = [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff];

type Mutator = (b: Buffer, rng: Rng) => Buffer;

const MUTATORS: readonly [string, Mutator][] = [
  ['truncate', (b, rng) => b.subarray(0, rng.int(b.length))],
  ['flip bits', (b, rng) => {
    const out = Buffer.from(b);
    for (let k = 1 + rng.int(8); k > 0 && out.length; k--) out[rng.int(out.length)]! ^= 1 << rng.int(8);
    return out;
  }],
  ['edge value', (b, rng) => {
    const out = Buffer.from(b);
    if (out.length >= 4) {
      const at = rng.int(out.length - 3);
      const v = EDGES[rng.int(EDGES.length)]!;
      if (rng.int(2)) out.writeUInt32LE(v >>> 0, at);
      else out.writeUInt32BE(v >>> 0, at);
    }
    return out;
  }],
  ['digit', (b, rng) => {
    // Text formats: a number replaced by a huge, negative or fractional one.
    const s = b.toString('latin1');
    const digits = [...s.matchAll(/\d+/g)];
    if (!digits.length) return b;
    const m = digits[rng.int(digits.length)]!;
    const repl = ['-1', '0', '1e309', '99999999999', '0.5', 'NaN', ''][rng.int(7)]!;
    return Buffer.from(s.slice(0, m.index) + repl + s.slice(m.index! + m[0].length), 'latin1');
  }],
  ['insert', (b, rng) => {
    const at = rng.int(b.length + 1);
    const junk = Buffer.alloc(1 + rng.int(64), rng.int(256));
    return Buffer.concat([b.subarray(0, at), junk, b.subarray(at)]);
  }],
  ['delete', (b, rng) => {
    const at = rng.int(b.length + 1);
    return Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + rng.int(64)))]);
  }],
  ['empty', () => Buffer.alloc(0)],
];

/** One mutation of `seed` (1 to 3 mutators stacked); returns the bytes and what was done. */
export function mutate(seed: Uint8Array, rng: Rng): { bytes: Buffer; what: string } {
  let b: Buffer = Buffer.from(seed);
  const done: string[] = [];
  for (let k = 1 + rng.int(3); k > 0; k--) {
    const [name, f] = MUTATORS[rng.int(MUTATORS.length)]!;
    b = f(b, rng);
    done.push(name);
  }
  return { bytes: b, what: done.join(' + ') };
}
