/**
 * Optimizers with PyTorch semantics (torch.optim.SGD, torch.optim.RMSprop) and, optionally, TensorFlow's
 * RMSProp as the paper (TF-slim) used it.
 *
 * Every update computes in float64 per element (JS numbers) and stores float32. Weight decay is the coupled
 * L2 kind of both frameworks (g += wd·p, PyTorch's `weight_decay`, TF-slim's l2_regularizer gradient) and only
 * applies to params with `decay: true`.
 *
 * State (for checkpoints) is keyed `${param}.${slot}`:
 *   SGD                 `${p}.momentum_buffer`                       (only when momentum ≠ 0)
 *   RMSProp (torch)     `${p}.square_avg`, `${p}.momentum_buffer` (momentum ≠ 0), `${p}.grad_avg` (centered)
 *   RMSProp (tf)        `${p}.ms`, `${p}.mom` (momentum ≠ 0), `${p}.mg` (centered)
 * The TF slots have other names because they mean other things (ms starts at 1, mom includes the lr), so a
 * torch-mode state cannot be loaded into a TF-mode optimizer by accident.
 */
import type { Optimizer, ParamRef } from './types.js';
import type { NativeModel } from '../engine/native/model.js';
import { fail } from '../util/errors.js';

export interface SGDOptions {
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  dampening?: number;
}

export interface RMSPropOptions {
  /** Smoothing constant of the squared-gradient average (PyTorch `alpha`; TF/paper "decay"/rho, 0.9 there). */
  alpha?: number;
  eps?: number;
  momentum?: number;
  weightDecay?: number;
  centered?: boolean;
  /** TensorFlow's RMSProp (see {@link RMSProp}) instead of PyTorch's. */
  tfCompatible?: boolean;
}

export type OptimizerName = 'sgd' | 'rmsprop';
export type OptimizerOptions = SGDOptions & RMSPropOptions;

function checkNumber(owner: string, key: string, v: number, min = 0, max = Infinity): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    fail(owner, `${key} must be a finite number in [${min}, ${max}], got ${String(v)}`);
  }
}

function checkLr(owner: string, lr: number): void {
  if (typeof lr !== 'number' || !Number.isFinite(lr) || lr < 0) fail(owner, `learning rate must be a finite number ≥ 0, got ${String(lr)}`);
}

/**
 * Shared state handling: per-param slots (Float32Arrays of the param's length), created lazily on the first
 * step that sees the param; a loaded state is validated against the params as soon as they are known.
 */
abstract class SlottedOptimizer implements Optimizer {
  /** param name -> slot name -> array */
  protected readonly state = new Map<string, Map<string, Float32Array>>();
  /** Param sizes seen by `step` (to validate a loaded state immediately). */
  private readonly sizes = new Map<string, number>();
  /** Source of a loaded state not yet checked against the params. */
  private pendingSource: string | undefined;

  protected abstract readonly owner: string;
  /** Slot names this configuration keeps (all of them present once a param has been stepped). */
  protected abstract slotNames(): readonly string[];
  abstract step(params: readonly ParamRef[], lr: number): void;

  /** Validates params (and a pending loaded state) on every step; cheap (one pass over ~160 refs). */
  protected checkParams(params: readonly ParamRef[]): void {
    for (const p of params) {
      if (p.value.length !== p.grad.length) {
        throw new Error(`${this.owner}: param ${p.name} has ${p.value.length} values but its grad has ${p.grad.length}`);
      }
      const known = this.sizes.get(p.name);
      if (known === undefined) this.sizes.set(p.name, p.value.length);
      else if (known !== p.value.length) throw new Error(`${this.owner}: param ${p.name} changed size from ${known} to ${p.value.length}`);
    }
    if (this.pendingSource !== undefined) {
      const src = this.pendingSource;
      this.validateAgainstSizes(src, new Map(params.map((p) => [p.name, p.value.length])));
      this.pendingSource = undefined;
    }
  }

  protected slots(name: string): Map<string, Float32Array> {
    let s = this.state.get(name);
    if (!s) {
      s = new Map();
      this.state.set(name, s);
    }
    return s;
  }

