/**
 * oneDNN's verbose log (ONEDNN_VERBOSE=1) as a per-op time table: each executed primitive prints
 * `onednn_verbose,exec,cpu,KIND,IMPL,PROP,MEMORY_DESCS,ATTRS,AUX,PROBLEM,MS`; this groups them into the classes a
 * fusion decision is about (1×1 / depthwise / full convolutions by pass, BN with or without its fused ReLU, the
 * residual adds, reorders of weights and of activations, ...).
 */

export interface VerboseExec {
  kind: string;
  impl: string;
  prop: string;
  mds: string;
  aux: string;
  problem: string;
  ms: number;
}

/** The `exec` lines of a verbose log, in order (other lines are ignored). */
export function parseVerbose(log: string): VerboseExec[] {
  const out: VerboseExec[] = [];
  for (const line of log.split('\n')) {
    if (!line.startsWith('onednn_verbose,exec,')) continue;
    const f = line.trim().split(',');
    // KIND..PROBLEM never contain commas in oneDNN 2.x, so the fields are positional; the time is the last.
    if (f.length < 11) throw new Error(`oneDNN verbose: cannot read '${line}'`);
    const ms = Number(f[f.length - 1]);
    if (!Number.isFinite(ms)) throw new Error(`oneDNN verbose: no time at the end of '${line}'`);
    out.push({ kind: f[3]!, impl: f[4]!, prop: f[5]!, mds: f[6]!, aux: f[8]!, problem: f[9]!, ms });
  }
  return out;
}

const PASS: Record<string, string> = {
  forward_training: 'fwd', forward_inference: 'fwd', forward: 'fwd',
  backward_data: 'bwd data', backward_weights: 'bwd weights', backward: 'bwd',
};

/** The class of one primitive execution, e.g. "conv 1×1 · bwd weights", "BN+ReLU · fwd", "reorder weights → blocked". */
export function opClass(e: VerboseExec): string {
  const pass = PASS[e.prop] ?? e.prop;
  switch (e.kind) {
    case 'convolution': {
      const k = /kh(\d+)/.exec(e.problem)?.[1];
      const kind = /^g\d+/.test(e.problem) ? 'depthwise' : k === '1' ? '1×1' : `full ${k ?? '?'}×${k ?? '?'}`;
      return `conv ${kind} · ${pass}`;
    }
    case 'batch_normalization':
      // flags: R = ReLU fused into the normalization (oneDNN's fuse_norm_relu)
      return `${/flags:\w*R/.test(e.aux) ? 'BN+ReLU' : 'BN'} · ${pass}`;
    case 'binary':
    case 'sum': {
      const alg = /alg:binary_(\w+)/.exec(e.aux)?.[1];
      return `${e.kind}${alg ? ` ${alg}` : ''} (residual adds, gradient sums)`;
    }
    case 'eltwise':
      return `eltwise ${/alg:eltwise_(\w+)/.exec(e.aux)?.[1] ?? ''} · ${pass}`;
    case 'reorder': {
      // Weight layouts block the output-channel dimension (an upper-case A in the tag); activations only channels.
      const [src = '', dst = ''] = e.mds.split(' ').map((d) => /:blocked:(\w+)/.exec(d)?.[1] ?? '');
      const what = /A/.test(src + dst) ? 'weights' : 'activations';
      const toBlocked = /[A-Z]/.test(dst) && !/[A-Z]/.test(src);
      return `reorder ${what} → ${toBlocked ? 'blocked' : 'plain'}`;
    }
    default:
      return `${e.kind.replace(/_v\d+$/, '')} · ${pass}`;
  }
}

export interface OpRow {
  op: string;
  /** Executions per step. */
  calls: number;
  /** Milliseconds per step. */
  ms: number;
}

/**
 * Per-step totals of each op class over the last `steps` of `runs` identical steps (the earlier ones are warm-up);
 * the log must hold the same number of executions for each step.
 */
export function perStep(execs: readonly VerboseExec[], runs: number, steps: number): OpRow[] {
  if (!(steps >= 1 && steps <= runs) || execs.length % runs !== 0) {
    throw new Error(`oneDNN verbose: ${execs.length} executions do not split into ${runs} equal steps`);
  }
  const timed = execs.slice((execs.length / runs) * (runs - steps));
  const rows = new Map<string, OpRow>();
  for (const e of timed) {
    const op = opClass(e);
    const r = rows.get(op) ?? { op, calls: 0, ms: 0 };
    r.calls += 1 / steps;
    r.ms += e.ms / steps;
    rows.set(op, r);
  }
  return [...rows.values()].sort((a, b) => b.ms - a.ms);
}
