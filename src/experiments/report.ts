/**
 * Reports of the experiments: `<out>/<name>/README.md` (the claim, what was measured, a table of mean and range
 * over seeds, whether each difference is outside the seed range, the exact commands with their wall times, the
 * budget and the machine), `results.json` with every number, and PNG charts. Read only from the files the jobs
 * left, so `mnv2 experiment NAME --report-only` rewrites a report without running anything.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { renderBarChart, writeSvgPng, type Bar, type BarPanel } from './charts.js';
import { files, planJobs, type DataChoice, type Job } from './jobs.js';
import { EXPERIMENTS, VARIANTS, type Budget, type Experiment, type ExperimentName, type VariantId } from './plan.js';
import { readJsonFile, readRecord, type JobRecord } from './runner.js';
import { formatDuration } from '../train/progress.js';
import { defaultFreezeBnEpochs, presetRecipe } from '../train/presets.js';
import { machine } from '../util/machine.js';
import { mean } from '../util/stats.js';
import type { LayerDiagnosis } from '../diagnose/dead.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { memoryReport } from '../model/memory.js';
import { archConfig, buildModel } from '../model/registry.js';

export interface ReportOptions {
  budget: Budget;
  runs: string;
  data: DataChoice;
  out: string;
  quick: boolean;
}

/** Dead-kernel counts of one model, per conv kind (from `mnv2 diagnose --json`). */
export interface DeadSummary {
  depthwise: KernelCounts;
  pointwise: KernelCounts;
  /** Channels zero on ≥ the diagnosis' share of the sample, after depthwise / pointwise convs with an activation. */
  deadChannels: { depthwise: number; pointwise: number; measured: number };
}
interface KernelCounts {
  filters: number;
  dead: number;
  below1e2: number;
  below1e1: number;
  /** The smallest filter norm over its layer's median: how close the least used filter is to dead. */
  minRelative: number;
}

/** Everything measured on one variant, one entry per seed (NaN: not measured or missing). */
export interface VariantResults {
  id: VariantId;
  label: string;
  seeds: number[];
  fp32: number[];
  fp16: number[];
  ptq: number[];
  qat: number[];
  dead: (DeadSummary | null)[];
  deadQat: (DeadSummary | null)[];
  trainImgPerS: number[];
  inferImgPerS: number[];
  trainSeconds: number[];
  cost: { params: number; macs: number; memory: unknown } | null;
}

const readJson = <T>(f: string): T | null => (existsSync(f) ? readJsonFile<T>(f) : null);
const top1Of = (f: string): number => readJson<{ top1: number }>(f)?.top1 ?? NaN;

export function deadSummary(d: { layers: readonly Pick<LayerDiagnosis, 'kind' | 'relativeNorms' | 'deadKernels' | 'deadChannels' | 'zeroShares'>[] }): DeadSummary {
  const counts = (): KernelCounts => ({ filters: 0, dead: 0, below1e2: 0, below1e1: 0, minRelative: Infinity });
  const s: DeadSummary = { depthwise: counts(), pointwise: counts(), deadChannels: { depthwise: 0, pointwise: 0, measured: 0 } };
  for (const l of d.layers) {
    const c = s[l.kind];
    c.filters += l.relativeNorms.length;
    c.dead += l.deadKernels;
    c.below1e2 += l.relativeNorms.filter((r) => r < 1e-2).length;
    c.below1e1 += l.relativeNorms.filter((r) => r < 1e-1).length;
    c.minRelative = Math.min(c.minRelative, ...l.relativeNorms);
    if (l.zeroShares) {
      s.deadChannels.measured += l.zeroShares.length;
      s.deadChannels[l.kind] += l.deadChannels ?? 0;
    }
  }
  return s;
}

/** Each job's record (undefined: not finished), read once per report. */
type Records = ReadonlyMap<string, JobRecord | undefined>;

