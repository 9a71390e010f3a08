/** Per-layer summary (Table-2 style): input, operator, t, c, n, s, output, params, MACs, totals and peak activation memory. */
import { nodeMacs, nodeParamCount, totalMacs, totalParams, type Graph } from './graph.js';
import type { BaseConfig } from './family.js';
import { familyOf } from './registry.js';
import { memoryReport, type MemoryReport } from './memory.js';

export interface SummaryRow {
  layer: string;
  input: number[];
  operator: string;
  t: number | null;
  c: number | null;
  n: number | null;
  s: number | null;
  output: number[];
  params: number;
  macs: number;
}

export interface Summary {
  config: BaseConfig;
  rows: SummaryRow[];
  totals: { params: number; macs: number };
  /** Peak activation memory (src/model/memory.ts) and the paper's Table 3 figure for this config, if it has one. */
  memory: MemoryReport & { paper: string | null };
  /** The family's notes (e.g. per-part totals next to the paper's); empty when it has none. */
  notes: string[];
}

export function summarize(graph: Graph): Summary {
  const byName = new Map(graph.nodes.map((n) => [n.name, n]));
  const rows = graph.layers.map((l) => {
    const nodes = l.nodes.map((name) => byName.get(name)!);
    return {
      layer: l.label,
      input: [...l.inShape],
      operator: l.operator,
      t: l.t ?? null,
      c: l.c ?? null,
      n: l.n ?? null,
      s: l.s ?? null,
      output: [...l.outShape],
      params: nodes.reduce((s, n) => s + nodeParamCount(n), 0),
      macs: nodes.reduce((s, n) => s + nodeMacs(n), 0),
    };
  });
  const notes = familyOf(graph.config).summaryNotes?.(graph.config, rows) ?? [];
  const memory = { ...memoryReport(graph), paper: familyOf(graph.config).paperMemory?.(graph.config) ?? null };
  return { config: graph.config, rows, totals: { params: totalParams(graph), macs: totalMacs(graph) }, memory, notes };
}

// [C, H, W] as H x W x C, [C] as 1x1xC, anything else (a detector's [anchors, k]) as it is.
const fmtShape = (s: number[]): string => (s.length === 3 ? `${s[1]}x${s[2]}x${s[0]}` : s.length === 1 ? `1x1x${s[0]}` : s.join('x'));
// Not toLocaleString: loading ICU's number formatting costs ~40 ms of `mnv2 summary`'s start-up.
const fmtInt = (v: number): string => String(v).replace(/\B(?=(\d{3})+(?!\d))/g, ',');

/** The summary as a fixed-width text table (shapes as H x W x C, like the paper). */
export function formatSummary(s: Summary): string {
  const head = ['layer', 'input', 'operator', 't', 'c', 'n', 's', 'output', 'params', 'MACs'];
  const body = s.rows.map((r) => [
    r.layer, fmtShape(r.input), r.operator, r.t ?? '-', r.c ?? '-', r.n ?? '-', r.s ?? '-', fmtShape(r.output), fmtInt(r.params), fmtInt(r.macs),
  ].map(String));
  const total = ['total', '', '', '', '', '', '', '', fmtInt(s.totals.params), fmtInt(s.totals.macs)];
  const all = [head, ...body, total];
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const numeric = new Set([3, 4, 5, 6, 8, 9]);
  const line = (r: string[]): string => r.map((v, i) => (numeric.has(i) ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join('  ').trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  const c = s.config;
  const title = familyOf(c).describe(c);
  return [title, '', line(head), rule, ...body.map(line), rule, line(total), '', ...formatMemory(s.memory), ...(s.notes.length ? ['', ...s.notes] : [])].join('\n');
}

/** Three lines: the largest materialised tensor (beside Table 3), the largest operation (§5.1), the peak per resolution. */
function formatMemory(m: Summary['memory']): string[] {
  const fused = m.stemFused;
  const beside = [
    ...(m.paper ? [`paper Table 3: ${m.paper}`] : []),
    ...(fused ? [`the paper fuses the stem into the first t = 1 block: ${fmtInt(fused.peak.elements)} by that convention`] : []),
  ];
  const op = m.largestOperation;
  const tensors = (ts: readonly { shape: number[] }[]): string => ts.map((t) => fmtShape(t.shape)).join(' + ');
  const res = m.perResolution.map((p) => `${p.size} ${p.channels === null ? `[${p.shape.join(', ')}]` : `${p.channels} ch`} ${fmtInt(p.elements)}`);
  return [
    `peak activation memory: ${fmtInt(m.peak.elements)} elements, ${fmtInt(m.peak.bytes)} bytes fp16 (${fmtShape(m.peak.shape)} ${m.peak.value})` +
      beside.map((b) => `; ${b}`).join(''),
    `largest operation, inputs + outputs (§5.1): ${fmtInt(op.elements)} elements (${op.layers.join(' + ')}: ${tensors(op.inputs)} -> ${tensors(op.outputs)})` +
      (fused ? `; stem fused: ${fmtInt(fused.largestOperation.elements)}` : ''),
    `largest materialised tensor per resolution: ${res.join(', ')}`,
  ];
}
