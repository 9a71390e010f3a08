/**
 * Compiled native programs by key (kind and batch size), least recently used first out, within a byte budget.
 * A program holds every activation of its batch size, so one per distinct batch size grows without bound on a
 * server; evicted programs are released at once (not when V8 gets round to collecting them).
 */
import type { NativeProgram } from './binding.js';

export interface CachedProgram {
  prog: NativeProgram;
  /** The program's own memory plus its input/output arrays. */
  bytes: number;
}

export interface ProgramCacheStats {
  programs: number;
  bytes: number;
  evictions: number;
}

export class ProgramCache<P extends CachedProgram> {
  private readonly m = new Map<string, P>();
  private total = 0;
  private evicted = 0;

  /** `budget` bytes; the most recently used program is kept even when it alone is larger. */
  constructor(readonly budget: number) {
    if (!(budget >= 0)) throw new Error(`program cache budget must be a non-negative number of bytes, got ${budget}`);
  }

  get(key: string): P | undefined {
    const p = this.m.get(key);
    if (p) {
      this.m.delete(key);
      this.m.set(key, p);
    }
    return p;
  }

  add(key: string, p: P): void {
    this.remove(key);
    this.m.set(key, p);
    this.total += p.bytes;
    for (const [k] of this.m) {
      if (this.total <= this.budget || this.m.size === 1) break;
      this.remove(k);
      this.evicted++;
    }
  }

  values(): IterableIterator<P> {
    return this.m.values();
  }

  stats(): ProgramCacheStats {
    return { programs: this.m.size, bytes: this.total, evictions: this.evicted };
  }

  private remove(key: string): void {
    const p = this.m.get(key);
    if (!p) return;
    this.m.delete(key);
    this.total -= p.bytes;
    p.prog.release();
  }
}
