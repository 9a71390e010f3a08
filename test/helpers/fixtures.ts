/** PyTorch golden fixtures written by tools/make-fixtures.py (committed under test/fixtures). */
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { readSafetensors, toFloat32 } from '../../src/io/safetensors.js';

export const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/', import.meta.url));

export function fixturePath(name: string): string {
  return path.join(FIXTURES, name);
}

/** All tensors of a fixture file as float32, plus its metadata. Missing files fail the test. */
export function loadFixture(name: string): { tensors: Map<string, Float32Array>; metadata: Record<string, string> } {
  const file = fixturePath(name);
  const f = readSafetensors(file);
  const tensors = new Map<string, Float32Array>();
  for (const [k, t] of f.tensors) tensors.set(k, toFloat32(t, k, file));
  return { tensors, metadata: f.metadata };
}

export function get(m: ReadonlyMap<string, Float32Array>, key: string): Float32Array {
  const v = m.get(key);
  if (!v) throw new Error(`fixture has no tensor ${key}`);
  return v;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** ||a - b|| / ||b|| */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - b[i]!) ** 2;
    n += b[i]! ** 2;
  }
  return Math.sqrt(d / n);
}