export function collect(v: VariantId, o: ReportOptions, records: Records): VariantResults {
  const { runs, budget } = o;
  const seeds = [...budget.seeds];
  const per = <T>(f: (s: number) => T): T[] => seeds.map(f);
  const dead = (f: string): DeadSummary | null => {
    const d = readJson<Parameters<typeof deadSummary>[0]>(f);
    return d && deadSummary(d);
  };
  const img = (f: string): number => readJson<{ img_per_s: number }>(f)?.img_per_s ?? NaN;
  const seconds = (s: number): number => records.get(`${v}-s${s}/train`)?.seconds ?? NaN;
  const cost = readJson<{ totals: { params: number; macs: number }; memory?: unknown }>(files.cost(runs, v));
  return {
    id: v, label: VARIANTS[v].label, seeds,
    fp32: per((s) => top1Of(files.fp32(runs, v, s))),
    fp16: per((s) => top1Of(files.fp16(runs, v, s))),
    ptq: per((s) => top1Of(files.ptq(runs, v, s))),
    qat: per((s) => top1Of(files.qat(runs, v, s))),
    dead: per((s) => dead(files.dead(runs, v, s))),
    deadQat: per((s) => dead(files.deadQat(runs, v, s))),
    trainImgPerS: per((s) => img(files.trainSpeed(runs, v, s))),
    inferImgPerS: per((s) => img(files.infer(runs, v, s))),
    trainSeconds: per(seconds),
    cost: cost && { params: cost.totals.params, macs: cost.totals.macs, memory: cost.memory ?? null },
  };
}

// ---- numbers as text ----

const finite = (v: readonly number[]): number[] => v.filter(Number.isFinite);
const meanOf = (v: readonly number[]): number => mean(finite(v));
const pct = (v: number): string => (Number.isFinite(v) ? `${(100 * v).toFixed(2)} %` : 'n/a');
/** "mean (min–max)" over seeds. */
export function spread(v: readonly number[], f: (x: number) => string = pct): string {
  const x = finite(v);
  if (!x.length) return 'n/a';
  return x.length === 1 ? f(x[0]) : `${f(mean(x))} (${f(Math.min(...x))}–${f(Math.max(...x))})`;
}
const points = (d: number): string => `${d >= 0 ? '+' : '−'}${Math.abs(100 * d).toFixed(2)} points`;

/**
 * How `b` compares with `a` over seeds: the difference of means, and whether the seed ranges overlap (with 2
 * seeds that is all the noise estimate there is, so overlapping ranges are called inside the noise).
 */
export function compare(a: readonly number[], b: readonly number[]): { diff: number; overlap: boolean; text: string } {
  const x = finite(a);
  const y = finite(b);
  if (!x.length || !y.length) return { diff: NaN, overlap: true, text: 'not measured' };
  const diff = mean(y) - mean(x);
  const overlap = Math.max(...x) >= Math.min(...y) && Math.max(...y) >= Math.min(...x);
  return { diff, overlap, text: `${points(diff)}, ${overlap ? 'inside the noise (the seed ranges overlap)' : 'outside the seed ranges'}` };
}

const share = (n: number, d: number): string => (d > 0 ? `${((100 * n) / d).toFixed(2)} %` : 'n/a');
const sum = (xs: readonly (DeadSummary | null)[], f: (d: DeadSummary) => number): number => xs.reduce((a, d) => a + (d ? f(d) : 0), 0);

// ---- the reports ----

interface Section { table: string; verdicts: string[]; panels: BarPanel[] }

function accuracySection(rs: readonly VariantResults[]): Section {
  const base = rs[0];
  const rows = rs.map((r) => `| ${r.label} | ${spread(r.fp32)} | ${r.fp32.map(pct).join(', ')} | ${r === base ? '—' : compare(base.fp32, r.fp32).text} |`);
  return {
    table: ['| model | test top-1, mean (range) | per seed | vs the first row |', '|---|---|---|---|', ...rows].join('\n'),
    verdicts: rs.slice(1).map((r) => `${r.label} vs ${base.label}: ${compare(base.fp32, r.fp32).text}.`),
    panels: [{ title: 'test top-1', bars: rs.map((r) => ({ label: r.label, values: r.fp32 })), format: pct }],
  };
}