  stateDict(): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const [p, slots] of this.state) for (const [k, v] of slots) out.set(`${p}.${k}`, v.slice());
    return out;
  }

  loadStateDict(state: ReadonlyMap<string, Float32Array>, source: string): void {
    const want = this.slotNames();
    const parsed = new Map<string, Map<string, Float32Array>>();
    const problems: string[] = [];
    for (const [key, arr] of state) {
      const slot = want.find((s) => key.endsWith(`.${s}`) && key.length > s.length + 1);
      if (!slot) {
        problems.push(`unexpected key ${key} (this ${this.owner} keeps ${want.map((s) => `<param>.${s}`).join(', ')})`);
        continue;
      }
      if (!(arr instanceof Float32Array)) {
        problems.push(`${key} is not a Float32Array`);
        continue;
      }
      const p = key.slice(0, key.length - slot.length - 1);
      let m = parsed.get(p);
      if (!m) parsed.set(p, (m = new Map()));
      m.set(slot, arr);
    }
    for (const [p, m] of parsed) {
      for (const s of want) if (!m.has(s)) problems.push(`missing ${p}.${s} (${p} has ${[...m.keys()].join(', ')})`);
      const lens = new Set([...m.values()].map((a) => a.length));
      if (lens.size > 1) problems.push(`slots of ${p} have different lengths (${[...m].map(([k, a]) => `${k}: ${a.length}`).join(', ')})`);
    }
    if (problems.length) throw stateError(source, this.owner, problems);
    this.state.clear();
    for (const [p, m] of parsed) {
      const s = this.slots(p);
      for (const [k, a] of m) s.set(k, a.slice());
    }
    if (this.sizes.size) {
      this.validateAgainstSizes(source, this.sizes);
      this.pendingSource = undefined;
    } else {
      this.pendingSource = source;
    }
  }

  private validateAgainstSizes(source: string, sizes: ReadonlyMap<string, number>): void {
    const problems: string[] = [];
    for (const [p, m] of this.state) {
      const n = sizes.get(p);
      if (n === undefined) {
        problems.push(`state for unknown param ${p}`);
        continue;
      }
      for (const [k, a] of m) if (a.length !== n) problems.push(`${p}.${k} has ${a.length} values, the param has ${n}`);
    }
    if (problems.length) {
      this.state.clear();
      throw stateError(source, this.owner, problems);
    }
  }
}

function stateError(source: string, owner: string, problems: string[]): Error {
  const more = problems.length > 12 ? `\n  ... and ${problems.length - 12} more` : '';
  return new Error(`${source}: optimizer state does not match the ${owner}:\n  ${problems.slice(0, 12).join('\n  ')}${more}`);
}

/**
 * torch.optim.SGD, exactly:
 *   d_p = g + wd·p
 *   buf = d_p (first step) | momentum·buf + (1 − dampening)·d_p
 *   d_p = d_p + momentum·buf (nesterov) | buf
 *   p  -= lr·d_p
 */
export class SGD extends SlottedOptimizer {
  protected readonly owner: string;
  readonly momentum: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  readonly dampening: number;

  constructor(opts: SGDOptions = {}) {
    super();
    this.momentum = opts.momentum ?? 0;
    this.nesterov = opts.nesterov ?? false;
    this.weightDecay = opts.weightDecay ?? 0;
    this.dampening = opts.dampening ?? 0;
    checkNumber('SGD', 'momentum', this.momentum);
    checkNumber('SGD', 'weightDecay', this.weightDecay);
    checkNumber('SGD', 'dampening', this.dampening, 0, 1);
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) {
      throw new Error('SGD: nesterov momentum requires a momentum > 0 and zero dampening (as in PyTorch)');
    }
    this.owner = `SGD(momentum ${this.momentum}${this.nesterov ? ', nesterov' : ''}, weightDecay ${this.weightDecay}, dampening ${this.dampening})`;
  }

  protected slotNames(): readonly string[] {
    return this.momentum !== 0 ? ['momentum_buffer'] : [];
  }

  step(params: readonly ParamRef[], lr: number): void {
    checkLr('SGD', lr);
    this.checkParams(params);
    const mom = this.momentum;
    for (const p of params) {
      const wd = p.decay ? this.weightDecay : 0;
      if (mom === 0) {
        sgdPlain(p.value, p.grad, lr, wd);
        continue;
      }
      const s = this.slots(p.name);
      const buf = s.get('momentum_buffer');
      if (!buf) {
        const b = new Float32Array(p.value.length);
        s.set('momentum_buffer', b);
        sgdFirst(p.value, p.grad, b, lr, wd, mom, this.nesterov);
      } else {
        sgdMomentum(p.value, p.grad, buf, lr, wd, mom, 1 - this.dampening, this.nesterov);
      }
    }
  }
}

