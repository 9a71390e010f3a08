/**
 * A Python pickle reader for tensors and dicts only: the binary opcodes of protocols 2-4 that torch.save emits,
 * and no code execution. Every GLOBAL goes through the caller's `findGlobal`, which returns a JS stand-in for the
 * few names it allows and refuses everything else; so a pickle that names `os.system` or `builtins.eval` fails
 * before anything is called. Opcodes that only build arbitrary objects (NEWOBJ, INST, OBJ, EXT*) are refused.
 *
 * Python values map to: None → null, bool → boolean, int → number (bigint beyond 2^53), float → number,
 * str → string, bytes → Uint8Array, list → Array, tuple → PyTuple, dict → Map.
 */
import { fail as failAt } from '../util/errors.js';

/** A Python tuple (kept apart from lists: torch passes shapes and persistent ids as tuples). */
export class PyTuple {
  constructor(readonly items: readonly unknown[]) {}
}

/** A Python callable that the reader allows (what a GLOBAL resolves to). */
export interface PyCallable {
  readonly pyName: string;
  call(args: readonly unknown[]): unknown;
}

export interface UnpickleOptions {
  /** Resolves a GLOBAL `module.name`; throws to refuse it. */
  findGlobal(module: string, name: string): unknown;
  /** Resolves a persistent id (torch: storages); throws to refuse it. */
  persistentLoad?(pid: unknown): unknown;
  /** BUILD (`obj.__setstate__(state)` in Python) on an allowed object; default: refuse. */
  build?(obj: unknown, state: unknown): void;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Unpickles one pickle starting at `offset`; returns the value and the offset after its STOP. */
export function unpickle(buf: Uint8Array, offset: number, source: string, opts: UnpickleOptions): { value: unknown; end: number } {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let pos = offset;
  let opAt = offset;

  const fail = (msg: string): never => failAt(source, `pickle at byte ${opAt}: ${msg}`);
  const need = (n: number): number => {
    if (n < 0 || pos + n > buf.length) fail(`truncated: needs ${n} more bytes, the data ends at byte ${buf.length}`);
    const at = pos;
    pos += n;
    return at;
  };
  const u8 = () => buf[need(1)]!;
  const u16 = () => dv.getUint16(need(2), true);
  const u32 = () => dv.getUint32(need(4), true);
  const u64 = () => {
    const v = dv.getBigUint64(need(8), true);
    if (v > MAX_SAFE) fail(`length ${v} is too large`);
    return Number(v);
  };
  const bytes = (n: number) => buf.subarray(need(n), pos);
  const text = (n: number): string => {
    try {
      return utf8.decode(bytes(n));
    } catch {
      return fail('string is not valid UTF-8');
    }
  };
  const line = (): string => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) fail('truncated: unterminated text line');
    const s = new TextDecoder('latin1').decode(buf.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length && stack.length <= marks.at(-1)!)) fail('stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) fail('no MARK on the stack');
    return stack.splice(m!);
  };
  const signed = (b: Uint8Array): number | bigint => {
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (b.length && b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= -MAX_SAFE && v <= MAX_SAFE ? Number(v) : v;
  };
  const memoGet = (i: number): unknown => {
    if (!memo.has(i)) fail(`memo ${i} was never stored`);
    return memo.get(i);
  };
  const setItems = (d: unknown, kv: unknown[]) => {
    if (!(d instanceof Map)) fail('SETITEM(S) on something that is not a dict');
    if (kv.length % 2) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < kv.length; i += 2) (d as Map<unknown, unknown>).set(kv[i], kv[i + 1]);
  };
  const appendItems = (l: unknown, items: unknown[]) => {
    if (!Array.isArray(l)) fail('APPEND(S) on something that is not a list');
    (l as unknown[]).push(...items);
  };
  const callGlobal = (module: string, name: string) => {
    stack.push(opts.findGlobal(module, name));
  };

  for (;;) {
    opAt = pos;
    const op = u8();
    switch (op) {
      case 0x80: { // PROTO
        const p = u8();
        if (p > 5) fail(`unsupported pickle protocol ${p}`);
        break;
      }
      case 0x95: // FRAME (protocol 4): only a size hint
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length) fail(`STOP with ${stack.length} values on the stack`);
        return { value: stack[0], end: pos };
      case 0x28: marks.push(stack.length); break; // MARK
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x4a: stack.push(dv.getInt32(need(4), true)); break; // BININT
      case 0x8a: stack.push(signed(bytes(u8()))); break; // LONG1
      case 0x8b: { // LONG4
        const n = dv.getInt32(need(4), true);
        if (n < 0) fail('negative LONG4 length');
        stack.push(signed(bytes(n)));
        break;
      }
      case 0x47: stack.push(dv.getFloat64(need(8), false)); break; // BINFLOAT (big-endian)
      case 0x58: stack.push(text(u32())); break; // BINUNICODE
      case 0x8c: stack.push(text(u8())); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(text(u64())); break; // BINUNICODE8
      case 0x55: stack.push(new TextDecoder('latin1').decode(bytes(u8()))); break; // SHORT_BINSTRING
      case 0x54: stack.push(new TextDecoder('latin1').decode(bytes(u32()))); break; // BINSTRING
      case 0x43: stack.push(bytes(u8()).slice()); break; // SHORT_BINBYTES
      case 0x42: stack.push(bytes(u32()).slice()); break; // BINBYTES
      case 0x29: stack.push(new PyTuple([])); break; // EMPTY_TUPLE
      case 0x85: stack.push(new PyTuple([pop()])); break; // TUPLE1
      case 0x86: { // TUPLE2
        const b = pop();
        stack.push(new PyTuple([pop(), b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        stack.push(new PyTuple([pop(), b, c]));
        break;
      }
      case 0x74: stack.push(new PyTuple(popMark())); break; // TUPLE
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x6c: stack.push(popMark()); break; // LIST
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x64: { // DICT
        const d = new Map();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const kv = popMark();
        setItems(top(), kv);
        break;
      }
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: stack.push(memoGet(u8())); break; // BINGET
      case 0x6a: stack.push(memoGet(u32())); break; // LONG_BINGET
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x63: { // GLOBAL "module\nname\n"
        const module = line();
        callGlobal(module, line());
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        callGlobal(module as string, name as string);
        break;
      }
      case 0x52: { // REDUCE: callable(*args)
        const args = pop();
        const fn = pop();
        if (!(args instanceof PyTuple)) fail('REDUCE arguments are not a tuple');
        if (!isCallable(fn)) fail(`REDUCE on ${describe(fn)}, which is not an allowed callable`);
        stack.push((fn as PyCallable).call((args as PyTuple).items));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        if (!opts.build) fail(`BUILD (setting the state of ${describe(top())}) is not allowed`);
        opts.build!(top(), state);
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop();
        if (!opts.persistentLoad) fail('persistent ids are not allowed here');
        stack.push(opts.persistentLoad!(pid));
        break;
      }
      default:
        fail(`opcode 0x${op.toString(16).padStart(2, '0')} ('${String.fromCharCode(op)}') is not supported: ` +
          'only the opcodes that rebuild tensors, dicts, lists, tuples and scalars are (no object construction)');
    }
  }
}

function isCallable(x: unknown): x is PyCallable {
  return typeof x === 'object' && x !== null && typeof (x as PyCallable).call === 'function' && typeof (x as PyCallable).pyName === 'string';
}

/** A short description of a pickled value for error messages. */
export function describe(x: unknown): string {
  if (x === null) return 'None';
  if (isCallable(x)) return x.pyName;
  if (x instanceof PyTuple) return `a tuple of ${x.items.length}`;
  if (x instanceof Map) return `a dict of ${x.size}`;
  if (Array.isArray(x)) return `a list of ${x.length}`;
  if (x instanceof Uint8Array) return `bytes (${x.length})`;
  if (typeof x === 'object') return (x as object).constructor?.name ?? 'an object';
  return `${typeof x} ${String(x).slice(0, 40)}`;
}
