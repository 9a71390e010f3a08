/**
 * Reading and writing the safetensors format (https://github.com/huggingface/safetensors).
 *
 * Layout: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON (possibly padded with trailing spaces)
 * mapping tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the start of
 * the data section), plus an optional "__metadata__": {string: string}; then the data section, which holds
 * the tensors' raw little-endian bytes.
 *
 * Parsing validates everything it relies on and throws an Error whose message starts with `${source}: `.
 */
import * as fs from 'node:fs';
import { writeFileAtomic } from '../util/atomic-write.js';
import { failFor, InputError } from '../util/errors.js';

/** Element types understood by this module. */
export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** One tensor of a parsed file. */
export interface TensorInfo {
  dtype: DType;
  shape: number[];
  /** raw little-endian bytes (a view, no copy) */
  bytes: Uint8Array;
}

/** A parsed safetensors file: tensors in header order, and the `__metadata__` strings (empty if absent). */
export interface SafetensorsFile {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/** A tensor to serialize: the typed array must hold exactly product(shape) elements. */
export type WritableTensor =
  | { dtype: 'F32'; shape: number[]; data: Float32Array }
  | { dtype: 'F16'; shape: number[]; data: Uint16Array }
  | { dtype: 'I64'; shape: number[]; data: BigInt64Array }
  | { dtype: 'I32'; shape: number[]; data: Int32Array }
  | { dtype: 'U8'; shape: number[]; data: Uint8Array }
  | { dtype: 'F64'; shape: number[]; data: Float64Array };

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
});

/** Headers larger than this are rejected as corrupt rather than decoded. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const METADATA_KEY = '__metadata__';
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function isDType(x: unknown): x is DType {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, x);
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function isNonNegSafeInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function fmtShape(shape: readonly unknown[]): string {
  return `[${shape.map((d) => String(d)).join(',')}]`;
}

/** Product of a shape's dims as a BigInt (cannot overflow). */
function elementCount(shape: readonly number[]): bigint {
  let n = 1n;
  for (const d of shape) n *= BigInt(d);
  return n;
}

interface Entry {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Parses a safetensors file held in memory. The returned tensors' `bytes` are views into `buf` (no copy).
 * `source` (usually the file name) prefixes every error message.
 */
export function parseSafetensors(buf: Uint8Array, source: string): SafetensorsFile {
  const fail = failFor(source);
  if (buf.length < 8) fail(`file is ${buf.length} bytes, too short for the 8-byte header length`);

  const headerLenBig = new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true);
  const remaining = buf.length - 8;
  if (headerLenBig > BigInt(remaining)) {
    fail(
      `header length ${headerLenBig} exceeds file size ${buf.length} ` +
        `(only ${remaining} bytes follow the 8-byte length prefix)`,
    );
  }
  if (headerLenBig > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${headerLenBig} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const headerLen = Number(headerLenBig);

  let headerText = '';
  try {
    headerText = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(buf.subarray(8, 8 + headerLen));
  } catch {
    fail(`header (${headerLen} bytes) is not valid UTF-8`);
  }
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(header)) {
    fail(`header is not a JSON object (got ${header === null ? 'null' : Array.isArray(header) ? 'an array' : typeof header})`);
  }
  const hdr = header as Record<string, unknown>;

  const dataStart = 8 + headerLen;
  const dataLen = buf.length - dataStart;

