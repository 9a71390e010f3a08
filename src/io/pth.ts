/**
 * PyTorch `.pth` state dicts (torch.save) read without running any of their code.
 *
 * Two layouts: the zip archive of torch ≥ 1.6 (`PREFIX/data.pkl` + one record `PREFIX/data/KEY` per storage;
 * PREFIX is `archive` or the saved file's base name), and the older sequential format (magic-number pickle,
 * protocol pickle, sys-info pickle, the state-dict pickle, the sorted storage keys, then each storage as an
 * 8-byte element count and its bytes), which torchvision's older checkpoints use.
 *
 * The pickle may name only these globals: collections.OrderedDict, torch._utils._rebuild_tensor_v2 and
 * _rebuild_parameter, torch.Size and the torch.*Storage types. Anything else (`os.system`, `builtins.eval`, an
 * arbitrary class) is refused with the file and the global named. Tensors come out contiguous (strided views
 * are copied element by element), as safetensors-style TensorInfo, so loadWeights takes them like a
 * .safetensors file's.
 */
import { createRequire } from 'node:module';
import { describe, PyTuple, unpickle, type PyCallable, type UnpickleOptions } from './pickle.js';
import { DTYPE_SIZE, type DType, type SafetensorsFile, type TensorInfo } from './safetensors.js';
import { readFileBounded } from '../util/read-file.js';
import { stridedOffsets } from '../util/strided.js';
import { failFor, InputError } from '../util/errors.js';

/** torch storage classes → safetensors dtypes. */
const STORAGE_DTYPES: Readonly<Record<string, DType>> = {
  FloatStorage: 'F32', HalfStorage: 'F16', DoubleStorage: 'F64', BFloat16Storage: 'BF16', LongStorage: 'I64',
  IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8', BoolStorage: 'BOOL',
};

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;
const MAX_FILE = { maxBytes: 2 ** 31, limitWhat: 'bytes a .pth file may have here' };

/** Where a storage's bytes are: filled from a zip record or from the legacy file's tail. */
class Storage {
  bytes?: Uint8Array;
  constructor(readonly key: string, readonly dtype: DType, readonly numel: number) {}
}

/** A tensor as _rebuild_tensor_v2 describes it: a strided view of a storage. */
class TensorRef {
  constructor(readonly storage: Storage, readonly offset: number, readonly shape: number[], readonly stride: number[]) {}
}

class StorageType {
  constructor(readonly name: string, readonly dtype: DType) {}
}

const callable = (pyName: string, call: (args: readonly unknown[]) => unknown): PyCallable => ({ pyName, call });

/** True if the bytes start like a .pth file (zip archive or legacy torch.save). */
export function isPth(head: Uint8Array): boolean {
  return isZip(head) || (head[0] === 0x80 && head[1] === 0x02 && head[2] === 0x8a && head[3] === 0x0a);
}

const isZip = (b: Uint8Array) => b[0] === 0x50 && b[1] === 0x4b && b[2] === 0x03 && b[3] === 0x04;

/**
 * The entry count and offset of the central directory, found as fflate finds them (the end record, then the
 * zip64 record torch.save writes), must fit the file: fflate walks that many entries without a bounds check,
 * so a corrupt count of 2^31 spins for minutes instead of failing.
 */
function checkZipDirectory(buf: Uint8Array): void {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let e = buf.length - 22;
  while (e > 0 && v.getUint32(e, true) !== 0x06054b50) e--;
  if (e <= 0) return; // fflate reports the missing end record itself
  let count = v.getUint16(e + 8, true);
  let offset = v.getUint32(e + 16, true);
  if (e >= 20 && v.getUint32(e - 20, true) === 0x07064b50) {
    const z = v.getUint32(e - 12, true);
    if (z + 56 <= buf.length && v.getUint32(z, true) === 0x06064b50) {
      count = v.getUint32(z + 32, true);
      offset = v.getUint32(z + 48, true);
    }
  }
  // A central directory entry takes at least 46 bytes.
  if (offset > buf.length || count * 46 > buf.length - offset) {
    throw new Error(`its central directory lists ${count} entries at offset ${offset}, more than the ${buf.length}-byte file holds`);
  }
}

/** Reads a .pth state dict; every error message starts with the path. */
export function readPth(path: string): SafetensorsFile {
  return parsePth(readFileBounded(path, MAX_FILE), path);
}

