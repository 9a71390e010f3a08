import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  writeSafetensors,
  toFloat32,
  float32View,
  float32ToFloat16,
  type TensorInfo,
  type WritableTensor,
} from '../src/io/safetensors.js';

import { loadModelFile } from '../src/io/weights.js';
import { BUNDLED_MODEL } from '../src/api/spec.js';

const SRC = 'model.safetensors';

/** Small deterministic PRNG (mulberry32) so the fuzz loops are reproducible. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Builds a file from a raw header string (no padding) and data bytes. */
function rawFile(header: string | object, data: Uint8Array | number = 0): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const d = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + json.length + d.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(d, 8 + json.length);
  return out;
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'st-test-'));
}

function expectError(buf: Uint8Array, ...parts: (string | RegExp)[]): Error {
  let caught: unknown;
  try {
    parseSafetensors(buf, SRC);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof Error, `expected an Error for parts ${parts.join(' | ')}`);
  const msg = caught.message;
  assert.ok(msg.startsWith(`${SRC}: `), `message should start with the source: ${msg}`);
  for (const p of parts) {
    if (typeof p === 'string') assert.ok(msg.includes(p), `message ${JSON.stringify(msg)} should contain ${JSON.stringify(p)}`);
    else assert.match(msg, p);
  }
  return caught;
}

function sample(): Map<string, WritableTensor> {
  const m = new Map<string, WritableTensor>();
  m.set('conv.weight', { dtype: 'F32', shape: [2, 3], data: new Float32Array([1.5, -2, 3.25, 0, -0, 1e-30]) });
  m.set('half', { dtype: 'F16', shape: [3], data: float32ToFloat16(new Float32Array([1, -2, 0.5])) });
  m.set('bn.num_batches_tracked', { dtype: 'I64', shape: [], data: new BigInt64Array([12345678901n]) });
  m.set('bytes', { dtype: 'U8', shape: [5], data: new Uint8Array([0, 1, 127, 128, 255]) });
  m.set('empty', { dtype: 'F32', shape: [0], data: new Float32Array(0) });
  m.set('ints', { dtype: 'I32', shape: [1, 2], data: new Int32Array([-7, 2147483647]) });
  m.set('doubles', { dtype: 'F64', shape: [2], data: new Float64Array([Math.PI, -1e300]) });
  return m;
}

test('round trip: bytes, values, metadata, header alignment, scalar and empty tensors', () => {
  const tensors = sample();
  const metadata = { format: 'pt', epoch: '3' };
  const buf = serializeSafetensors(tensors, metadata);
  const headerLen = Number(new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true));
  assert.equal(headerLen % 8, 0);
  assert.equal(buf.length, 8 + headerLen + [...tensors.values()].reduce((s, t) => s + t.data.byteLength, 0));

  const f = parseSafetensors(buf, SRC);
  assert.deepEqual(f.metadata, metadata);
  assert.deepEqual([...f.tensors.keys()], [...tensors.keys()]);
  for (const [name, t] of tensors) {
    const got = f.tensors.get(name)!;
    assert.equal(got.dtype, t.dtype, name);
    assert.deepEqual(got.shape, t.shape, name);
    assert.deepEqual(got.bytes, bytesOf(t.data), name);
    assert.equal(got.bytes.buffer, buf.buffer, `${name} should be a view, not a copy`);
  }
  assert.deepEqual(toFloat32(f.tensors.get('conv.weight')!, 'conv.weight', SRC), new Float32Array([1.5, -2, 3.25, 0, -0, 1e-30]));
  assert.deepEqual(toFloat32(f.tensors.get('half')!, 'half', SRC), new Float32Array([1, -2, 0.5]));
  const scalar = f.tensors.get('bn.num_batches_tracked')!;
  assert.deepEqual(scalar.shape, []);
  assert.equal(scalar.bytes.length, 8);
  assert.deepEqual(toFloat32(scalar, 'n', SRC), new Float32Array([12345678901]));
  assert.deepEqual(toFloat32(f.tensors.get('bytes')!, 'bytes', SRC), new Float32Array([0, 1, 127, 128, 255]));
  const empty = f.tensors.get('empty')!;
  assert.deepEqual(empty.shape, [0]);
  assert.equal(empty.bytes.length, 0);
  assert.equal(toFloat32(empty, 'empty', SRC).length, 0);
  assert.deepEqual(toFloat32(f.tensors.get('ints')!, 'ints', SRC), new Float32Array([-7, 2147483647]));
  assert.deepEqual(toFloat32(f.tensors.get('doubles')!, 'doubles', SRC), new Float32Array([Math.PI, -1e300]));

  // Record input, no metadata -> empty metadata; header JSON padded with spaces only.
  const buf2 = serializeSafetensors({ a: { dtype: 'U8', shape: [1], data: new Uint8Array([9]) } });
  const f2 = parseSafetensors(buf2, SRC);
  assert.deepEqual(f2.metadata, {});
  assert.deepEqual([...f2.tensors.get('a')!.bytes], [9]);
  const hl = Number(new DataView(buf2.buffer).getBigUint64(0, true));
  const text = new TextDecoder().decode(buf2.subarray(8, 8 + hl));
  assert.match(text, /^\{.*\} *$/);
});

