/** Median of a non-empty list (the mean of the middle two for an even count). */
export function median(v: readonly number[]): number {
  if (v.length === 0) throw new Error('median of an empty list');
  const a = [...v].sort((x, y) => x - y);
  return a.length % 2 ? a[a.length >> 1]! : (a[a.length / 2 - 1]! + a[a.length / 2]!) / 2;
}
