/** Mean of a list; NaN for an empty one. */
export function mean(v: readonly number[]): number {
  return v.length ? v.reduce((s, x) => s + x, 0) / v.length : NaN;
}

/** Median of a non-empty list (the mean of the middle two for an even count). */
export function median(v: readonly number[]): number {
  if (v.length === 0) throw new Error('median of an empty list');
  const a = [...v].sort((x, y) => x - y);
  return a.length % 2 ? a[a.length >> 1]! : (a[a.length / 2 - 1]! + a[a.length / 2]!) / 2;
}

/** The value below which a fraction q of `v` lies, interpolated linearly (q = 0.5: the median). */
export function quantile(v: readonly number[], q: number): number {
  if (v.length === 0) throw new Error('quantile of an empty list');
  const a = [...v].sort((x, y) => x - y);
  const i = (a.length - 1) * q;
  const lo = Math.floor(i);
  return a[lo]! + (a[Math.min(lo + 1, a.length - 1)]! - a[lo]!) * (i - lo);
}

/** Step times (ms) of a benchmark as its reports give them; spread = (p90 − p10) / median flags a noisy run. */
export function timeStats(ms: readonly number[]): { median_ms: number; min_ms: number; max_ms: number; p10_ms: number; p90_ms: number; spread: number } {
  const med = median(ms);
  const p10 = quantile(ms, 0.1);
  const p90 = quantile(ms, 0.9);
  return { median_ms: med, min_ms: Math.min(...ms), max_ms: Math.max(...ms), p10_ms: p10, p90_ms: p90, spread: (p90 - p10) / med };
}