test('parses a hand-built file in the reference layout (unpadded header, reordered keys)', () => {
  // Same shape as the example in the safetensors README: offsets need not follow header order.
  const data = new Uint8Array(12);
  const dv = new DataView(data.buffer);
  dv.setFloat32(0, 7, true); // "b" at [0, 4]
  dv.setFloat32(4, 1, true); // "a" at [4, 12]
  dv.setFloat32(8, 2, true);
  const buf = rawFile(
    '{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"__metadata__":{"k":"v"},"b":{"data_offsets":[0,4],"shape":[1],"dtype":"F32"}}',
    data,
  );
  const f = parseSafetensors(buf, SRC);
  assert.deepEqual(f.metadata, { k: 'v' });
  assert.deepEqual(toFloat32(f.tensors.get('a')!, 'a', SRC), new Float32Array([1, 2]));
  assert.deepEqual(toFloat32(f.tensors.get('b')!, 'b', SRC), new Float32Array([7]));
  // Trailing padding spaces in the header and a non-zero byteOffset of the input view are fine.
  const padded = rawFile('{"x":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}}     ', new Uint8Array([0xff, 0xff, 2, 0]));
  const shifted = new Uint8Array(padded.length + 3);
  shifted.set(padded, 3);
  const g = parseSafetensors(shifted.subarray(3), SRC);
  assert.deepEqual(toFloat32(g.tensors.get('x')!, 'x', SRC), new Float32Array([-1, 2]));
});

test('toFloat32 handles unaligned byte offsets for every dtype', () => {
  const cases: [TensorInfo['dtype'], number[], (dv: DataView, i: number, v: number) => void][] = [
    ['F64', [1.25, -3], (dv, i, v) => dv.setFloat64(i * 8, v, true)],
    ['F32', [1.25, -3], (dv, i, v) => dv.setFloat32(i * 4, v, true)],
    ['F16', [1.25, -3], (dv, i, v) => dv.setUint16(i * 2, float32ToFloat16(new Float32Array([v]))[0]!, true)],
    ['BF16', [1.25, -3], (dv, i, v) => dv.setUint16(i * 2, new Uint32Array(new Float32Array([v]).buffer)[0]! >>> 16, true)],
    ['I64', [-5, 1 << 30], (dv, i, v) => dv.setBigInt64(i * 8, BigInt(v), true)],
    ['I32', [-5, 1 << 30], (dv, i, v) => dv.setInt32(i * 4, v, true)],
    ['I16', [-5, 300], (dv, i, v) => dv.setInt16(i * 2, v, true)],
    ['I8', [-5, 100], (dv, i, v) => dv.setInt8(i, v)],
    ['U8', [5, 200], (dv, i, v) => dv.setUint8(i, v)],
    ['BOOL', [0, 1], (dv, i, v) => dv.setUint8(i, v)],
  ];
  const sizes: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
  for (const [dtype, values, set] of cases) {
    for (const shift of [0, 1, 3]) {
      const backing = new Uint8Array(shift + values.length * sizes[dtype]!);
      const bytes = backing.subarray(shift);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      values.forEach((v, i) => set(dv, i, v));
      const out = toFloat32({ dtype, shape: [values.length], bytes }, 't', SRC);
      assert.deepEqual(out, new Float32Array(values), `${dtype} shift ${shift}`);
    }
  }
  // A byte length that does not match the shape is reported, not silently truncated.
  assert.throws(
    () => toFloat32({ dtype: 'F32', shape: [3], bytes: new Uint8Array(8) }, 'w', SRC),
    (e: Error) => e.message.startsWith(`${SRC}: tensor 'w'`) && e.message.includes('12 bytes') && e.message.includes('8 bytes'),
  );
});