function costSection(rs: readonly VariantResults[]): Section {
  const n = (v: number): string => Math.round(v).toLocaleString('en-US');
  const mem = (r: VariantResults): string => memoryText(r.cost?.memory);
  const rows = rs.map((r) => `| ${r.label} | ${r.cost ? n(r.cost.params) : 'n/a'} | ${r.cost ? n(r.cost.macs) : 'n/a'} | ${mem(r)} | ${spread(r.fp32)} | ${spread(r.trainImgPerS, (x) => x.toFixed(0))} | ${spread(r.inferImgPerS, (x) => x.toFixed(0))} | ${spread(r.trainSeconds, formatDuration)} |`);
  const [a, b] = rs;
  const ratio = (f: (r: VariantResults) => number): string => (f(b) / f(a)).toFixed(2);
  return {
    table: ['| model | parameters | multiply-adds | peak activation memory | test top-1 | training img/s (bench) | inference img/s (bench) | training wall time |', '|---|---|---|---|---|---|---|---|', ...rows].join('\n'),
    verdicts: a.cost && b.cost ? [
      tableThreeText(),
      `${b.label} / ${a.label}: parameters ${ratio((r) => r.cost!.params)}×, multiply-adds ${ratio((r) => r.cost!.macs)}×, training speed ${ratio((r) => meanOf(r.trainImgPerS))}×, inference speed ${ratio((r) => meanOf(r.inferImgPerS))}×.`,
      `Top-1, ${b.label} vs ${a.label}: ${compare(a.fp32, b.fp32).text}.`,
    ] : [],
    panels: [
      { title: 'test top-1', bars: rs.map((r) => ({ label: r.label, values: r.fp32 })), format: pct },
      { title: 'training img/s (1 thread)', bars: rs.map((r) => ({ label: r.label, values: r.trainImgPerS })), fromZero: true },
      { title: 'inference img/s (1 thread)', bars: rs.map((r) => ({ label: r.label, values: r.inferImgPerS })), fromZero: true },
    ],
  };
}

/** Peak activation memory at the paper's setting (α 1 @ 224, 1000 classes) next to its Table 3 (800K / 200K). */
function tableThreeText(): string {
  const v1 = memoryReport(buildModel(archConfig('mobilenetv1')));
  const v2 = memoryReport(buildModel(archConfig('imagenet')));
  const n = (x: number): string => x.toLocaleString('en-US');
  return `At the paper's setting (α 1 @ 224), \`mnv2 summary\`'s peak activation memory (§5.1: the largest tensor that must be materialised; inside an inverted residual block the expanded tensors need not be) is ${n(v1.peak.elements)} values for V1 and ${n(v2.peak.elements)} for V2, ${n(v2.stemFused?.peak.elements ?? NaN)} when the stem is fused into the first t = 1 block as the paper does: Table 3 says 800K and 200K. The CIFAR variants above keep 32×32 maps through their first layers, so their peaks are set there.`;
}

/** The `memory` entry of `mnv2 summary --json` as one table cell. */
function memoryText(m: unknown): string {
  const e = (m as { peak?: { elements?: number } } | null)?.peak?.elements;
  return typeof e === 'number' ? `${e.toLocaleString('en-US')} values` : 'n/a';
}

function precisionSection(rs: readonly VariantResults[]): Section {
  const kinds = [['fp32', 'float32'], ['fp16', 'float16'], ['ptq', 'int8 PTQ'], ['qat', 'int8 QAT']] as const;
  const rows = rs.map((r) => `| ${r.label} | ${kinds.map(([k]) => spread(r[k])).join(' | ')} | ${kinds.slice(1).map(([k]) => points(meanOf(r[k]) - meanOf(r.fp32))).join(' / ')} |`);
  const verdicts = rs.map((r) => `${r.label}: float16 ${compare(r.fp32, r.fp16).text}; int8 PTQ ${compare(r.fp32, r.ptq).text}; int8 QAT ${compare(r.fp32, r.qat).text}.`);
  const losses = rs.flatMap((r) => kinds.slice(1).map(([k, l]) => ({ loss: meanOf(r.fp32) - meanOf(r[k]), what: `${r.label} in ${l}` })));
  const worst = losses.reduce((a, b) => (b.loss > a.loss ? b : a));
  verdicts.push(`The largest mean loss from float32 to a lower precision is ${(100 * worst.loss).toFixed(2)} points (${worst.what}; int8 has per-channel weights and per-tensor uint8 activations).`);
  return {
    table: [`| model | ${kinds.map(([, l]) => l).join(' | ')} | change from float32 (fp16 / PTQ / QAT) |`, `|---|${kinds.map(() => '---|').join('')}---|`, ...rows].join('\n'),
    verdicts,
    panels: rs.map((r) => ({ title: r.label, bars: kinds.map(([k, l]) => ({ label: l, values: r[k] })), format: pct })),
  };
}

