import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeOptimizer, paramRefs, RMSProp, SGD, type OptimizerOptions } from '../src/train/optim.js';
import type { ParamRef } from '../src/train/types.js';
import { readSafetensors, toFloat32 } from '../src/io/safetensors.js';
import { EMA } from '../src/train/ema.js';
import type { Graph } from '../src/model/graph.js';

const F = Math.fround;

function ref(name: string, value: number[], grad: number[], decay = true): ParamRef {
  return { name, value: new Float32Array(value), grad: new Float32Array(grad), decay };
}

function near(got: ArrayLike<number>, want: ArrayLike<number>, what: string, rel = 1e-6, abs = 1e-9): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    assert.ok(Math.abs(g - w) <= rel * Math.abs(w) + abs, `${what}[${i}]: got ${g}, expected ${w} (diff ${g - w})`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// (a) hand-checked cases
// ---------------------------------------------------------------------------------------------------------

test('SGD without momentum: p -= lr·(g + wd·p), weight decay only where decay is true', () => {
  const opt = new SGD({ weightDecay: 0.1 });
  const a = ref('a', [1, -2], [0.5, 0.25]);
  const b = ref('b', [1, -2], [0.5, 0.25], false);
  opt.step([a, b], 0.1);
  // a: 1 − 0.1·(0.5 + 0.1) = 0.94; −2 − 0.1·(0.25 − 0.2) = −2.005.  b: 1 − 0.05 = 0.95; −2 − 0.025 = −2.025.
  assert.deepEqual([...a.value], [F(0.94), F(-2.005)]);
  assert.deepEqual([...b.value], [F(0.95), F(-2.025)]);
  assert.equal(opt.stateDict().size, 0, 'no state without momentum');
});

test('SGD momentum: buf = g on the first step, then momentum·buf + (1 − dampening)·g', () => {
  const opt = new SGD({ momentum: 0.9 });
  const p = ref('w', [1], [1]);
  opt.step([p], 0.1); // buf 1, p 0.9
  assert.equal(p.value[0], F(0.9));
  opt.step([p], 0.1); // buf 1.9, p 0.71
  assert.equal(p.value[0], F(F(0.9) - 0.19));
  assert.equal(opt.stateDict().get('w.momentum_buffer')![0], F(1.9));

  const damp = new SGD({ momentum: 0.9, dampening: 0.5 });
  const q = ref('w', [1], [1]);
  damp.step([q], 0.1); // buf = 1 (no dampening at the first step, as torch), p 0.9
  damp.step([q], 0.1); // buf = 0.9 + 0.5 = 1.4, p 0.76
  assert.equal(damp.stateDict().get('w.momentum_buffer')![0], F(1.4));
  assert.equal(q.value[0], F(F(0.9) - 0.14));
});

test('SGD nesterov: p -= lr·(d + momentum·buf)', () => {
  const opt = new SGD({ momentum: 0.9, nesterov: true });
  const p = ref('w', [1], [1]);
  opt.step([p], 0.1); // buf 1, step 1 + 0.9 = 1.9, p 0.81
  assert.equal(p.value[0], F(0.81));
  opt.step([p], 0.1); // buf 1.9, step 1 + 1.71 = 2.71, p 0.81 − 0.271 = 0.539
  near(p.value, [0.539], 'step 2', 1e-7);
  assert.throws(() => new SGD({ nesterov: true }), /nesterov momentum requires a momentum > 0/);
});

test('RMSProp (torch): v from 0, eps outside the sqrt', () => {
  const opt = new RMSProp({ alpha: 0.9, eps: 1e-8 });
  const p = ref('w', [1, 1], [0.5, -2]);
  opt.step([p], 0.01);
  // v = 0.1·g², p −= 0.01·g/(sqrt(0.1)|g| + 1e-8) ≈ ∓0.0316227766
  const s = Math.sqrt(0.1);
  near(p.value, [1 - (0.01 * 0.5) / (s * 0.5 + 1e-8), 1 + (0.01 * 2) / (s * 2 + 1e-8)], 'step 1', 1e-7);
  near(opt.stateDict().get('w.square_avg')!, [0.025, 0.4], 'square_avg', 1e-7);
});

test('RMSProp (tf): ms from 1, eps inside the sqrt, lr inside the momentum buffer', () => {
  const opt = new RMSProp({ alpha: 0.9, eps: 0.1, momentum: 0.5, tfCompatible: true });
  const p = ref('w', [1], [0.5]);
  opt.step([p], 0.01);
  // ms = 0.9 + 0.1·0.25 = 0.925; mom = 0.01·0.5/sqrt(1.025); p = 1 − mom
  const m1 = (0.01 * 0.5) / Math.sqrt(1.025);
  near(p.value, [1 - m1], 'step 1', 1e-7);
  p.grad[0] = -1;
  opt.step([p], 0.02);
  // ms = 0.9·0.925 + 0.1 = 0.9325; mom = 0.5·m1 − 0.02/sqrt(1.0325)
  const m2 = 0.5 * m1 - 0.02 / Math.sqrt(1.0325);
  near(p.value, [1 - m1 - m2], 'step 2', 1e-7);
  const st = opt.stateDict();
  assert.deepEqual([...st.keys()].sort(), ['w.mom', 'w.ms']);
  near(st.get('w.ms')!, [0.9325], 'ms', 1e-7);
  near(st.get('w.mom')!, [m2], 'mom', 1e-6);
});

// torch 1.13, float64: 3 steps from p0 with the grads G (set by hand, no model), printed parameters.
const P0 = [0.5, -1.0, 2.0, 0.0, 1e-3];
const G = [
  [0.1, -0.2, 0.3, 0.05, -1e-4],
  [0.2, 0.1, -0.4, 0.0, 2e-4],
  [-0.3, 0.25, 0.1, -0.05, 5e-5],
];
const TORCH_CASES: [string, 'sgd' | 'rmsprop', number, OptimizerOptions, number[]][] = [
  ['SGD(momentum 0.9, wd 0.01)', 'sgd', 0.1, { momentum: 0.9, weightDecay: 0.01 },
    [0.46215538949999996, -0.984260779, 1.9735635679999999, -0.008531005000000001, 0.0009784768089999998]],
  ['SGD(nesterov, wd 0.01)', 'sgd', 0.1, { momentum: 0.9, nesterov: true, weightDecay: 0.01 },
    [0.4645675619805, -0.997954623961, 1.970324136512, -0.007643544295000002, 0.0009626241897309999]],
  ['SGD(dampening 0.5)', 'sgd', 0.1, { momentum: 0.9, dampening: 0.5 },
    [0.4689, -0.9678, 1.9517, -0.011050000000000003, 0.0010056000000000002]],
  ['RMSprop(alpha 0.9, eps 1e-3)', 'rmsprop', 0.01, { alpha: 0.9, eps: 1e-3 },
    [0.46686214557586025, -1.0076874366397703, 1.9877135180704166, -0.007292078696494227, -0.000367861320600857]],
  ['RMSprop(momentum 0.9, wd 4e-5)', 'rmsprop', 0.01, { alpha: 0.9, eps: 1e-3, momentum: 0.9, weightDecay: 4e-5 },
    [0.38909169280647393, -0.9675160250805023, 1.95723079655361, -0.0581485681508772, -0.00039523649551485493]],
  ['RMSprop(centered, momentum 0.9)', 'rmsprop', 0.01, { alpha: 0.9, eps: 1e-3, momentum: 0.9, centered: true },
    [0.37955640836824855, -0.9636090198246612, 1.9528769315534953, -0.06221642158361429, -0.0003919940917411923]],
];

test('3 steps match torch.optim float64 values (SGD, nesterov, dampening, RMSprop, centered)', () => {
  for (const [what, name, lr, opts, want] of TORCH_CASES) {
    const opt = makeOptimizer(name, opts);
    const p = ref('w', P0, G[0]!);
    for (const g of G) {
      p.grad.set(g);
      opt.step([p], lr);
    }
    near(p.value, want, what, 1e-6, 1e-9);
  }
});

/** Float64 reference of both RMSProp flavours and SGD, written independently of src (arrays of numbers). */
function reference(name: 'sgd' | 'rmsprop', o: OptimizerOptions, p0: number[], grads: number[][], lrs: number[], decay: boolean): number[] {
  const p = p0.slice();
  const n = p.length;
  const mom = o.momentum ?? 0;
  const wd = decay ? o.weightDecay ?? 0 : 0;
  let buf: number[] | undefined;
  const tf = o.tfCompatible ?? false;
  const sq = new Array<number>(n).fill(tf ? 1 : 0);
  const ga = new Array<number>(n).fill(0);
  const mb = new Array<number>(n).fill(0);
  grads.forEach((g, t) => {
    const lr = lrs[t]!;
    const d = g.map((x, i) => x + wd * p[i]!);
    if (name === 'sgd') {
      let upd = d;
      if (mom !== 0) {
        buf = buf ? buf.map((b, i) => mom * b + (1 - (o.dampening ?? 0)) * d[i]!) : d.slice();
        upd = o.nesterov ? d.map((x, i) => x + mom * buf![i]!) : buf;
      }
      for (let i = 0; i < n; i++) p[i] = p[i]! - lr * upd[i]!;
      return;
    }
    const a = o.alpha ?? 0.99;
    const eps = o.eps ?? 1e-8;
    for (let i = 0; i < n; i++) {
      sq[i] = a * sq[i]! + (1 - a) * d[i]! * d[i]!;
      let v = sq[i]!;
      if (o.centered) {
        ga[i] = a * ga[i]! + (1 - a) * d[i]!;
        v -= ga[i]! * ga[i]!;
      }
      if (tf) {
        const u = (lr * d[i]!) / Math.sqrt(v + eps);
        mb[i] = mom * mb[i]! + u;
        p[i] = p[i]! - (mom ? mb[i]! : u);
      } else {
        const u = d[i]! / (Math.sqrt(v) + eps);
        mb[i] = mom * mb[i]! + u;
        p[i] = p[i]! - lr * (mom ? mb[i]! : u);
      }
    }
  });
  return p;
}

test('random cases match the inline float64 reference (all flavours, varying lr, decay on/off)', () => {
  let seed = 12345;
  const rnd = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 2 ** 32 - 0.5;
  };
  const cases: ['sgd' | 'rmsprop', OptimizerOptions][] = [
    ['sgd', {}],
    ['sgd', { momentum: 0.9, weightDecay: 1e-2 }],
    ['sgd', { momentum: 0.8, nesterov: true, weightDecay: 5e-3 }],
    ['sgd', { momentum: 0.9, dampening: 0.1, weightDecay: 1e-3 }],
    ['rmsprop', { alpha: 0.9, eps: 1e-3 }],
    ['rmsprop', { alpha: 0.99, eps: 1e-8, momentum: 0.9, weightDecay: 1e-2 }],
    ['rmsprop', { alpha: 0.9, eps: 1e-3, momentum: 0.9, centered: true }],
    ['rmsprop', { alpha: 0.9, eps: 1.0, momentum: 0.9, weightDecay: 4e-5, tfCompatible: true }],
    ['rmsprop', { alpha: 0.9, eps: 1e-3, tfCompatible: true }],
    ['rmsprop', { alpha: 0.9, eps: 1e-3, momentum: 0.9, centered: true, tfCompatible: true, weightDecay: 1e-3 }],
  ];
  const lrs = [0.05, 0.04, 0.03, 0.02];
  for (const [name, o] of cases) {
    for (const decay of [true, false]) {
      const p0 = Array.from({ length: 50 }, () => F(rnd() * 2));
      const grads = lrs.map(() => Array.from({ length: 50 }, () => F(rnd())));
      const opt = makeOptimizer(name, o);
      const p = ref('w', p0, grads[0]!, decay);
      grads.forEach((g, t) => {
        p.grad.set(g);
        opt.step([p], lrs[t]!);
      });
      const want = reference(name, o, p0, grads, lrs, decay);
      near(p.value, want, `${name} ${JSON.stringify(o)} decay ${decay}`, 2e-6, 1e-8);
    }
  }
});

