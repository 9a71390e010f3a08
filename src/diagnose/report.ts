/** A diagnosis as a text table and as a heat map (one row band per layer, one column per channel). */
import sharp from 'sharp';
import { writeFileAtomic } from '../util/atomic-write.js';
import type { Diagnosis, LayerDiagnosis } from './dead.js';

const pct = (n: number, of: number): string => `${((100 * n) / of).toFixed(1)} %`;

export function formatDiagnosis(d: Diagnosis): string {
  const head = ['layer', 'kind', 'channels', 'dead kernels', 'dead channels', 'mean zero share'];
  const rows = d.layers.map((l) => [
    l.layer, l.kind, String(l.channels), `${l.deadKernels} (${pct(l.deadKernels, l.channels)})`,
    l.deadChannels === null ? '-' : `${l.deadChannels} (${pct(l.deadChannels, l.channels)})`,
    l.zeroShares ? pct(l.zeroShares.reduce((s, v) => s + v, 0), l.zeroShares.length) : '-',
  ]);
  const t = d.totals;
  const total = ['total', `${t.layers} layers`, String(t.channels), `${t.deadKernels} (${pct(t.deadKernels, t.channels)})`,
    d.images ? `${t.deadChannels} (${pct(t.deadChannels, t.measuredChannels)})` : '-', ''];
  const all = [head, ...rows, total];
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const line = (r: string[]): string => r.map((v, i) => (i >= 2 ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join('  ').trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  const sample = d.images ? `dead channel: zero on >= ${100 * d.zeroShare} % of its values over ${d.images} images` : 'no --dataset: dead kernels only';
  return [`dead kernel: filter L2 norm < ${d.kernelFraction} x its layer's median; ${sample}`, '', line(head), rule, ...rows.map(line), rule, line(total)].join('\n');
}

const ROW = 4;
const EMPTY = [235, 235, 235] as const;
const DEAD = [220, 20, 20] as const;

/** Dark blue (0) to yellow (1). */
function ramp(v: number): [number, number, number] {
  const t = Math.min(1, Math.max(0, v));
  return [Math.round(20 + 235 * t), Math.round(20 + 210 * t), Math.round(90 - 90 * t)];
}

/**
 * Pixels of the heat map: per layer a band of ROW pixels, per channel one column. With a sample, a cell is the
 * channel's zero share (dead channels red); without one (or for a layer with no activation), its filter's norm
 * over the layer's median, capped at 1 (dead kernels red). Columns past a layer's channel count are light grey.
 */
export function heatmapPixels(d: Diagnosis): { data: Uint8Array; width: number; height: number } {
  const width = Math.max(...d.layers.map((l) => l.channels));
  const height = d.layers.length * ROW;
  const data = new Uint8Array(width * height * 3);
  const cell = (l: LayerDiagnosis, c: number): readonly number[] => {
    if (c >= l.channels) return EMPTY;
    if (d.images && l.zeroShares) return l.zeroShares[c]! >= d.zeroShare ? DEAD : ramp(l.zeroShares[c]!);
    return l.relativeNorms[c]! < d.kernelFraction ? DEAD : ramp(l.relativeNorms[c]!);
  };
  d.layers.forEach((l, r) => {
    for (let c = 0; c < width; c++) {
      const rgb = cell(l, c);
      for (let y = r * ROW; y < (r + 1) * ROW; y++) data.set(rgb, (y * width + c) * 3);
    }
  });
  return { data, width, height };
}

export async function writeHeatmapPng(d: Diagnosis, file: string): Promise<void> {
  const { data, width, height } = heatmapPixels(d);
  writeFileAtomic(file, await sharp(Buffer.from(data.buffer, data.byteOffset, data.byteLength), { raw: { width, height, channels: 3 } }).png().toBuffer());
}
