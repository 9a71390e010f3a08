/** Numeric command-line values, checked once for every command: a clear error names the flag and the value. */

/** A finite number, or undefined when the flag was not given. */
export function num(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new Error(`${flag} expects a number, got '${v}'`);
  return n;
}

/** An integer (at least `min` when given), or undefined when the flag was not given. */
export function int(v: string | undefined, flag: string, min?: number): number | undefined {
  const n = num(v, flag);
  if (n === undefined) return undefined;
  if (!Number.isInteger(n) || (min !== undefined && n < min)) {
    throw new Error(`${flag} expects an integer${min !== undefined ? ` >= ${min}` : ''}, got '${v}'`);
  }
  return n;
}
