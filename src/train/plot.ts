/**
 * Training curves from a run's metrics.jsonl: loss, accuracy and learning rate per epoch, as a hand-written SVG
 * (three panels) and a PNG rendered from it by sharp (librsvg).
 */
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-write.js';
import { basename, join, resolve } from 'node:path';
import sharp from 'sharp';
import { fail } from '../util/errors.js';

/** One line of metrics.jsonl (written by the training loop once per epoch). */
export interface EpochMetrics {
  /** Epochs completed (1-based). */
  epoch: number;
  lr: number;
  train_loss: number;
  /** Top-1 accuracy of the training batches; absent for tasks that count no hits (detection). */
  train_acc?: number;
  val_loss?: number;
  val_top1?: number;
  val_top5?: number;
  img_per_s: number;
  /** Seconds this epoch took (training + evaluation). */
  time: number;
  /** Seconds since the run started (all sessions). */
  elapsed: number;
  steps: number;
  images: number;
}

export const METRICS_FILE = 'metrics.jsonl';

/** Reads metrics.jsonl (from a run folder or the file itself); names the file and line of a bad entry. */
export function readMetrics(pathOrDir: string): { file: string; rows: EpochMetrics[] } {
  const file = existsSync(pathOrDir) && statSync(pathOrDir).isDirectory() ? join(pathOrDir, METRICS_FILE) : pathOrDir;
  if (!existsSync(file)) fail(file, `no such metrics log (a run folder written by \`mnv2 train\` has ${METRICS_FILE})`);
  const rows: EpochMetrics[] = [];
  readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let r: unknown;
    try {
      r = JSON.parse(line);
    } catch (e) {
      throw new Error(`${file}:${i + 1}: not valid JSON (${(e as Error).message})`);
    }
    const m = r as EpochMetrics;
    if (typeof m !== 'object' || m === null || typeof m.epoch !== 'number' || typeof m.train_loss !== 'number') {
      throw new Error(`${file}:${i + 1}: not a metrics entry (needs epoch and train_loss)`);
    }
    rows.push(m);
  });
  if (rows.length === 0) fail(file, `no entries yet (it gains one line per finished epoch)`);
  return { file, rows };
}

export interface Series {
  name: string;
  color: string;
  points: [number, number][];
}

export const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1000 || a < 1e-3) return v.toExponential(1);
  return Number(v.toPrecision(3)).toString();
}

/** "Nice" tick values covering [lo, hi]. */
export function ticks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/**
 * One chart: the series over x in [0, xMax], y ticks labelled by yLabel, the x axis named xLabel; the y range
 * is the data's (padded) unless given.
 */