function sgdPlain(w: Float32Array, g: Float32Array, lr: number, wd: number): void {
  const n = w.length;
  for (let i = 0; i < n; i++) {
    const p = w[i]!;
    w[i] = p - lr * (g[i]! + wd * p);
  }
}

function sgdFirst(w: Float32Array, g: Float32Array, buf: Float32Array, lr: number, wd: number, mom: number, nesterov: boolean): void {
  const n = w.length;
  if (nesterov) {
    for (let i = 0; i < n; i++) {
      const p = w[i]!;
      const d = g[i]! + wd * p;
      buf[i] = d;
      w[i] = p - lr * (d + mom * d);
    }
  } else {
    for (let i = 0; i < n; i++) {
      const p = w[i]!;
      const d = g[i]! + wd * p;
      buf[i] = d;
      w[i] = p - lr * d;
    }
  }
}

function sgdMomentum(w: Float32Array, g: Float32Array, buf: Float32Array, lr: number, wd: number, mom: number, undamp: number, nesterov: boolean): void {
  const n = w.length;
  if (nesterov) {
    for (let i = 0; i < n; i++) {
      const p = w[i]!;
      const d = g[i]! + wd * p;
      const b = mom * buf[i]! + undamp * d;
      buf[i] = b;
      w[i] = p - lr * (d + mom * b);
    }
  } else {
    for (let i = 0; i < n; i++) {
      const p = w[i]!;
      const b = mom * buf[i]! + undamp * (g[i]! + wd * p);
      buf[i] = b;
      w[i] = p - lr * b;
    }
  }
}

/**
 * RMSProp in two flavours (g = grad + wd·p in both).
 *
 * PyTorch (torch.optim.RMSprop, the default):
 *   v    = α·v + (1−α)·g²                          v starts at 0
 *   avg  = sqrt(v) + eps                           centered: sqrt(v − ḡ²) + eps, ḡ = α·ḡ + (1−α)·g
 *   buf  = momentum·buf + g/avg;  p -= lr·buf      (momentum ≠ 0)
 *   p   -= lr·g/avg                                (momentum = 0)
 *
 * TensorFlow (`tfCompatible: true`; tf.train.RMSPropOptimizer / ApplyRMSProp, what the paper's TF-slim used):
 *   ms   = ρ·ms + (1−ρ)·g²                         ms starts at 1 (TF's initial accumulator)
 *   mom  = momentum·mom + lr·g/sqrt(ms + eps)      centered: sqrt(ms − mg² + eps)
 *   p   -= mom                                     (with momentum = 0 this is p -= lr·g/sqrt(ms + eps))
 *
 * The differences: (1) with ms = 1 at the start, TF's first steps are ≈ lr·g (for |g| ≪ 1), while PyTorch's
 * v = 0 start makes the first step lr·g/(sqrt(1−α)|g| + eps) ≈ lr·3.16·sign(g) for α = 0.9, a much larger
 * step for small gradients (the reason the same lr behaves differently in the two frameworks); (2) eps is
 * inside the sqrt in TF, outside in PyTorch, so the same number means a different damping (TF-slim's
 * train_image_classifier default opt_epsilon is 1.0); (3) TF keeps lr inside the momentum buffer, so an lr
 * change takes effect gradually, while PyTorch rescales the whole accumulated step at once.
 * Centered variance estimates are clamped at 0 before the sqrt (float32 state can round v − ḡ² below 0).
 */