function deadSection(rs: readonly VariantResults[], b: Budget): Section {
  const rows: string[] = [];
  const leastBars: Bar[] = [];
  const channelBars: Bar[] = [];
  for (const r of rs) {
    for (const [tag, ds] of [['float32', r.dead], ['after QAT', r.deadQat]] as const) {
      const present = ds.filter((d): d is DeadSummary => d !== null);
      if (!present.length) continue;
      const kernels = (kind: 'depthwise' | 'pointwise', f: (k: KernelCounts) => number): string => share(sum(present, (d) => f(d[kind])), sum(present, (d) => d[kind].filters));
      const deadChannels = (d: DeadSummary): number => d.deadChannels.depthwise + d.deadChannels.pointwise;
      const ch = share(sum(present, deadChannels), sum(present, (d) => d.deadChannels.measured));
      const least = Math.min(...present.map((d) => d.depthwise.minRelative)).toFixed(3);
      rows.push(`| ${r.label} | ${tag} | ${kernels('depthwise', (k) => k.dead)} | ${kernels('depthwise', (k) => k.below1e2)} | ${kernels('depthwise', (k) => k.below1e1)} | ${least} | ${kernels('pointwise', (k) => k.dead)} | ${kernels('pointwise', (k) => k.below1e1)} | ${ch} |`);
      leastBars.push({ label: `${r.label} ${tag}`, values: present.map((d) => d.depthwise.minRelative) });
      channelBars.push({ label: `${r.label} ${tag}`, values: present.map((d) => (100 * deadChannels(d)) / Math.max(1, d.deadChannels.measured)) });
    }
  }
  const panels: BarPanel[] = [
    { title: 'smallest depthwise filter norm / its layer median', bars: leastBars, format: (v) => v.toFixed(2), fromZero: true },
    { title: `dead channels (zero on ≥ 99 % of ${b.diagnoseLimit.toLocaleString('en-US')} test images)`, bars: channelBars, format: (v) => `${v.toFixed(2)} %`, fromZero: true },
  ];
  return {
    table: ['| model | weights | depthwise: dead (< 1e-3 × median) | < 1e-2 | < 0.1 | smallest / median | pointwise: dead | < 0.1 | dead channels |', '|---|---|---|---|---|---|---|---|---|', ...rows].join('\n'),
    verdicts: deadVerdicts(rs),
    panels,
  };
}

/** What the dead-kernel counts say, in words: which models have any, and how far the least used filter is from dead. */
function deadVerdicts(rs: readonly VariantResults[]): string[] {
  const all = rs.flatMap((r) => [...r.dead, ...r.deadQat].filter((d): d is DeadSummary => d !== null).map((d) => ({ r, d })));
  if (!all.length) return [];
  const dead = all.filter(({ d }) => d.depthwise.dead + d.pointwise.dead > 0);
  const least = Math.min(...all.map(({ d }) => d.depthwise.minRelative));
  return [dead.length
    ? `Dead kernels found in: ${[...new Set(dead.map(({ r }) => r.label))].join(', ')}.`
    : `No model has a dead kernel (a filter below 1e-3 of its layer's median norm), float32 or after QAT; the least used depthwise filter of any model is at ${least.toFixed(3)} × its layer's median. The seed's observation (V1's depthwise kernels coming out empty) is not reproduced at this budget.`];
}

function section(exp: Experiment, rs: readonly VariantResults[], b: Budget): Section {
  switch (exp.name) {
    case 'bottleneck':
    case 'shortcut':
      return accuracySection(rs);
    case 'v1-vs-v2':
      return costSection(rs);
    case 'low-precision':
      return precisionSection(rs);
    case 'dead-kernels':
      return deadSection(rs, b);
  }
}

function machineText(): string {
  const m = machine();
  return `${m.cpuModel}, ${m.nproc} cores (${m.isa.join(', ') || 'no AVX2'}), Node ${process.versions.node}`;
}

/** How the jobs ran, from their records: jobs at a time and engine threads each. */
function howRun(records: Records): string {
  const done = [...records.values()].filter((r): r is JobRecord => r !== undefined);
  const values = (f: (r: JobRecord) => number | undefined): string => [...new Set(done.map(f).filter((x) => x !== undefined))].join(' or ') || '?';
  return `jobs ran ${values((r) => (r.parallel === 1 ? undefined : r.parallel))} at a time with ${values((r) => r.threads)} engine thread(s) each, the speed benchmarks alone`;
}

const DATASET_TEXT: Record<DataChoice['name'], string> = {
  'fashion-mnist': 'Fashion-MNIST (28×28 zero-padded to 32, three channels)',
  cifar10: 'CIFAR-10 (32×32 RGB)',
};