export function panel(
  x0: number, y0: number, w: number, h: number, title: string, series: Series[], xMax: number, yLabel: (v: number) => string,
  xLabel = 'epoch', yRange?: readonly [number, number],
): string {
  const all = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  let lo = yRange?.[0] ?? (all.length ? Math.min(...all) : 0);
  let hi = yRange?.[1] ?? (all.length ? Math.max(...all) : 1);
  if (yRange) {
    // fixed: no padding
  } else if (hi - lo < 1e-12) {
    const pad = Math.abs(hi) * 0.1 || 0.1;
    lo -= pad;
    hi += pad;
  } else {
    const pad = (hi - lo) * 0.05;
    lo -= pad;
    hi += pad;
  }
  const left = x0 + 60;
  const top = y0 + 30;
  const pw = w - 80;
  const ph = h - 70;
  const xMin = 0;
  const sx = (x: number): number => left + ((x - xMin) / Math.max(1e-9, xMax - xMin)) * pw;
  const sy = (y: number): number => top + ph - ((y - lo) / (hi - lo)) * ph;
  const out: string[] = [];
  out.push(`<text x="${x0 + w / 2}" y="${y0 + 18}" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);
  out.push(`<rect x="${left}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  for (const t of ticks(lo, hi)) {
    const y = sy(t);
    out.push(`<line x1="${left}" y1="${y.toFixed(1)}" x2="${left + pw}" y2="${y.toFixed(1)}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${left - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" font-size="11">${esc(yLabel(t))}</text>`);
  }
  for (const t of ticks(0, xMax, 6).filter((v) => Number.isInteger(v) || xMax < 6)) {
    const x = sx(t);
    out.push(`<line x1="${x.toFixed(1)}" y1="${top + ph}" x2="${x.toFixed(1)}" y2="${top + ph + 4}" stroke="#444"/>`);
    out.push(`<text x="${x.toFixed(1)}" y="${top + ph + 17}" text-anchor="middle" font-size="11">${fmt(t)}</text>`);
  }
  out.push(`<text x="${left + pw / 2}" y="${top + ph + 34}" text-anchor="middle" font-size="12">${esc(xLabel)}</text>`);
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    if (pts.length === 0) return;
    const d = pts.map((p, j) => `${j ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' ');
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`);
    for (const p of pts) out.push(`<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
    const ly = top + 14 + i * 16;
    out.push(`<line x1="${left + pw - 120}" y1="${ly - 4}" x2="${left + pw - 100}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"/>`);
    out.push(`<text x="${left + pw - 95}" y="${ly}" font-size="11">${esc(s.name)}</text>`);
  });
  return out.join('\n');
}

/** A white W x H SVG document: a centred title (at baseline y, font size px) over the body's elements. */
export function svgDocument(W: number, H: number, title: string, body: string, heading: { y: number; size: number }): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<rect width="${W}" height="${H}" fill="#ffffff"/>
<text x="${W / 2}" y="${heading.y}" text-anchor="middle" font-size="${heading.size}">${esc(title)}</text>
${body}
</svg>
`;
}

/** The three-panel SVG (loss, accuracy, learning rate) for a list of epoch metrics. */
export function renderCurvesSvg(rows: readonly EpochMetrics[], title = 'training curves'): string {
  const W = 1200;
  const H = 420;
  const pw = W / 3;
  const xMax = Math.max(1, ...rows.map((r) => r.epoch));
  const s = (name: string, color: string, f: (r: EpochMetrics) => number | undefined): Series => ({
    name, color, points: rows.map((r) => [r.epoch, f(r) ?? NaN] as [number, number]),
  });
  const body = [
    panel(0, 30, pw, H - 30, 'loss', [s('train', '#1f77b4', (r) => r.train_loss), s('validation', '#d62728', (r) => r.val_loss)], xMax, fmt),
    panel(pw, 30, pw, H - 30, 'accuracy', [
      s('train', '#1f77b4', (r) => r.train_acc),
      s('val top-1', '#d62728', (r) => r.val_top1),
      s('val top-5', '#2ca02c', (r) => r.val_top5),
    ], xMax, (v) => `${(100 * v).toFixed(v >= 0.995 || v <= 0.005 ? 0 : 1)}%`),
    panel(2 * pw, 30, pw, H - 30, 'learning rate', [s('lr', '#9467bd', (r) => r.lr)], xMax, fmt),
  ].join('\n');
  const last = rows[rows.length - 1]!;
  const sub = last.val_top1 !== undefined ? ` — epoch ${last.epoch}: val top-1 ${(100 * last.val_top1).toFixed(2)}%` : ` — epoch ${last.epoch}`;
  return svgDocument(W, H, title + sub, body, { y: 22, size: 17 });
}

/** Renders a run's curves to `curves.svg` and `curves.png` (in the run folder, or `outDir`). Returns the paths. */
export async function plotRun(runDir: string, outDir?: string, title?: string): Promise<{ svg: string; png: string; epochs: number }> {
  const { rows, file } = readMetrics(runDir);
  const dir = outDir ?? (existsSync(runDir) && statSync(runDir).isDirectory() ? runDir : join(file, '..'));
  mkdirSync(dir, { recursive: true });
  const svgText = renderCurvesSvg(rows, title ?? `training curves (${basename(resolve(dir))})`);
  const svg = join(dir, 'curves.svg');
  const png = join(dir, 'curves.png');
  writeFileAtomic(svg, svgText);
  writeFileAtomic(png, await sharp(Buffer.from(svgText)).png().toBuffer());
  return { svg, png, epochs: rows.length };
}
