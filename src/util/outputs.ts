/** Outputs never overwrite inputs: a command checks its output paths against its input paths before any work. */
import { statSync } from 'node:fs';

/** An input of a command: its path and the flag (or argument) that named it. */
export interface NamedPath {
  path: string | undefined;
  flag: string;
}

/** True if both exist and are the same file (same device and inode: symlinks, hard links and `..` included). */
export function sameFile(a: string, b: string): boolean {
  const sa = statSync(a, { throwIfNoEntry: false });
  const sb = statSync(b, { throwIfNoEntry: false });
  return sa !== undefined && sb !== undefined && sa.dev === sb.dev && sa.ino === sb.ino;
}

/** Throws if the output `out` is one of `inputs`. */
export function refuseInputAsOutput(out: NamedPath, inputs: readonly NamedPath[]): void {
  if (out.path === undefined) return;
  for (const i of inputs) {
    if (i.path !== undefined && sameFile(out.path, i.path)) {
      throw new Error(`${out.flag} ${out.path} is the same file as ${i.flag} ${i.path}: refusing to overwrite an input; choose another ${out.flag}`);
    }
  }
}