export function parsePth(buf: Uint8Array, source: string): SafetensorsFile {
  const fail = failFor(source);
  const storages = new Map<string, Storage>();
  const opts = pickleOptions(source, storages);
  let root: unknown;
  if (isZip(buf)) {
    let files: Record<string, Uint8Array>;
    try {
      // Required here, not imported: every command that takes --weights imports this module, few read a .pth.
      const { unzipSync } = createRequire(import.meta.url)('fflate') as typeof import('fflate');
      checkZipDirectory(buf);
      files = unzipSync(buf);
    } catch (e) {
      return fail(`not a readable zip archive (truncated or corrupt: ${(e as Error).message})`);
    }
    const names = Object.keys(files);
    if (names.some((n) => /^[^/]+\/code\//.test(n) || n.endsWith('/constants.pkl'))) {
      fail('a TorchScript archive (torch.jit.save), not a state dict: save model.state_dict() with torch.save instead');
    }
    const pkl = names.filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkl.length !== 1) fail(`zip archive without exactly one PREFIX/data.pkl (entries: ${names.slice(0, 8).join(', ')})`);
    const prefix = pkl[0]!.slice(0, -'data.pkl'.length);
    root = unpickle(files[pkl[0]!]!, 0, source, opts).value;
    for (const s of storages.values()) {
      const rec = files[`${prefix}data/${s.key}`];
      if (!rec) fail(`storage record ${prefix}data/${s.key} is missing from the archive`);
      s.bytes = rec;
    }
  } else {
    root = readLegacy(buf, source, opts, storages);
  }
  return { tensors: materialize(stateDict(root, source), source), metadata: {} };
}

function pickleOptions(source: string, storages: Map<string, Storage>): UnpickleOptions {
  const fail = failFor(source);
  const rebuildTensor = callable('torch._utils._rebuild_tensor_v2', (a) => {
    const [storage, offset, size, stride] = a;
    if (!(storage instanceof Storage)) return fail(`_rebuild_tensor_v2 on ${describe(storage)}, not a storage`);
    return new TensorRef(storage, intArg(offset, 'storage offset', source), intList(size, 'size', source), intList(stride, 'stride', source));
  });
  const allowed: Record<string, unknown> = {
    'collections.OrderedDict': callable('collections.OrderedDict', (a) => (a.length === 0 ? new Map() : fail('OrderedDict with arguments is not supported'))),
    'torch._utils._rebuild_tensor_v2': rebuildTensor,
    'torch._utils._rebuild_parameter': callable('torch._utils._rebuild_parameter', (a) =>
      a[0] instanceof TensorRef ? a[0] : fail(`_rebuild_parameter on ${describe(a[0])}, not a tensor`)),
    'torch.Size': callable('torch.Size', (a) => new PyTuple(intList(a[0], 'torch.Size', source))),
  };
  for (const [name, dtype] of Object.entries(STORAGE_DTYPES)) allowed[`torch.${name}`] = new StorageType(name, dtype);
  return {
    findGlobal(module, name) {
      const full = `${module}.${name}`;
      const v = allowed[full];
      if (v === undefined) {
        fail(`refusing to load: the pickle names the global '${full}', and a .pth may name only ${Object.keys(allowed).slice(0, 5).join(', ')}, torch.*Storage ` +
          '(a state dict of tensors never needs anything else; loading this with torch.load would run code)');
      }
      return v;
    },
    // ('storage', StorageType, key, location, numel[, view_metadata (legacy)])
    persistentLoad(pid) {
      const t = pid instanceof PyTuple ? pid.items : [];
      const [kind, type, key, , numel, view] = t;
      if (kind !== 'storage' || !(type instanceof StorageType) || typeof key !== 'string') {
        return fail(`unexpected persistent id ${describe(pid)} (expected a torch storage)`);
      }
      const n = intArg(numel, 'storage size', source);
      let s = storages.get(key);
      if (!s) storages.set(key, (s = new Storage(key, type.dtype, n)));
      if (s.dtype !== type.dtype) fail(`storage ${key} is used as both ${s.dtype} and ${type.dtype}`);
      if (view !== undefined && view !== null) fail(`storage ${key} is a legacy storage view, which this reader does not support`);
      return s;
    },
    // OrderedDict's only state is its `_metadata` attribute (module versions): nothing to keep.
    build(obj, state) {
      if (!(obj instanceof Map) || !(state instanceof Map)) fail(`cannot set the state of ${describe(obj)} to ${describe(state)}`);
    },
  };
}

