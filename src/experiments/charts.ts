/**
 * The experiment reports' charts: panels of bars, one bar per compared model, its height the mean over seeds,
 * a dot per seed and a line over their range, so a reader sees at once whether a difference is inside the noise.
 * SVG by hand (like the training curves), PNG through sharp.
 */
import sharp from 'sharp';
import { esc, fmt, svgDocument, ticks } from '../train/plot.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { mean } from '../util/stats.js';

export interface Bar {
  label: string;
  /** One value per seed. */
  values: readonly number[];
}

export interface BarPanel {
  title: string;
  bars: readonly Bar[];
  /** Tick labels, e.g. percent. */
  format?: (v: number) => string;
  /** Start the axis at zero (counts, sizes) instead of near the data (accuracies). */
  fromZero?: boolean;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

function barPanel(x0: number, y0: number, w: number, h: number, p: BarPanel): string {
  const all = p.bars.flatMap((b) => b.values).filter(Number.isFinite);
  let lo = p.fromZero ? 0 : Math.min(...all);
  let hi = Math.max(...all);
  if (!all.length) [lo, hi] = [0, 1];
  const pad = (hi - lo) * 0.15 || Math.abs(hi) * 0.1 || 0.1;
  if (!p.fromZero) lo -= pad;
  hi += pad;
  const label = p.format ?? fmt;
  const left = x0 + 62;
  const top = y0 + 28;
  const pw = w - 76;
  const ph = h - 90;
  const sy = (y: number): number => top + ph - ((y - lo) / (hi - lo)) * ph;
  const out = [
    `<text x="${x0 + w / 2}" y="${y0 + 16}" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`,
    `<rect x="${left}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`,
  ];
  for (const t of ticks(lo, hi)) {
    out.push(`<line x1="${left}" y1="${sy(t).toFixed(1)}" x2="${left + pw}" y2="${sy(t).toFixed(1)}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${left - 6}" y="${(sy(t) + 4).toFixed(1)}" text-anchor="end" font-size="11">${esc(label(t))}</text>`);
  }
  const slot = pw / Math.max(1, p.bars.length);
  p.bars.forEach((b, i) => {
    const vals = b.values.filter(Number.isFinite);
    const cx = left + slot * (i + 0.5);
    const bw = Math.min(60, slot * 0.6);
    const color = COLORS[i % COLORS.length];
    if (vals.length) {
      const m = mean(vals);
      out.push(`<rect x="${(cx - bw / 2).toFixed(1)}" y="${sy(m).toFixed(1)}" width="${bw.toFixed(1)}" height="${(top + ph - sy(m)).toFixed(1)}" fill="${color}" fill-opacity="0.45" stroke="${color}"/>`);
      out.push(`<line x1="${cx.toFixed(1)}" y1="${sy(Math.min(...vals)).toFixed(1)}" x2="${cx.toFixed(1)}" y2="${sy(Math.max(...vals)).toFixed(1)}" stroke="#222" stroke-width="1.5"/>`);
      for (const v of vals) out.push(`<circle cx="${cx.toFixed(1)}" cy="${sy(v).toFixed(1)}" r="3.5" fill="#222"/>`);
      out.push(`<text x="${cx.toFixed(1)}" y="${(sy(Math.max(...vals)) - 7).toFixed(1)}" text-anchor="middle" font-size="11">${esc(label(m))}</text>`);
    }
    // Labels wrap at spaces onto up to three lines under the axis.
    wrap(b.label, Math.max(8, Math.floor(slot / 6.5))).slice(0, 3).forEach((line, k) => {
      out.push(`<text x="${cx.toFixed(1)}" y="${top + ph + 16 + 13 * k}" text-anchor="middle" font-size="11">${esc(line)}</text>`);
    });
  });
  return out.join('\n');
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  for (const word of text.split(' ')) {
    const last = lines.length - 1;
    if (last >= 0 && lines[last].length + 1 + word.length <= width) lines[last] += ` ${word}`;
    else lines.push(word);
  }
  return lines;
}

/** Panels side by side (at most `perRow` in a row) under a title, as SVG. */
export function renderBarChart(title: string, panels: readonly BarPanel[], perRow = 3): string {
  const cols = Math.min(perRow, panels.length);
  const rows = Math.ceil(panels.length / cols);
  const pw = Math.max(300, 130 * Math.max(...panels.map((p) => p.bars.length)));
  const ph = 340;
  const W = pw * cols;
  const H = 36 + ph * rows;
  const body = panels.map((p, i) => barPanel((i % cols) * pw, 36 + Math.floor(i / cols) * ph, pw, ph, p)).join('\n');
  return svgDocument(W, H, title, body, { y: 22, size: 16 });
}

export async function writeSvgPng(svg: string, file: string): Promise<void> {
  writeFileAtomic(file, await sharp(Buffer.from(svg)).png().toBuffer());
}