function budgetText(b: Budget, quick: boolean, data: DataChoice): string {
  const r = presetRecipe('fashion-mnist');
  const freeze = defaultFreezeBnEpochs(b.qatEpochs);
  return `${quick ? '**Quick mode: tiny budgets, the numbers mean nothing.** ' : ''}${DATASET_TEXT[data.name]}, width α ${b.alpha}, ` +
    `${b.epochs} epoch(s) over a fixed ${b.trainLimit.toLocaleString('en-US')}-image subset of the training split (the \`fashion-mnist\` recipe: ${r.optimizer.toUpperCase()} lr ${r.lr}, momentum ${r.momentum}, ` +
    `weight decay ${r.weightDecay}, ${r.schedule} per ${r.schedulePer}, batch ${r.batch}, ${r.augment === 'seed' ? 'crop + flip' : `${r.augment} augmentation`}), seeds ${b.seeds.join(' and ')}. Every reported top-1 is of the final model on ` +
    `${b.testLimit ? `${b.testLimit} test images` : 'the whole test split (10,000 images)'}, used once (no checkpoint is chosen on it). QAT: a ${b.qatEpochs}-epoch fine-tune ` +
    `of each trained model on ${b.qatLimit.toLocaleString('en-US')} images at lr ${b.qatLr}, fake-quantized throughout, BN frozen (folded) for the last ${freeze} of its ${b.qatEpochs} epoch(s).`;
}

function commandsText(exp: Experiment, jobs: readonly Job[], records: Records, runs: string): string {
  const rel = (s: string): string => (s.startsWith(runs) ? relative(process.cwd(), s) || '.' : s);
  const lines = jobs.map((j) => {
    const r = records.get(j.id);
    return `mnv2 ${[...j.argv.map(rel), ...(j.threads && r ? ['--threads', String(r.threads)] : [])].join(' ')}${r ? `   # ${formatDuration(r.seconds)}` : '   # not run'}`;
  });
  return `Rerun all of it: \`mnv2 experiment ${exp.name}\` (finished jobs are skipped; \`--quick\` for a minutes-long check). The jobs, with each one's wall time:\n\n\`\`\`\n${lines.join('\n')}\n\`\`\``;
}

/** Writes every experiment's report; returns the files written. */
export async function writeReports(names: readonly ExperimentName[], o: ReportOptions): Promise<string[]> {
  const written: string[] = [];
  for (const name of names) {
    const exp = EXPERIMENTS[name];
    const jobs = planJobs([name], o.budget, o.runs, o.data);
    const records: Records = new Map(jobs.map((j) => [j.id, readRecord(j)]));
    if (![...records.values()].some(Boolean)) throw new Error(`experiment ${name}: no finished job in ${o.runs} (run it without --report-only)`);
    const rs = exp.variants.map((v) => collect(v, o, records));
    const s = section(exp, rs, o.budget);
    const dir = join(o.out, name);
    mkdirSync(dir, { recursive: true });
    const png = join(dir, `${name}.png`);
    await writeSvgPng(renderBarChart(exp.title, s.panels), png);
    const wall = [...records.values()].reduce((a, r) => a + (r?.seconds ?? 0), 0);
    const md = [
      `# ${exp.title}`,
      '',
      `**Claim.** ${exp.claim}`,
      '',
      `**Setup.** ${budgetText(o.budget, o.quick, o.data)}`,
      '',
      '**Models.**',
      '',
      ...exp.variants.map((v) => `- ${VARIANTS[v].label}: ${VARIANTS[v].description} (\`--arch ${[VARIANTS[v].arch, ...VARIANTS[v].flags].join(' ')}\`).`),
      '',
      `**Measured on** ${machineText()}, ${new Date().toISOString().slice(0, 10)}; ${howRun(records)}. Job time summed over jobs: ${formatDuration(wall)}.`,
      '',
      s.table,
      '',
      ...(s.verdicts.length ? ['**Differences.**', '', ...s.verdicts.map((v) => `- ${v}`), ''] : []),
      `![${exp.title}](${name}.png)`,
      '',
      'Bars: the mean over seeds; dots: each seed; the line: their range.',
      '',
      commandsText(exp, jobs, records, o.runs),
      '',
    ].join('\n');
    writeFileAtomic(join(dir, 'README.md'), md);
    writeFileAtomic(join(dir, 'results.json'), `${JSON.stringify({ experiment: name, budget: o.budget, quick: o.quick, machine: machineText(), variants: rs }, null, 2)}\n`);
    written.push(join(dir, 'README.md'), join(dir, 'results.json'), png);
  }
  return written;
}