function readLegacy(buf: Uint8Array, source: string, opts: UnpickleOptions, storages: Map<string, Storage>): unknown {
  const fail = failFor(source);
  const plain: UnpickleOptions = { findGlobal: opts.findGlobal };
  const magic = unpickle(buf, 0, source, plain);
  if (magic.value !== LEGACY_MAGIC) fail('not a PyTorch file (legacy magic number missing)');
  const protocol = unpickle(buf, magic.end, source, plain);
  if (protocol.value !== LEGACY_PROTOCOL) fail(`unsupported legacy torch.save protocol ${String(protocol.value)}`);
  const info = unpickle(buf, protocol.end, source, plain);
  if (!(info.value instanceof Map) || info.value.get('little_endian') !== true) fail('legacy file is not little-endian');
  const main = unpickle(buf, info.end, source, opts);
  const keys = unpickle(buf, main.end, source, plain);
  if (!Array.isArray(keys.value) || !keys.value.every((k) => typeof k === 'string')) fail('legacy storage key list is malformed');
  let pos = keys.end;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (const key of keys.value as string[]) {
    const s = storages.get(key);
    if (!s) fail(`legacy storage ${key} is listed but never used`);
    if (pos + 8 > buf.length) fail(`truncated: storage ${key} starts at byte ${pos}, the file has ${buf.length}`);
    const numel = Number(dv.getBigInt64(pos, true));
    if (numel !== s!.numel) fail(`storage ${key} holds ${numel} elements, the pickle says ${s!.numel}`);
    const nbytes = numel * DTYPE_SIZE[s!.dtype];
    if (pos + 8 + nbytes > buf.length) fail(`truncated: storage ${key} needs ${nbytes} bytes at byte ${pos + 8}, the file has ${buf.length}`);
    s!.bytes = buf.subarray(pos + 8, pos + 8 + nbytes);
    pos += 8 + nbytes;
  }
  return main.value;
}

/** The tensors of a state dict, or of one held under 'state_dict' / 'model' / 'net'; 'module.' prefixes dropped. */
function stateDict(root: unknown, source: string): Map<string, TensorRef> {
  if (!(root instanceof Map)) throw new InputError(source, `holds ${describe(root)}, not a state dict`);
  let dict: Map<unknown, unknown> = root;
  if (![...dict.values()].some((v) => v instanceof TensorRef)) {
    const inner = ['state_dict', 'model', 'net'].map((k) => dict.get(k)).find((v) => v instanceof Map);
    if (inner) dict = inner as Map<unknown, unknown>;
  }
  const out = new Map<string, TensorRef>();
  for (const [k, v] of dict) {
    if (typeof k !== 'string') throw new InputError(source, `state-dict key ${describe(k)} is not a string`);
    if (!(v instanceof TensorRef)) throw new InputError(source, `'${k}' is ${describe(v)}, not a tensor`);
    out.set(k.startsWith('module.') ? k.slice(7) : k, v);
  }
  if (out.size === 0) throw new InputError(source, `the state dict holds no tensors`);
  return out;
}

/** Contiguous little-endian bytes of every tensor, bounds-checked against its storage. */
function materialize(refs: Map<string, TensorRef>, source: string): Map<string, TensorInfo> {
  const out = new Map<string, TensorInfo>();
  for (const [name, t] of refs) {
    const fail = failFor(`${source}: tensor '${name}'`);
    const { storage: s, shape, stride, offset } = t;
    if (shape.length !== stride.length) fail(`size [${shape}] and stride [${stride}] differ in rank`);
    const size = DTYPE_SIZE[s.dtype];
    const bytes = s.bytes!;
    if (bytes.length < s.numel * size) fail(`storage ${s.key} has ${bytes.length} bytes, fewer than its ${s.numel} × ${s.dtype}`);
    const numel = shape.reduce((a, b) => a * b, 1);
    let last = offset;
    shape.forEach((d, i) => (last += (d - 1) * stride[i]!));
    if (numel > 0 && (offset < 0 || last >= s.numel)) fail(`view (offset ${offset}, size [${shape}], stride [${stride}]) reaches past its ${s.numel}-element storage`);
    let data: Uint8Array;
    if (numel === 0) data = new Uint8Array(0);
    else if (isContiguous(shape, stride)) data = bytes.slice(offset * size, (offset + numel) * size);
    else data = gather(bytes, size, offset, shape, stride, numel);
    out.set(name, { dtype: s.dtype, shape, bytes: data });
  }
  return out;
}

function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let want = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== want) return false;
    want *= shape[i]!;
  }
  return true;
}

/** Copies a strided view into row-major order. */
function gather(src: Uint8Array, size: number, offset: number, shape: readonly number[], stride: readonly number[], numel: number): Uint8Array {
  const out = new Uint8Array(numel * size);
  const at = stridedOffsets(shape, stride, offset);
  for (let i = 0; i < numel; i++) out.set(src.subarray(at[i]! * size, (at[i]! + 1) * size), i * size);
  return out;
}

function intArg(x: unknown, what: string, source: string): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new InputError(source, `${what} ${describe(x)} is not a non-negative integer`);
  return x;
}

function intList(x: unknown, what: string, source: string): number[] {
  if (!(x instanceof PyTuple)) throw new InputError(source, `${what} is ${describe(x)}, not a tuple`);
  return x.items.map((v) => intArg(v, what, source));
}