export class RMSProp extends SlottedOptimizer {
  protected readonly owner: string;
  readonly alpha: number;
  readonly eps: number;
  readonly momentum: number;
  readonly weightDecay: number;
  readonly centered: boolean;
  readonly tfCompatible: boolean;

  constructor(opts: RMSPropOptions = {}) {
    super();
    this.alpha = opts.alpha ?? 0.99;
    this.eps = opts.eps ?? 1e-8;
    this.momentum = opts.momentum ?? 0;
    this.weightDecay = opts.weightDecay ?? 0;
    this.centered = opts.centered ?? false;
    this.tfCompatible = opts.tfCompatible ?? false;
    checkNumber('RMSProp', 'alpha', this.alpha, 0, 1);
    checkNumber('RMSProp', 'eps', this.eps);
    checkNumber('RMSProp', 'momentum', this.momentum);
    checkNumber('RMSProp', 'weightDecay', this.weightDecay);
    this.owner =
      `RMSProp(${this.tfCompatible ? 'tf' : 'torch'}, alpha ${this.alpha}, eps ${this.eps}, momentum ${this.momentum}, ` +
      `weightDecay ${this.weightDecay}${this.centered ? ', centered' : ''})`;
  }

  protected slotNames(): readonly string[] {
    const tf = this.tfCompatible;
    const names = [tf ? 'ms' : 'square_avg'];
    if (this.momentum !== 0) names.push(tf ? 'mom' : 'momentum_buffer');
    if (this.centered) names.push(tf ? 'mg' : 'grad_avg');
    return names;
  }

  step(params: readonly ParamRef[], lr: number): void {
    checkLr('RMSProp', lr);
    this.checkParams(params);
    const tf = this.tfCompatible;
    const [sqName, bufName, gaName] = tf ? ['ms', 'mom', 'mg'] : ['square_avg', 'momentum_buffer', 'grad_avg'];
    for (const p of params) {
      const n = p.value.length;
      const s = this.slots(p.name);
      let sq = s.get(sqName);
      if (!sq) {
        sq = new Float32Array(n);
        if (tf) sq.fill(1);
        s.set(sqName, sq);
      }
      let buf: Float32Array | undefined;
      if (this.momentum !== 0) {
        buf = s.get(bufName);
        if (!buf) s.set(bufName, (buf = new Float32Array(n)));
      }
      let ga: Float32Array | undefined;
      if (this.centered) {
        ga = s.get(gaName);
        if (!ga) s.set(gaName, (ga = new Float32Array(n)));
      }
      const wd = p.decay ? this.weightDecay : 0;
      if (tf) rmspropTf(p.value, p.grad, sq, buf, ga, lr, wd, this.alpha, this.eps, this.momentum);
      else rmspropTorch(p.value, p.grad, sq, buf, ga, lr, wd, this.alpha, this.eps, this.momentum);
    }
  }
}

function rmspropTorch(
  w: Float32Array, g: Float32Array, sq: Float32Array, buf: Float32Array | undefined, ga: Float32Array | undefined,
  lr: number, wd: number, alpha: number, eps: number, mom: number,
): void {
  const n = w.length;
  const a1 = 1 - alpha;
  if (ga) {
    for (let i = 0; i < n; i++) {
      const p = w[i]!;
      const d = g[i]! + wd * p;
      const v = alpha * sq[i]! + a1 * d * d;
      const m = alpha * ga[i]! + a1 * d;
      sq[i] = v;
      ga[i] = m;
      const u = d / (Math.sqrt(Math.max(0, v - m * m)) + eps);
      if (buf) {
        const b = mom * buf[i]! + u;
        buf[i] = b;
        w[i] = p - lr * b;
      } else {
        w[i] = p - lr * u;
      }
    }
  } else if (buf) {
    for (let i = 0; i < n; i++) {
      const p = w[i]!;
      const d = g[i]! + wd * p;
      const v = alpha * sq[i]! + a1 * d * d;
      sq[i] = v;
      const b = mom * buf[i]! + d / (Math.sqrt(v) + eps);
      buf[i] = b;
      w[i] = p - lr * b;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const p = w[i]!;
      const d = g[i]! + wd * p;
      const v = alpha * sq[i]! + a1 * d * d;
      sq[i] = v;
      w[i] = p - (lr * d) / (Math.sqrt(v) + eps);
    }
  }
}