test('state dict round-trips: save after 2 steps, load into a fresh optimizer, continue identically', () => {
  const cases: ['sgd' | 'rmsprop', OptimizerOptions, string[]][] = [
    ['sgd', { momentum: 0.9 }, ['a.momentum_buffer', 'b.momentum_buffer']],
    ['rmsprop', { momentum: 0.9, centered: true }, ['a.square_avg', 'a.momentum_buffer', 'a.grad_avg', 'b.square_avg', 'b.momentum_buffer', 'b.grad_avg']],
    ['rmsprop', { momentum: 0.9, tfCompatible: true }, ['a.ms', 'a.mom', 'b.ms', 'b.mom']],
  ];
  for (const [name, o, keys] of cases) {
    const mk = () => [ref('a', [1, 2, 3], [0.1, -0.2, 0.3]), ref('b', [-1], [0.5], false)];
    const p1 = mk();
    const o1 = makeOptimizer(name, o);
    o1.step(p1, 0.1);
    o1.step(p1, 0.1);
    const sd = o1.stateDict();
    assert.deepEqual([...sd.keys()].sort(), keys.slice().sort(), name);
    const p2 = mk();
    p1.forEach((p, i) => p2[i]!.value.set(p.value));
    const o2 = makeOptimizer(name, o);
    o2.loadStateDict(sd, 'ckpt.safetensors');
    sd.get(keys[0]!)!.fill(123); // the optimizer must have copied the state
    o1.step(p1, 0.05);
    o2.step(p2, 0.05);
    p1.forEach((p, i) => assert.deepEqual([...p2[i]!.value], [...p.value], `${name} ${p.name}`));
  }
});