function f16ToF32(bits: number[]): Float32Array {
  const u = new Uint16Array(bits);
  return toFloat32({ dtype: 'F16', shape: [u.length], bytes: bytesOf(u) }, 'h', SRC);
}

test('F16 -> F32 decodes known bit patterns exactly', () => {
  const got = f16ToF32([0x3c00, 0xc000, 0x7bff, 0x0400, 0x0001, 0x03ff, 0x7c00, 0xfc00, 0x7e00, 0x0000, 0x8000, 0x2e66, 0x3555]);
  assert.equal(got[0], 1);
  assert.equal(got[1], -2);
  assert.equal(got[2], 65504);
  assert.equal(got[3], 2 ** -14); // 6.1035e-5, smallest normal
  assert.equal(got[4], 2 ** -24); // 5.96e-8, smallest subnormal
  assert.equal(got[5], 1023 * 2 ** -24); // largest subnormal
  assert.equal(got[6], Infinity);
  assert.equal(got[7], -Infinity);
  assert.ok(Number.isNaN(got[8]));
  assert.ok(Object.is(got[9], 0));
  assert.ok(Object.is(got[10], -0));
  assert.equal(got[11], Math.fround(0.0999755859375)); // 0x2e66, the half nearest 0.1
  assert.equal(got[12], Math.fround(0.333251953125));
});

test('float32ToFloat16 rounds to nearest even, handles subnormals/overflow/inf/nan', () => {
  const cases: [number, number][] = [
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65519, 0x7bff], // below the halfway point to 65536 -> stays finite
    [65520, 0x7c00], // halfway, ties to even -> Infinity
    [1e6, 0x7c00],
    [-1e6, 0xfc00],
    [6.103515625e-5, 0x0400], // min normal
    [2 ** -24, 0x0001], // 5.96e-8 min subnormal
    [2 ** -25, 0x0000], // exactly half of min subnormal -> ties to even (0)
    [1.5 * 2 ** -25, 0x0001], // above half -> rounds up
    [3 * 2 ** -25, 0x0002], // 1.5 ulp subnormal -> ties to even (2)
    [2 ** -14 - 2 ** -25, 0x0400], // rounds up across the subnormal/normal boundary
    [1e-10, 0x0000],
    [-1e-10, 0x8000],
    [0.1, 0x2e66],
    [1 / 3, 0x3555],
    [1 + 2 ** -11, 0x3c00], // tie, even mantissa stays
    [1 + 3 * 2 ** -11, 0x3c02], // tie, odd mantissa rounds up
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [0, 0x0000],
    [-0, 0x8000],
  ];
  const out = float32ToFloat16(new Float32Array(cases.map((c) => c[0])));
  cases.forEach(([v, want], i) => assert.equal(out[i], want, `${v} -> 0x${out[i]!.toString(16)}, want 0x${want.toString(16)}`));
  const nan = float32ToFloat16(new Float32Array([NaN]))[0]!;
  assert.equal(nan & 0x7c00, 0x7c00);
  assert.notEqual(nan & 0x3ff, 0);
  // Works on a subarray with a non-zero byte offset.
  const big = new Float32Array([9, 1, -2]);
  assert.deepEqual(float32ToFloat16(big.subarray(1)), new Uint16Array([0x3c00, 0xc000]));
});

