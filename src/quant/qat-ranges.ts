/**
 * What a model file trained quantization-aware (qat.ts) records in its metadata: each observer's range, by the
 * ONNX name of the tensor the QDQ export quantizes with it, and the weight bits. Kept apart from qat.ts so that
 * reading a checkpoint loads no ONNX Runtime.
 */
import { fail } from '../util/errors.js';

/** Metadata key of a QAT model file (JSON QatRanges). */
export const QAT_KEY = 'mnv2.qat';

/** Each observer's [min, max] by the ONNX name of its tensor, and the weight bits. */
export interface QatRanges {
  weightBits: 7 | 8;
  ranges: Record<string, [number, number]>;
}

/** The QAT ranges a model file's metadata carries, or null. */
export function readQatRanges(metadata: Record<string, string>, source: string): QatRanges | null {
  const raw = metadata[QAT_KEY];
  if (raw === undefined) return null;
  let r: QatRanges;
  try {
    r = JSON.parse(raw) as QatRanges;
  } catch (e) {
    fail(source, `${QAT_KEY} is not JSON (${(e as Error).message})`);
  }
  if (typeof r !== 'object' || r === null || (r.weightBits !== 7 && r.weightBits !== 8) || typeof r.ranges !== 'object' || r.ranges === null) fail(source, `${QAT_KEY} needs weightBits 7 or 8 and ranges`);
  for (const [t, v] of Object.entries(r.ranges)) {
    if (!Array.isArray(v) || v.length !== 2 || !Number.isFinite(v[0]) || !Number.isFinite(v[1]) || !(v[0] <= v[1])) fail(source, `${QAT_KEY}: the range of ${t} must be two finite numbers [min, max], got ${JSON.stringify(v)}`);
  }
  return r;
}

