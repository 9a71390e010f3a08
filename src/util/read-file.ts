/**
 * Reading input files whole, bounded: regular files only (a FIFO would block forever, /dev/zero would grow memory
 * without end), never more than the caller expects. Every error message starts with the path.
 */
import * as fs from 'node:fs';
import { open } from 'node:fs/promises';
import nodePath from 'node:path';
import { fail, InputError } from './errors.js';

export interface ReadLimit {
  /** Refuse a file larger than this many bytes. */
  maxBytes: number;
  /** What the limit is, for the message ("the manifest's weights take"). */
  limitWhat?: string;
}

// O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one; regular files ignore it.
const OPEN_FLAGS = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0);

function kind(st: fs.Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isDirectory()) return 'a directory';
  if (st.isSocket()) return 'a socket';
  return 'not a file';
}

function openError(path: string, e: unknown): Error {
  const err = e as NodeJS.ErrnoException;
  return new InputError(path, err.code === 'ENOENT' ? 'no such file' : `cannot read: ${err.message}`, { cause: e });
}

/** The size of `st` if it is a regular file within the limit; else a clear error. */
function checkedSize(path: string, st: fs.Stats, limit: ReadLimit): number {
  if (!st.isFile()) fail(path, `not a regular file (${kind(st)})`);
  if (st.size > limit.maxBytes) fail(path, `${st.size} bytes, more than the ${limit.maxBytes} ${limit.limitWhat ?? 'allowed'}`);
  return st.size;
}

function shrunk(path: string, got: number, size: number): Error {
  return new InputError(path, `file changed while reading (${got} of ${size} bytes)`);
}

/** Reads a regular file of at most `limit.maxBytes` bytes. */
export function readFileBounded(path: string, limit: ReadLimit): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(path, OPEN_FLAGS);
  } catch (e) {
    throw openError(path, e);
  }
  try {
    const size = checkedSize(path, fs.fstatSync(fd), limit);
    const buf = Buffer.allocUnsafe(size);
    let off = 0;
    while (off < size) {
      const n = fs.readSync(fd, buf, off, size - off, off);
      if (n === 0) throw shrunk(path, off, size);
      off += n;
    }
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/** readFileBounded without blocking the event loop. */
export async function readFileBoundedAsync(path: string, limit: ReadLimit): Promise<Buffer> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, OPEN_FLAGS);
  } catch (e) {
    throw openError(path, e);
  }
  try {
    const size = checkedSize(path, await fh.stat(), limit);
    const buf = Buffer.allocUnsafe(size);
    let off = 0;
    while (off < size) {
      const { bytesRead } = await fh.read(buf, off, size - off, off);
      if (bytesRead === 0) throw shrunk(path, off, size);
      off += bytesRead;
    }
    return buf;
  } finally {
    await fh.close();
  }
}

/**
 * `rel` resolved inside `dir`: relative, no way out with `..`, and (symlinks followed) still inside `dir`.
 * Throws naming `what` otherwise. A missing file is returned as resolved, for the reader's own error.
 */
export function resolveInside(dir: string, rel: string, what: string): string {
  const root = fs.realpathSync(dir);
  const inside = (p: string): boolean => {
    const r = nodePath.relative(root, p);
    return r !== '' && r !== '..' && !r.startsWith(`..${nodePath.sep}`) && !nodePath.isAbsolute(r);
  };
  const joined = nodePath.resolve(root, rel);
  if (nodePath.isAbsolute(rel) || !inside(joined)) throw new Error(`${what} '${rel}' is outside the model's folder ${dir}`);
  let real: string;
  try {
    real = fs.realpathSync(joined);
  } catch {
    return joined;
  }
  if (!inside(real)) throw new Error(`${what} '${rel}' is outside the model's folder ${dir} (it resolves to ${real})`);
  return real;
}