test('every finite half survives float32ToFloat16 -> toFloat32 -> float32ToFloat16, and rounding is nearest', () => {
  const all = new Uint16Array(65536);
  for (let i = 0; i < 65536; i++) all[i] = i;
  const asF32 = toFloat32({ dtype: 'F16', shape: [65536], bytes: bytesOf(all) }, 'all', SRC);
  const back = float32ToFloat16(asF32);
  for (let i = 0; i < 65536; i++) {
    const isNaN = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
    if (isNaN) assert.ok(Number.isNaN(asF32[i]), `0x${i.toString(16)}`);
    else if (back[i] !== i) assert.fail(`0x${i.toString(16)} round-tripped to 0x${back[i]!.toString(16)}`);
  }
  // Random float32s: the chosen half is the nearest representable one (error <= half an ulp).
  const rnd = mulberry32(7);
  const xs = new Float32Array(20000);
  for (let i = 0; i < xs.length; i++) xs[i] = (rnd() - 0.5) * 2 ** Math.floor(rnd() * 40 - 28);
  const hs = float32ToFloat16(xs);
  const ys = toFloat32({ dtype: 'F16', shape: [hs.length], bytes: bytesOf(hs) }, 'r', SRC);
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i]!;
    const y = ys[i]!;
    const e = Math.max(Math.floor(Math.log2(Math.abs(y) || 2 ** -24)), -14);
    const ulp = 2 ** (e - 10);
    assert.ok(Math.abs(x - y) <= ulp / 2 + 1e-45, `${x} -> ${y}`);
  }
});

test('BF16 -> F32', () => {
  const bits = new Uint16Array([0x3f80, 0xc000, 0x3e80, 0x7f80, 0xff80, 0x7fc0, 0x0001, 0x8000, 0x4049]);
  const got = toFloat32({ dtype: 'BF16', shape: [3, 3], bytes: bytesOf(bits) }, 'bf', SRC);
  assert.equal(got[0], 1);
  assert.equal(got[1], -2);
  assert.equal(got[2], 0.25);
  assert.equal(got[3], Infinity);
  assert.equal(got[4], -Infinity);
  assert.ok(Number.isNaN(got[5]));
  assert.equal(got[6], 2 ** -133); // smallest bf16 subnormal
  assert.ok(Object.is(got[7], -0));
  assert.equal(got[8], 3.140625);
});

