/** Writing a file so that readers see the old content or the new, never a partial file. */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Writes `data` to `${path}.tmp-<pid>-<random>` in the same directory, fsyncs it, renames it over `path` and
 * fsyncs the directory. On any error the temp file is removed and the error rethrown.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fd: number | undefined;
  let created = false;
  try {
    fd = fs.openSync(tmp, 'wx', 0o644);
    created = true;
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
