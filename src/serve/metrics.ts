/**
 * Prometheus metrics in the text exposition format (version 0.0.4), written by hand: counters, gauges and
 * histograms with labels are all the server needs, and the format is a few lines of text per series.
 */
import type { ProgramCacheStats } from '../engine/native/program-cache.js';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

type Labels = Record<string, string>;

interface Metric {
  render(): string[];
}

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const escapeHelp = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** Prometheus renders +Inf, -Inf and NaN by name; everything else as a JS number. */
function value(v: number): string {
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return Number.isNaN(v) ? 'NaN' : String(v);
}

const header = (name: string, help: string, type: string): string[] => [`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`];

/** A monotonically increasing count, one series per label set. */
export class Counter implements Metric {
  private readonly series = new Map<string, { labels: Labels; value: number }>();
  constructor(readonly name: string, private readonly help: string) {}

  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    const s = this.series.get(key);
    if (s) s.value += by;
    else this.series.set(key, { labels, value: by });
  }

  get(labels: Labels = {}): number {
    return this.series.get(labelText(labels))?.value ?? 0;
  }

  render(): string[] {
    const lines = header(this.name, this.help, 'counter');
    // A counter with no labels is reported from the start, at 0.
    if (this.series.size === 0) lines.push(`${this.name} 0`);
    for (const s of this.series.values()) lines.push(`${this.name}${labelText(s.labels)} ${value(s.value)}`);
    return lines;
  }
}

/** A value read at scrape time (queue depth, memory). */
export class Gauge implements Metric {
  constructor(readonly name: string, private readonly help: string, private readonly read: () => number) {}

  get value(): number {
    return this.read();
  }

  render(): string[] {
    return [...header(this.name, this.help, 'gauge'), `${this.name} ${value(this.value)}`];
  }
}

/** Cumulative buckets (`le` = upper bound, inclusive), plus the sum and count of the observations. */
export class Histogram implements Metric {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  readonly bounds: readonly number[];

  constructor(readonly name: string, private readonly help: string, bounds: readonly number[]) {
    if (bounds.length === 0 || bounds.some((b, i) => !Number.isFinite(b) || (i > 0 && b <= bounds[i - 1]!))) {
      throw new Error(`histogram ${name}: bucket bounds must be finite and increasing, got [${bounds.join(', ')}]`);
    }
    this.bounds = [...bounds];
    this.counts = new Array<number>(bounds.length).fill(0);
  }

  observe(v: number): void {
    const i = this.bounds.findIndex((b) => v <= b);
    if (i >= 0) this.counts[i]!++;
    this.sum += v;
    this.count++;
  }

  render(): string[] {
    const lines = header(this.name, this.help, 'histogram');
    let cumulative = 0;
    this.bounds.forEach((b, i) => {
      cumulative += this.counts[i]!;
      lines.push(`${this.name}_bucket{le="${value(b)}"} ${cumulative}`);
    });
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${value(this.sum)}`, `${this.name}_count ${this.count}`);
    return lines;
  }
}

export class Registry {
  private readonly metrics: Metric[] = [];

  add<M extends Metric>(m: M): M {
    this.metrics.push(m);
    return m;
  }

  render(): string {
    return this.metrics.flatMap((m) => m.render()).join('\n') + '\n';
  }
}

/** The server's metrics; `programs` (native engine) adds its compiled-program cache. */
export function serverMetrics(queueDepth: () => number, inFlight: () => number, programs?: () => ProgramCacheStats) {
  const registry = new Registry();
  if (programs) {
    registry.add(new Gauge('mnv2_native_programs', 'compiled native programs kept (one per batch size, least recently used evicted)', () => programs().programs));
    registry.add(new Gauge('mnv2_native_program_bytes', 'memory of the compiled native programs kept', () => programs().bytes));
  }
  return {
    registry,
    requests: registry.add(new Counter('mnv2_http_requests_total', 'HTTP requests answered, by route and status code')),
    latency: registry.add(
      new Histogram('mnv2_classify_duration_seconds', 'latency of successful POST /v1/classify requests in the server, request received to response sent', [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
      ]),
    ),
    batchSize: registry.add(new Histogram('mnv2_batch_size', 'images per model run', [1, 2, 4, 8, 16, 32, 64, 128, 256])),
    inference: registry.add(
      new Histogram('mnv2_inference_duration_seconds', 'model run time per batch', [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]),
    ),
    images: registry.add(new Counter('mnv2_images_processed_total', 'images classified')),
    queueDepth: registry.add(new Gauge('mnv2_queue_depth', 'preprocessed images waiting for a batch', queueDepth)),
    inFlight: registry.add(new Gauge('mnv2_requests_in_flight', 'classify requests admitted and not yet answered', inFlight)),
    rss: registry.add(new Gauge('process_resident_memory_bytes', 'resident set size of the server process', () => process.memoryUsage.rss())),
  };
}

export type ServerMetrics = ReturnType<typeof serverMetrics>;