test('corrupt inputs give precise errors naming the source', () => {
  expectError(new Uint8Array(0), 'file is 0 bytes, too short for the 8-byte header length');
  expectError(new Uint8Array(5), 'file is 5 bytes, too short for the 8-byte header length');

  const big = new Uint8Array(100);
  new DataView(big.buffer).setBigUint64(0, 1234567n, true);
  expectError(big, 'header length 1234567 exceeds file size 100');
  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setBigUint64(0, 0xffffffffffffffffn, true);
  expectError(huge, 'header length 18446744073709551615 exceeds file size 16');

  expectError(rawFile('{"a": '), 'header is not valid JSON');
  expectError(rawFile(''), 'header is not valid JSON');
  expectError(rawFile('{"a": {},}'), 'header is not valid JSON');
  const badUtf8 = rawFile('{}');
  badUtf8[9] = 0xff;
  expectError(badUtf8, 'not valid UTF-8');
  expectError(rawFile('[1, 2]'), 'header is not a JSON object', 'array');
  expectError(rawFile('42'), 'header is not a JSON object');
  expectError(rawFile('null'), 'header is not a JSON object');

  expectError(rawFile({ a: 5 }), "tensor 'a': entry is not an object");
  expectError(rawFile({ a: { shape: [1], data_offsets: [0, 4] } }, 4), "tensor 'a': missing dtype");
  expectError(rawFile({ a: { dtype: 'Q8', shape: [1], data_offsets: [0, 1] } }, 1), "tensor 'a': unknown dtype 'Q8'");
  expectError(rawFile({ a: { dtype: 'F32', data_offsets: [0, 4] } }, 4), "tensor 'a': missing shape");
  expectError(rawFile({ a: { dtype: 'F32', shape: 4, data_offsets: [0, 4] } }, 4), "tensor 'a': shape is not an array");
  expectError(rawFile({ a: { dtype: 'F32', shape: [2, -1], data_offsets: [0, 4] } }, 4), "tensor 'a'", 'shape [2,-1]', 'invalid dimension -1');
  expectError(rawFile({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, 4), "tensor 'a'", 'invalid dimension 1.5');
  expectError(rawFile({ a: { dtype: 'F32', shape: ['2'], data_offsets: [0, 8] } }, 8), "tensor 'a'", 'invalid dimension "2"');
  expectError(rawFile({ a: { dtype: 'F32', shape: [1] } }, 4), "tensor 'a': missing data_offsets");
  expectError(rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0] } }, 4), "tensor 'a': data_offsets [0] is not a [begin, end] pair");
  expectError(rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, 4), "tensor 'a'", 'non-negative integers');
  expectError(rawFile({ a: { dtype: 'F32', shape: [0], data_offsets: [4, 0] } }, 4), "tensor 'a': data_offsets [4, 0] has begin > end");
  expectError(
    rawFile({ x: { dtype: 'F32', shape: [50], data_offsets: [10, 210] } }, 100),
    "tensor 'x'",
    'data_offsets [10, 210] out of bounds (data section is 100 bytes)',
  );
  expectError(
    rawFile({ x: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }, 20),
    "tensor 'x': shape [2,3] × F32 = 24 bytes but data_offsets span 20 bytes",
  );
  // Absurd shapes must not overflow into a false match.
  expectError(
    rawFile({ x: { dtype: 'F32', shape: [2 ** 52, 2 ** 52, 0x10], data_offsets: [0, 0] } }),
    "tensor 'x'",
    'but data_offsets span 0 bytes',
  );
  expectError(
    rawFile(
      {
        a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
      },
      12,
    ),
    "tensor 'b' overlaps tensor 'a'",
  );
  expectError(
    rawFile(
      {
        b: { dtype: 'U8', shape: [2], data_offsets: [2, 4] },
        a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] },
      },
      4,
    ),
    /tensor '[ab]' overlaps tensor '[ab]'/,
  );
  expectError(
    rawFile(
      {
        a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] },
        b: { dtype: 'U8', shape: [2], data_offsets: [5, 7] },
      },
      7,
    ),
    "3 uncovered bytes in the data section at [2, 5) between tensor 'a' and tensor 'b'",
  );
  expectError(rawFile({ a: { dtype: 'U8', shape: [2], data_offsets: [1, 3] } }, 3), "1 uncovered bytes", "before tensor 'a'");
  expectError(rawFile({ __metadata__: [1] }), '__metadata__ is not an object');
  expectError(rawFile({ __metadata__: { epoch: 3 } }), "__metadata__ 'epoch' is not a string");
});

test('truncated files always throw (never silently wrong data)', () => {
  const full = serializeSafetensors(sample(), { format: 'pt' });
  assert.doesNotThrow(() => parseSafetensors(full, SRC));
  for (let cut = 0; cut < full.length; cut++) {
    const part = full.slice(0, cut);
    assert.throws(
      () => parseSafetensors(part, SRC),
      (e: unknown) => e instanceof Error && e.message.startsWith(`${SRC}: `),
      `cut at ${cut} of ${full.length}`,
    );
  }
});