test('loadStateDict names the source and the problem', () => {
  const params = [ref('a', [1, 2, 3], [0.1, 0.2, 0.3])];
  const o = new SGD({ momentum: 0.9 });
  o.step(params, 0.1);
  assert.throws(() => o.loadStateDict(new Map([['a.momentum_buffer', new Float32Array(2)]]), 'ck.safetensors'),
    /^Error: ck\.safetensors: optimizer state does not match the SGD\(momentum 0\.9.*\n {2}a\.momentum_buffer has 2 values, the param has 3/);
  assert.throws(() => o.loadStateDict(new Map([['a.square_avg', new Float32Array(3)]]), 'ck.safetensors'),
    /ck\.safetensors: .*unexpected key a\.square_avg \(this SGD.* keeps <param>\.momentum_buffer\)/s);
  assert.throws(() => o.loadStateDict(new Map([['zz.momentum_buffer', new Float32Array(3)]]), 'ck.safetensors'),
    /ck\.safetensors: .*state for unknown param zz/s);
  const r = new RMSProp({ momentum: 0.9 });
  assert.throws(() => r.loadStateDict(new Map([['a.square_avg', new Float32Array(3)]]), 'ck2'), /ck2: .*missing a\.momentum_buffer/s);
  const tf = new RMSProp({ tfCompatible: true });
  assert.throws(() => tf.loadStateDict(new Map([['a.square_avg', new Float32Array(3)]]), 'ck3'), /ck3: .*unexpected key a\.square_avg.*<param>\.ms/s);
  // Loaded before any step: checked against the params at the first step, still naming the source.
  const fresh = new SGD({ momentum: 0.9 });
  fresh.loadStateDict(new Map([['a.momentum_buffer', new Float32Array(4)]]), 'early.safetensors');
  assert.throws(() => fresh.step(params, 0.1), /early\.safetensors: .*a\.momentum_buffer has 4 values, the param has 3/s);
});

test('makeOptimizer rejects unknown names, options and invalid values', () => {
  assert.throws(() => makeOptimizer('adam' as 'sgd'), /unknown optimizer 'adam'/);
  assert.throws(() => makeOptimizer('sgd', { alpha: 0.9 }), /optimizer sgd: unknown option alpha/);
  assert.throws(() => makeOptimizer('rmsprop', { nesterov: true }), /optimizer rmsprop: unknown option nesterov/);
  assert.throws(() => makeOptimizer('rmsprop', { alpha: 1.5 }), /alpha must be a finite number in \[0, 1\]/);
  assert.throws(() => new SGD().step([ref('a', [1], [1])], NaN), /learning rate must be a finite number/);
  assert.throws(() => new SGD().step([ref('a', [1, 2], [1])], 0.1), /param a has 2 values but its grad has 1/);
  assert.ok(makeOptimizer('sgd', { momentum: 0.9, nesterov: true }) instanceof SGD);
  assert.ok(makeOptimizer('rmsprop', { tfCompatible: true }) instanceof RMSProp);
});

// ---------------------------------------------------------------------------------------------------------
// EMA of the weights
// ---------------------------------------------------------------------------------------------------------

test('EMA: TF num_updates warm-up, params averaged, BN buffers copied, state round-trips', () => {
  const graph = {
    params: [{ name: 'w', shape: [2], role: 'conv.weight' }],
    buffers: [
      { name: 'bn.running_mean', shape: [1], role: 'bn.running_mean' },
      { name: 'bn.num_batches_tracked', shape: [], role: 'bn.num_batches_tracked' },
    ],
  } as unknown as Graph;
  const weights = new Map([
    ['w', new Float32Array([1, 2])],
    ['bn.running_mean', new Float32Array([5])],
    ['bn.num_batches_tracked', new Float32Array([0])],
  ]);
  const ema = new EMA(graph, weights, { decay: 0.9999 });
  assert.equal(ema.currentDecay(), 0.1); // min(0.9999, 1/10)
  weights.get('w')!.set([3, 4]);
  weights.get('bn.running_mean')![0] = 7;
  ema.update(weights); // shadow = 0.1·[1, 2] + 0.9·[3, 4]
  assert.equal(ema.currentDecay(), 2 / 11);
  ema.update(weights); // shadow += (9/11)·([3, 4] − shadow)
  const s1 = [0.1 * 1 + 0.9 * 3, 0.1 * 2 + 0.9 * 4];
  const s2 = s1.map((v, i) => v + (9 / 11) * ([3, 4][i]! - v));
  const out = new Map([...weights].map(([k, v]) => [k, v.slice()] as const));
  ema.copyTo(out);
  near(out.get('w')!, s2, 'averaged', 1e-7);
  assert.equal(out.get('bn.running_mean')![0], 7, 'running stats copied, not averaged');
  const avgBuf = new EMA(graph, weights, { decay: 0.5, numUpdatesWarmup: false, buffers: 'average' });
  weights.get('bn.running_mean')![0] = 9;
  avgBuf.update(weights);
  assert.equal(avgBuf.weights().get('bn.running_mean')![0], 8);

  const sd = ema.stateDict();
  assert.deepEqual([...sd.get('num_updates')!], [2, 0]);
  const again = new EMA(graph, weights);
  again.loadStateDict(sd, 'ckpt');
  assert.equal(again.numUpdates, 2);
  assert.deepEqual([...again.weights().get('w')!], [...ema.weights().get('w')!]);
  assert.throws(() => again.loadStateDict(new Map([['w', new Float32Array(3)]]), 'ckpt'), /^Error: ckpt: EMA state does not match the model:\n {2}w has 3 values, expected 2/);
});

// ---------------------------------------------------------------------------------------------------------
// (b) PyTorch golden check on the seed CIFAR model
// ---------------------------------------------------------------------------------------------------------

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const FIX = path.join(ROOT, 'test', 'fixtures');
const NATIVE = path.join(ROOT, 'build', 'Release', 'mnv2.node');
const OPTIM_FILE = path.join(FIX, 'seed-cifar.optim.safetensors');
/** The tolerance: relative L2 error per stored tensor after 3 steps. */
const TOL = 1e-4;
/** ||got − want|| / ||want − initial||: the error relative to what the 3 steps changed (diagnostic bound). */
const UPDATE_TOL = 1e-2;

interface TorchConfig {
  type: 'SGD' | 'RMSprop';
  lr: number;
  momentum?: number;
  nesterov?: boolean;
  weight_decay?: number;
  dampening?: number;
  alpha?: number;
  eps?: number;
  centered?: boolean;
}

function fromTorch(c: TorchConfig): { name: 'sgd' | 'rmsprop'; opts: OptimizerOptions } {
  const known = new Set(['type', 'lr', 'momentum', 'nesterov', 'weight_decay', 'dampening', 'alpha', 'eps', 'centered']);
  for (const k of Object.keys(c)) if (!known.has(k)) throw new Error(`fixture config has an unmapped torch option ${k}`);
  const common = { momentum: c.momentum, weightDecay: c.weight_decay };
  if (c.type === 'SGD') return { name: 'sgd', opts: { ...common, nesterov: c.nesterov, dampening: c.dampening } };
  if (c.type === 'RMSprop') return { name: 'rmsprop', opts: { ...common, alpha: c.alpha, eps: c.eps, centered: c.centered } };
  throw new Error(`fixture config has an unknown optimizer type ${String(c.type)}`);
}

test('3 optimizer steps on the seed CIFAR model match PyTorch (float64) per tensor', { skip: !fs.existsSync(NATIVE) && `no ${NATIVE}` }, async () => {
  const { NativeModel } = await import('../src/engine/native/model.js');
  const { mobilenetV2 } = await import('../src/model/mobilenetv2.js');
  const optimFile = readSafetensors(OPTIM_FILE);
  const configs = JSON.parse(optimFile.metadata['configs']!) as Record<string, TorchConfig>;
  const steps = Number(optimFile.metadata['steps']);
  assert.equal(steps, 3);
  const subset = optimFile.metadata['subset'] !== undefined ? (JSON.parse(optimFile.metadata['subset']) as string[]) : undefined;

  const wFile = readSafetensors(path.join(FIX, 'seed-cifar.weights.safetensors'));
  const weights = new Map<string, Float32Array>();
  for (const [k, t] of wFile.tensors) weights.set(k, toFloat32(t, k, 'seed-cifar.weights.safetensors'));
  const io = readSafetensors(path.join(FIX, 'seed-cifar.io.safetensors'));
  const input = toFloat32(io.tensors.get('train.input')!, 'train.input', 'seed-cifar.io.safetensors');
  const labels = toFloat32(io.tensors.get('train.labels')!, 'train.labels', 'seed-cifar.io.safetensors');
  const batch = labels.length;
  const graph = mobilenetV2('seed-cifar');

  const torchLosses = optimFile.metadata['losses'] !== undefined ? (JSON.parse(optimFile.metadata['losses']) as Record<string, number[]>) : undefined;
  const lines: string[] = [];
  const failures: string[] = [];
  // One model (its compiled training program) for all configs; each config restarts from the fixture weights.
  const model = new NativeModel(graph, weights);
  const params = paramRefs(model); // weight decay on every param, as torch's default
  for (const [cname, cfg] of Object.entries(configs)) {
    const { name, opts } = fromTorch(cfg);
    model.loadStateDict(weights, 'seed-cifar.weights.safetensors');
    const opt = makeOptimizer(name, opts);
    const losses: number[] = [];
    for (let s = 0; s < steps; s++) {
      losses.push(model.trainStep(input, labels, batch).loss);
      opt.step(params, cfg.lr);
      model.weightsChanged();
    }
    const names = [...optimFile.tensors.keys()].filter((k) => k.startsWith(`${cname}.`)).map((k) => k.slice(cname.length + 1));
    if (subset) assert.deepEqual(names.slice().sort(), subset.slice().sort(), `${cname}: stored tensors vs metadata subset`);
    assert.ok(names.length > 0, `${cname}: no stored tensors`);
    const errs: [number, string][] = [];
    const updErrs: [number, string][] = [];
    for (const n of names) {
      const want = toFloat32(optimFile.tensors.get(`${cname}.${n}`)!, `${cname}.${n}`, OPTIM_FILE);
      const got = model.weights.get(n);
      assert.ok(got, `${cname}: the model has no ${n}`);
      assert.equal(got.length, want.length, `${cname}.${n}: length`);
      let num = 0;
      let den = 0;
      for (let i = 0; i < want.length; i++) {
        const d = got[i]! - want[i]!;
        num += d * d;
        den += want[i]! * want[i]!;
      }
      const e = den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
      errs.push([e, n]);
      // Also relative to the update itself (want − initial), a much stricter measure after only 3 small steps.
      const w0 = weights.get(n)!;
      let du = 0;
      for (let i = 0; i < want.length; i++) du += (want[i]! - w0[i]!) ** 2;
      const eu = Math.sqrt(num / du);
      if (du > 1e-6 * den) {
        // Update ≥ 1e-3 of the param: float32 rounding of the param (~6e-8) cannot hide the optimizer's work.
        updErrs.push([eu, n]);
        if (!(eu <= UPDATE_TOL)) failures.push(`${cname}.${n}: error relative to the update ${eu.toExponential(3)} > ${UPDATE_TOL}`);
      }
      if (!(e <= TOL)) failures.push(`${cname}.${n}: relative L2 ${e.toExponential(3)} > ${TOL}`);
    }
    errs.sort((a, b) => a[0] - b[0]);
    updErrs.sort((a, b) => a[0] - b[0]);
    const worst = errs[errs.length - 1]!;
    const worstU = updErrs[updErrs.length - 1]!;
    lines.push(
      `${cname}: ${errs.length} tensors, rel L2 max ${worst[0].toExponential(3)} (${worst[1]}), ` +
        `median ${errs[errs.length >> 1]![0].toExponential(3)}; relative to the update (${updErrs.length} tensors ` +
        `whose update is ≥ 1e-3 of the param): max ${worstU[0].toExponential(3)} (${worstU[1]}); losses ${losses.map((l) => l.toFixed(6)).join(', ')}` +
        (torchLosses?.[cname] ? ` (torch ${torchLosses[cname]!.slice(0, steps).map((l) => l.toFixed(6)).join(', ')})` : ''),
    );
  }
  console.log(lines.map((l) => `# ${l}`).join('\n'));
  assert.deepEqual(failures, [], failures.slice(0, 20).join('\n'));
});
