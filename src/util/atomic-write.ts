/** Writing a file so that readers see the old content or the new, never a partial file. */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { randomBytes } from 'node:crypto';

/** `<target>.tmp-<pid>-<12 hex>`: a temp file of writeFileAtomic. */
const TEMP_NAME = /^(.+)\.tmp-(\d+)-[0-9a-f]{12}$/;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the temp files of writes into `dir` whose process is gone (killed mid-write: they would stay forever).
 * Files of live processes are theirs. Returns the names removed.
 */
export function removeStaleTemps(dir: string): string[] {
  const removed: string[] = [];
  for (const name of fs.readdirSync(dir)) {
    const m = TEMP_NAME.exec(name);
    if (!m || alive(Number(m[2]))) continue;
    try {
      fs.unlinkSync(nodePath.join(dir, name));
      removed.push(name);
    } catch {
      /* gone already, or not ours to remove */
    }
  }
  return removed;
}

/** The error for an open that failed: names the target and the problem, not the temp file. */
function openError(path: string, e: unknown): Error {
  const err = e as NodeJS.ErrnoException;
  const dir = nodePath.dirname(nodePath.resolve(path));
  const problem =
    err.code === 'ENOENT' ? `folder ${dir} does not exist` :
    err.code === 'ENOTDIR' ? `${dir} is not a folder` :
    err.code === 'EACCES' || err.code === 'EPERM' ? `no permission to write in ${dir}` :
    err.code === 'EROFS' ? `${dir} is on a read-only file system` : err.message;
  return new Error(`cannot write ${path}: ${problem}`, { cause: e });
}

/**
 * Writes `data` to `${path}.tmp-<pid>-<random>` in the same directory, fsyncs it, renames it over `path` and
 * fsyncs the directory. On any error the temp file is removed and the error rethrown. Stale temp files of
 * killed writers in that directory are removed first.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx', 0o644);
  } catch (e) {
    throw openError(path, e);
  }
  let created = true;
  try {
    removeStaleTemps(nodePath.dirname(nodePath.resolve(path)));
    let off = 0;
    while (off < bytes.length) off += fs.writeSync(fd, bytes, off, bytes.length - off);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, path);
    created = false;
  } catch (e) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    if (created) {
      try {
        fs.unlinkSync(tmp);
      } catch {
        /* already failing */
      }
    }
    throw e;
  }
  fsyncDir(nodePath.dirname(nodePath.resolve(path)));
}

/** Makes a rename durable. Directories cannot be opened for fsync on Windows, where this is a no-op. */
function fsyncDir(dir: string): void {
  if (process.platform === 'win32') return;
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}