test('random garbage and random header corruptions throw Errors (seeded, 200 + 400 cases)', () => {
  const rnd = mulberry32(12345);
  for (let i = 0; i < 200; i++) {
    const len = Math.floor(rnd() * 64);
    const buf = new Uint8Array(len);
    for (let j = 0; j < len; j++) buf[j] = Math.floor(rnd() * 256);
    // Half of them get a plausible header length so the UTF-8/JSON path is exercised too.
    if (len >= 8 && i % 2 === 0) new DataView(buf.buffer).setBigUint64(0, BigInt(Math.floor(rnd() * (len - 7))), true);
    assert.throws(
      () => parseSafetensors(buf, SRC),
      (e: unknown) => e instanceof Error && e.message.startsWith(`${SRC}: `),
      `garbage case ${i}`,
    );
  }
  // Corrupting a valid header either throws a clean Error or yields tensors that are still self-consistent.
  const valid = serializeSafetensors(sample(), { format: 'pt' });
  const headerLen = Number(new DataView(valid.buffer).getBigUint64(0, true));
  let threw = 0;
  for (let i = 0; i < 400; i++) {
    const buf = valid.slice();
    const flips = 1 + Math.floor(rnd() * 3);
    for (let k = 0; k < flips; k++) buf[8 + Math.floor(rnd() * headerLen)] = 32 + Math.floor(rnd() * 95);
    let f;
    try {
      f = parseSafetensors(buf, SRC);
    } catch (e) {
      assert.ok(e instanceof Error && e.message.startsWith(`${SRC}: `), String(e));
      threw++;
      continue;
    }
    for (const [name, t] of f.tensors) {
      const sizes = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
      assert.equal(t.bytes.length, t.shape.reduce((a, b) => a * b, 1) * sizes[t.dtype], name);
      assert.ok(t.bytes.byteOffset + t.bytes.length <= buf.byteOffset + buf.length);
      toFloat32(t, name, SRC);
    }
  }
  assert.ok(threw > 200, `most corruptions should be detected (got ${threw})`);
});