  const metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, value] of Object.entries(hdr)) {
    if (name === METADATA_KEY) {
      if (value === null) continue; // the reference implementation treats null as "no metadata"
      if (!isPlainObject(value)) fail(`__metadata__ is not an object`);
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__ '${k}' is not a string (got ${v === null ? 'null' : typeof v})`);
        metadata[k] = v as string;
      }
      continue;
    }
    const t = `tensor '${name}'`;
    if (!isPlainObject(value)) fail(`${t}: entry is not an object`);
    const v = value as Record<string, unknown>;

    const dtype = v['dtype'];
    if (dtype === undefined) fail(`${t}: missing dtype`);
    if (!isDType(dtype)) fail(`${t}: unknown dtype ${typeof dtype === 'string' ? `'${dtype}'` : JSON.stringify(dtype)}`);

    const shape = v['shape'];
    if (shape === undefined) fail(`${t}: missing shape`);
    if (!Array.isArray(shape)) fail(`${t}: shape is not an array`);
    const shapeArr = shape as unknown[];
    shapeArr.forEach((d, i) => {
      if (!isNonNegSafeInt(d)) fail(`${t}: shape ${JSON.stringify(shapeArr)} has invalid dimension ${JSON.stringify(d)} at index ${i} (must be a non-negative integer)`);
    });

    const offs = v['data_offsets'];
    if (offs === undefined) fail(`${t}: missing data_offsets`);
    if (!Array.isArray(offs) || offs.length !== 2) fail(`${t}: data_offsets ${JSON.stringify(offs)} is not a [begin, end] pair`);
    const [begin, end] = offs as unknown[];
    if (!isNonNegSafeInt(begin) || !isNonNegSafeInt(end)) {
      fail(`${t}: data_offsets ${JSON.stringify(offs)} must be two non-negative integers`);
    }
    const b = begin as number;
    const e = end as number;
    if (b > e) fail(`${t}: data_offsets [${b}, ${e}] has begin > end`);
    if (e > dataLen) fail(`${t}: data_offsets [${b}, ${e}] out of bounds (data section is ${dataLen} bytes)`);

    const dims = shapeArr as number[];
    const dt = dtype as DType;
    const expected = elementCount(dims) * BigInt(DTYPE_SIZE[dt]);
    if (expected !== BigInt(e - b)) {
      fail(`${t}: shape ${fmtShape(dims)} × ${dt} = ${expected} bytes but data_offsets span ${e - b} bytes`);
    }
    entries.push({ name, dtype: dt, shape: dims.slice(), begin: b, end: e });
  }

  // Ranges must not overlap, and must cover the data section from 0 without gaps.
  const sorted = entries.slice().sort((x, y) => x.begin - y.begin || x.end - y.end);
  let cursor = 0;
  let last: Entry | undefined;
  for (const en of sorted) {
    if (en.begin < cursor && last !== undefined) {
      fail(`tensor '${en.name}' overlaps tensor '${last.name}' (data_offsets [${en.begin}, ${en.end}] vs [${last.begin}, ${last.end}])`);
    }
    if (en.begin > cursor) {
      fail(
        `${en.begin - cursor} uncovered bytes in the data section at [${cursor}, ${en.begin})` +
          (last ? ` between tensor '${last.name}' and tensor '${en.name}'` : ` before tensor '${en.name}'`),
      );
    }
    if (en.end > cursor || last === undefined) {
      cursor = en.end;
      last = en;
    }
  }
  // Bytes after the last tensor are tolerated (some writers pad the data section).

  const tensors = new Map<string, TensorInfo>();
  for (const en of entries) {
    tensors.set(en.name, {
      dtype: en.dtype,
      shape: en.shape,
      bytes: buf.subarray(dataStart + en.begin, dataStart + en.end),
    });
  }
  return { tensors, metadata };
}

/** Reads and parses a safetensors file; every error message starts with the path. */
export function readSafetensors(path: string): SafetensorsFile {
  let buf: Uint8Array;
  try {
    buf = fs.readFileSync(path);
  } catch (e) {
    throw new InputError(path, `cannot read file: ${(e as Error).message}`, { cause: e });
  }
  return parseSafetensors(buf, path);
}

let f16Table: Float32Array | undefined;

/** Exact float16 -> float32 lookup table (all 65536 bit patterns), built on first use. */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = halfBitsToNumber(h);
  f16Table = t;
  return t;
}

/** Converts one IEEE binary16 bit pattern to its exact value. */
export function halfBitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // zero or subnormal
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/**
 * {@link toFloat32} without the copy where none is needed: little-endian F32 bytes at a 4-byte-aligned offset
 * (the data section of a file written with the usual 8-byte header padding) come back as a view into them, so
 * a model file is not copied once more on load. The view shares the file buffer's memory; any other tensor is
 * converted into a new array.
 */
export function float32View(t: TensorInfo, name: string, source: string): Float32Array {
  const b = t.bytes;
  if (t.dtype !== 'F32' || !LITTLE_ENDIAN_HOST || b.byteOffset % 4 !== 0 || elementCount(t.shape) * 4n !== BigInt(b.length)) return toFloat32(t, name, source);
  return new Float32Array(b.buffer, b.byteOffset, b.length / 4);
}

/**
 * Converts a tensor of any supported dtype to a new Float32Array (a copy). Works for byte views at any
 * alignment. I64 values beyond 2^53 lose precision, as any float32 conversion must; BOOL maps nonzero to 1.
 */
export function toFloat32(t: TensorInfo, name: string, source: string): Float32Array {
  const size = DTYPE_SIZE[t.dtype];
  if (size === undefined) throw new InputError(source, `tensor '${name}': unknown dtype '${String(t.dtype)}'`);
  const count = elementCount(t.shape);
  if (count * BigInt(size) !== BigInt(t.bytes.length)) {
    throw new Error(
      `${source}: tensor '${name}': shape ${fmtShape(t.shape)} × ${t.dtype} = ${count * BigInt(size)} bytes but it has ${t.bytes.length} bytes`,
    );
  }
  const n = Number(count);
  const out = new Float32Array(n);
  const b = t.bytes;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  switch (t.dtype) {
    case 'F32':
      if (LITTLE_ENDIAN_HOST) {
        new Uint8Array(out.buffer).set(b);
      } else {
        for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      }
      break;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      break;
    case 'F16': {
      const table = halfTable();
      for (let i = 0; i < n; i++) out[i] = table[b[2 * i]! | (b[2 * i + 1]! << 8)]!;
      break;
    }
    case 'BF16': {
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = ((b[2 * i]! | (b[2 * i + 1]! << 8)) << 16) >>> 0;
      break;
    }
    case 'I64':
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(i * 8, true));
      break;
    case 'I32':
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(i * 4, true);
      break;
    case 'I16':
      for (let i = 0; i < n; i++) out[i] = dv.getInt16(i * 2, true);
      break;
    case 'I8':
      for (let i = 0; i < n; i++) out[i] = dv.getInt8(i);
      break;
    case 'U8':
      for (let i = 0; i < n; i++) out[i] = b[i]!;
      break;
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = b[i] ? 1 : 0;
      break;
  }
  return out;
}

/** Converts float32 values to IEEE binary16 bit patterns, rounding to nearest, ties to even (NaN stays NaN). */
export function float32ToFloat16(f: Float32Array): Uint16Array {
  const src = new Float32Array(f); // aligned copy, so the Uint32 view below is always valid
  const bits = new Uint32Array(src.buffer, 0, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    const mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
      continue;
    }
    const he = exp - 112; // rebias 127 -> 15
    if (he >= 31) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (he <= 0) {
      if (he < -10) {
        out[i] = sign; // below half the smallest subnormal: rounds to zero
        continue;
      }
      const m = mant | 0x800000;
      const shift = 14 - he; // 14..24
      let hm = m >>> shift;
      const rem = m & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && hm & 1)) hm++;
      out[i] = sign | hm; // hm may carry into 0x400 = smallest normal, which is the right encoding
      continue;
    }
    let h = (he << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // carry may reach 0x7c00 = Infinity, as it should
    out[i] = sign | h;
  }
  return out;
}

const WRITABLE_ARRAY: Record<WritableTensor['dtype'], { ctor: Function; name: string }> = {
  F32: { ctor: Float32Array, name: 'Float32Array' },
  F16: { ctor: Uint16Array, name: 'Uint16Array' },
  I64: { ctor: BigInt64Array, name: 'BigInt64Array' },
  I32: { ctor: Int32Array, name: 'Int32Array' },
  U8: { ctor: Uint8Array, name: 'Uint8Array' },
  F64: { ctor: Float64Array, name: 'Float64Array' },
};

/**
 * Serializes tensors (in insertion order, contiguous, no gaps) and optional string metadata (keys sorted). The JSON header
 * is padded with spaces so its length is a multiple of 8, keeping the data section 8-byte aligned.
 */
export function serializeSafetensors(
  tensors: Record<string, WritableTensor> | Map<string, WritableTensor>,
  metadata?: Record<string, string>,
): Uint8Array {
  const list: [string, WritableTensor][] = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    const md: Record<string, string> = {};
    // Sorted: the same metadata gives the same bytes whatever order it was built in.
    for (const [k, v] of Object.entries(metadata).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (typeof v !== 'string') throw new Error(`serializeSafetensors: metadata '${k}' is not a string`);
      md[k] = v;
    }
    header[METADATA_KEY] = md;
  }
  let offset = 0;
  for (const [name, t] of list) {
    const where = `serializeSafetensors: tensor '${name}'`;
    if (name === METADATA_KEY) throw new Error(`${where}: name is reserved`);
    if (Object.prototype.hasOwnProperty.call(header, name)) throw new Error(`${where}: duplicate name`);
    const spec = WRITABLE_ARRAY[t.dtype];
    if (spec === undefined) throw new Error(`${where}: unsupported dtype '${String(t.dtype)}'`);
    if (!(t.data instanceof spec.ctor)) throw new Error(`${where}: dtype ${t.dtype} needs a ${spec.name}`);
    if (!Array.isArray(t.shape) || !t.shape.every(isNonNegSafeInt)) {
      throw new Error(`${where}: shape ${JSON.stringify(t.shape)} must be an array of non-negative integers`);
    }
    if (elementCount(t.shape) !== BigInt(t.data.length)) {
      throw new Error(`${where}: shape ${fmtShape(t.shape)} has ${elementCount(t.shape)} elements but data has ${t.data.length}`);
    }
    const nbytes = t.data.byteLength;
    header[name] = { dtype: t.dtype, shape: t.shape.slice(), data_offsets: [offset, offset + nbytes] };
    offset += nbytes;
  }

  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + padded);

  let pos = 8 + padded;
  const dv = new DataView(out.buffer);
  for (const [, t] of list) {
    const d = t.data;
    if (LITTLE_ENDIAN_HOST || t.dtype === 'U8') {
      out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), pos);
    } else {
      for (let i = 0; i < d.length; i++) {
        switch (t.dtype) {
          case 'F32': dv.setFloat32(pos + 4 * i, t.data[i]!, true); break;
          case 'F64': dv.setFloat64(pos + 8 * i, t.data[i]!, true); break;
          case 'F16': dv.setUint16(pos + 2 * i, t.data[i]!, true); break;
          case 'I32': dv.setInt32(pos + 4 * i, t.data[i]!, true); break;
          case 'I64': dv.setBigInt64(pos + 8 * i, t.data[i]!, true); break;
        }
      }
    }
    pos += d.byteLength;
  }
  return out;
}

/**
 * Serializes and writes atomically: the bytes go to `${path}.tmp-<pid>-<random>` in the same directory,
 * which is fsynced, renamed over `path`, and the directory is fsynced. On any error the temp file is removed
 * and the error rethrown; `path` is never left holding a partial file.
 */
export function writeSafetensors(
  path: string,
  tensors: Record<string, WritableTensor> | Map<string, WritableTensor>,
  metadata?: Record<string, string>,
): void {
  writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}