function rmspropTf(
  w: Float32Array, g: Float32Array, ms: Float32Array, mom: Float32Array | undefined, mg: Float32Array | undefined,
  lr: number, wd: number, rho: number, eps: number, momentum: number,
): void {
  const n = w.length;
  const r1 = 1 - rho;
  if (mg) {
    for (let i = 0; i < n; i++) {
      const p = w[i]!;
      const d = g[i]! + wd * p;
      const v = rho * ms[i]! + r1 * d * d;
      const m = rho * mg[i]! + r1 * d;
      ms[i] = v;
      mg[i] = m;
      const u = (lr * d) / Math.sqrt(Math.max(0, v - m * m) + eps);
      if (mom) {
        const b = momentum * mom[i]! + u;
        mom[i] = b;
        w[i] = p - b;
      } else {
        w[i] = p - u;
      }
    }
  } else if (mom) {
    for (let i = 0; i < n; i++) {
      const p = w[i]!;
      const d = g[i]! + wd * p;
      const v = rho * ms[i]! + r1 * d * d;
      ms[i] = v;
      const b = momentum * mom[i]! + (lr * d) / Math.sqrt(v + eps);
      mom[i] = b;
      w[i] = p - b;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const p = w[i]!;
      const d = g[i]! + wd * p;
      const v = rho * ms[i]! + r1 * d * d;
      ms[i] = v;
      w[i] = p - (lr * d) / Math.sqrt(v + eps);
    }
  }
}

export interface ParamRefOptions {
  /** Exclude BN weights/biases and conv/linear biases from weight decay (default false: decay everything, as torch). */
  noDecayOnBnAndBias?: boolean;
}

/** The model's parameters (graph order) with their gradient arrays, for `Optimizer.step`. */
export function paramRefs(model: NativeModel, opts: ParamRefOptions = {}): ParamRef[] {
  return model.graph.params.map((t) => {
    const value = model.weights.get(t.name);
    const grad = model.grads.get(t.name);
    if (!value || !grad) throw new Error(`paramRefs: the model has no ${value ? 'gradient' : 'weights'} for ${t.name}`);
    const noDecay = opts.noDecayOnBnAndBias === true && (t.role === 'bn.weight' || t.role === 'bn.bias' || t.role === 'conv.bias' || t.role === 'linear.bias');
    return { name: t.name, value, grad, decay: !noDecay };
  });
}

const SGD_KEYS: readonly string[] = ['momentum', 'nesterov', 'weightDecay', 'dampening'];
const RMSPROP_KEYS: readonly string[] = ['alpha', 'eps', 'momentum', 'weightDecay', 'centered', 'tfCompatible'];

/** An optimizer by name; options that the named optimizer does not have are an error (not silently ignored). */
export function makeOptimizer(name: OptimizerName, opts: OptimizerOptions = {}): Optimizer {
  const keys = name === 'sgd' ? SGD_KEYS : name === 'rmsprop' ? RMSPROP_KEYS : undefined;
  if (!keys) throw new Error(`unknown optimizer '${String(name)}' (expected sgd or rmsprop)`);
  const bad = Object.keys(opts).filter((k) => !keys.includes(k) && (opts as Record<string, unknown>)[k] !== undefined);
  if (bad.length) throw new Error(`optimizer ${name}: unknown option${bad.length > 1 ? 's' : ''} ${bad.join(', ')} (expected ${keys.join(', ')})`);
  return name === 'sgd' ? new SGD(opts) : new RMSProp(opts);
}