test('serializeSafetensors rejects inconsistent input', () => {
  assert.throws(() => serializeSafetensors({ a: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), /tensor 'a'.*3 elements but data has 2/);
  assert.throws(() => serializeSafetensors({ a: { dtype: 'F32', shape: [-1], data: new Float32Array(0) } }), /tensor 'a': shape/);
  assert.throws(
    () => serializeSafetensors({ a: { dtype: 'F32', shape: [1], data: new Float64Array(1) } as unknown as WritableTensor }),
    /dtype F32 needs a Float32Array/,
  );
  assert.throws(() => serializeSafetensors({ __metadata__: { dtype: 'U8', shape: [0], data: new Uint8Array(0) } }), /reserved/);
  assert.throws(() => serializeSafetensors({}, { n: 3 } as unknown as Record<string, string>), /metadata 'n' is not a string/);
});

test('writeSafetensors / readSafetensors: atomic write, no temp files, overwrite, errors name the path', () => {
  const dir = tmpDir();
  try {
    // Missing directory: throws, leaves nothing behind.
    const missing = path.join(dir, 'no-such-dir', 'w.safetensors');
    // The message names the target and the problem, not the temp file's raw errno (issue 12 item 10).
    assert.throws(() => writeSafetensors(missing, sample()), /^Error: cannot write .*no-such-dir\/w\.safetensors: folder .*no-such-dir does not exist$/);
    assert.equal(fs.existsSync(path.dirname(missing)), false);
    assert.deepEqual(fs.readdirSync(dir), []);

    // Successful write: exactly the target file, identical to serializeSafetensors.
    const p = path.join(dir, 'w.safetensors');
    writeSafetensors(p, sample(), { run: 'a' });
    assert.deepEqual(fs.readdirSync(dir), ['w.safetensors']);
    assert.deepEqual(new Uint8Array(fs.readFileSync(p)), serializeSafetensors(sample(), { run: 'a' }));
    const f = readSafetensors(p);
    assert.deepEqual(f.metadata, { run: 'a' });
    assert.deepEqual(toFloat32(f.tensors.get('conv.weight')!, 'conv.weight', p), new Float32Array([1.5, -2, 3.25, 0, -0, 1e-30]));

    // Overwrite replaces the file completely.
    writeSafetensors(p, new Map([['only', { dtype: 'U8', shape: [2], data: new Uint8Array([4, 2]) } as WritableTensor]]), { run: 'b' });
    assert.deepEqual(fs.readdirSync(dir), ['w.safetensors']);
    const g = readSafetensors(p);
    assert.deepEqual([...g.tensors.keys()], ['only']);
    assert.deepEqual(g.metadata, { run: 'b' });

    // A failing serialization never touches the existing file.
    const before = fs.readFileSync(p);
    assert.throws(() => writeSafetensors(p, { bad: { dtype: 'F32', shape: [9], data: new Float32Array(1) } }));
    assert.deepEqual(fs.readFileSync(p), before);
    assert.deepEqual(fs.readdirSync(dir), ['w.safetensors']);

    // Renaming onto a directory fails after the temp file exists: the temp file must be cleaned up.
    const asDir = path.join(dir, 'is-a-dir.safetensors');
    fs.mkdirSync(asDir);
    fs.writeFileSync(path.join(asDir, 'keep'), 'x');
    assert.throws(() => writeSafetensors(asDir, sample()));
    assert.deepEqual(fs.readdirSync(dir).sort(), ['is-a-dir.safetensors', 'w.safetensors']);

    // Read errors name the path.
    const nope = path.join(dir, 'nope.safetensors');
    assert.throws(() => readSafetensors(nope), (e: Error) => e.message.startsWith(`${nope}: `) && e.message.includes('ENOENT'));
    const corrupt = path.join(dir, 'corrupt.safetensors');
    fs.writeFileSync(corrupt, new Uint8Array(5));
    assert.throws(() => readSafetensors(corrupt), (e: Error) => e.message === `${corrupt}: file is 5 bytes, too short for the 8-byte header length`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('float32View: aligned F32 bytes are a view into the file, anything else a converted copy', () => {
  const a = Float32Array.of(1.5, -2, 3.25);
  const buf = serializeSafetensors({ a: { dtype: 'F32', shape: [3], data: a }, h: { dtype: 'F16', shape: [2], data: float32ToFloat16(Float32Array.of(0.5, 2)) } });
  const f = parseSafetensors(buf, SRC);
  const v = float32View(f.tensors.get('a')!, 'a', SRC);
  assert.equal(v.buffer, buf.buffer); // no copy: the header padding keeps the data section 8-byte aligned
  assert.deepEqual([...v], [1.5, -2, 3.25]);
  const h = float32View(f.tensors.get('h')!, 'h', SRC);
  assert.notEqual(h.buffer, buf.buffer);
  assert.deepEqual([...h], [0.5, 2]);
  // The same bytes one byte off a 4-byte boundary: copied, same values.
  const shifted = new Uint8Array(buf.length + 1);
  shifted.set(buf, 1);
  const u = float32View(parseSafetensors(shifted.subarray(1), SRC).tensors.get('a')!, 'a', SRC);
  assert.notEqual(u.buffer, shifted.buffer);
  assert.deepEqual([...u], [1.5, -2, 3.25]);
});

test('loadModelFile reads the bundled model without copying its float32 tensors: each is a view into the one file buffer', () => {
  const m = loadModelFile(BUNDLED_MODEL);
  const f32 = [...readSafetensors(BUNDLED_MODEL).tensors].filter(([, t]) => t.dtype === 'F32').map(([name]) => name);
  const buffers = new Set(f32.map((name) => (m.weights.get(name) ?? m.extra.get(name))!.buffer));
  assert.equal(f32.length, 287);
  assert.equal(buffers.size, 1);
  assert.equal([...buffers][0]!.byteLength, fs.statSync(BUNDLED_MODEL).size);
  // num_batches_tracked is int64 in the file: converted into arrays of their own.
  assert.ok([...m.weights].filter(([k]) => k.endsWith('num_batches_tracked')).every(([, w]) => !buffers.has(w.buffer)));
});
