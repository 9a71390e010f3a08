/**
 * The addon's BN + clip kernel (training BN followed by ReLU6, which oneDNN 2.6 cannot fuse) against a float64
 * computation and oneDNN's own BN and eltwise primitives on the same data: batch statistics, output, every gradient; live and frozen
 * statistics; channel counts that leave blocked padding; the training plan uses it for every BN → ReLU6.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { native, type BufferSpec, type OpSpec } from '../src/engine/native/binding.js';
import { buildTrainProgram } from '../src/engine/native/plan.js';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { relL2 } from './helpers/fixtures.js';
import { Rng } from '../src/util/rng.js';

interface Run { y: Float32Array; dx: Float32Array; dgamma: Float32Array; dbeta: Float32Array; mean: Float32Array; var: Float32Array }

/** One BN + ReLU6 forward and backward on plain [N, C, H, W] data, by the kernel ('clip') or by oneDNN's BN and eltwise. */
function bnRelu6(how: 'clip' | 'onednn', dims: number[], x: Float32Array, dy: Float32Array, gamma: Float32Array, beta: Float32Array, frozen?: { mean: Float32Array; var: Float32Array }): Run {
  const c = dims[1]!;
  const n = x.length;
  const out: Run = { y: new Float32Array(n), dx: new Float32Array(n), dgamma: new Float32Array(c), dbeta: new Float32Array(c), mean: frozen?.mean.slice() ?? new Float32Array(c), var: frozen?.var.slice() ?? new Float32Array(c) };
  const plain = (data: Float32Array): BufferSpec => ({ layout: 'plain', dims: data.length === c ? [c] : dims, data });
  const act = (): BufferSpec => ({ layout: 'act', dims });
  // 0 x, 1 dy, 2 γ, 3 β, 4 mean, 5 var, 6 y, 7 dx, 8 dγ, 9 dβ | 10 x act, 11 dy act, 12 bn out, 13 relu6 out, 14 d(bn out), 15 dx act
  const buffers = [plain(x), plain(dy), plain(gamma), plain(beta), plain(out.mean), plain(out.var), plain(out.y), plain(out.dx), plain(out.dgamma), plain(out.dbeta), act(), act(), act(), act(), act(), act()];
  const bn = { src: 10, eps: 1e-3, train: true, globalStats: frozen !== undefined, scale: 2, shift: 3, mean: 4, var: 5 };
  const grads = { diff_src: 15, diff_scale: 8, diff_shift: 9 };
  const [fwd, bwd]: OpSpec[][] = how === 'clip'
    ? [[{ op: 'bn', name: 'bn', ...bn, clip: 6, dst: 12 }, { op: 'reorder', src: 12, dst: 6 }], [{ op: 'bn_bwd', name: 'bn', ...bn, clip: 6, diff_dst: 11, ...grads }]]
    : [[{ op: 'bn', name: 'bn', ...bn, dst: 12 }, { op: 'eltwise', name: 'act', kind: 'relu6', src: 12, dst: 13, train: true }, { op: 'reorder', src: 13, dst: 6 }],
        [{ op: 'eltwise_bwd', name: 'act', kind: 'relu6', data: 12, diff_dst: 11, diff_src: 14 }, { op: 'bn_bwd', name: 'bn', ...bn, diff_dst: 14, ...grads }]];
  const prog = new (native().Program)({
    actFormat: native().info().actFormat, buffers,
    segments: [[{ op: 'reorder', src: 0, dst: 10 }, { op: 'reorder', src: 1, dst: 11 }, ...fwd], [...bwd, { op: 'reorder', src: 15, dst: 7 }]],
  });
  prog.run(0);
  prog.run(1);
  prog.release();
  return out;
}

/** The same in float64, straight from the definitions (PyTorch: batch statistics, biased variance; gradient where 0 < z < 6). */
function reference(dims: number[], x: Float32Array, dy: Float32Array, gamma: Float32Array, beta: Float32Array, frozen?: { mean: Float32Array; var: Float32Array }): Run {
  const [n, c] = [dims[0]!, dims[1]!];
  const hw = x.length / n / c;
  const at = (b: number, ch: number, p: number): number => (b * c + ch) * hw + p;
  const out: Run = { y: new Float32Array(x.length), dx: new Float32Array(x.length), dgamma: new Float32Array(c), dbeta: new Float32Array(c), mean: new Float32Array(c), var: new Float32Array(c) };
  const m = n * hw;
  for (let ch = 0; ch < c; ch++) {
    let [s, q] = [0, 0];
    for (let b = 0; b < n; b++) for (let p = 0; p < hw; p++) s += x[at(b, ch, p)]!;
    const mean = frozen ? frozen.mean[ch]! : s / m;
    for (let b = 0; b < n; b++) for (let p = 0; p < hw; p++) q += (x[at(b, ch, p)]! - mean) ** 2;
    const variance = frozen ? frozen.var[ch]! : q / m;
    [out.mean[ch], out.var[ch]] = [mean, variance];
    const inv = 1 / Math.sqrt(variance + 1e-3);
    let [sg, sgx] = [0, 0];
    const g = (i: number): number => {
      const z = gamma[ch]! * (x[i]! - mean) * inv + beta[ch]!;
      out.y[i] = Math.min(Math.max(z, 0), 6);
      return z > 0 && z < 6 ? dy[i]! : 0;
    };
    for (let b = 0; b < n; b++) for (let p = 0; p < hw; p++) {
      const i = at(b, ch, p);
      sg += g(i);
      sgx += g(i) * (x[i]! - mean) * inv;
    }
    [out.dbeta[ch], out.dgamma[ch]] = [sg, sgx];
    for (let b = 0; b < n; b++) for (let p = 0; p < hw; p++) {
      const i = at(b, ch, p);
      out.dx[i] = gamma[ch]! * inv * (frozen ? g(i) : g(i) - sg / m - (x[i]! - mean) * inv * sgx / m);
    }
  }
  return out;
}

/** The kernel is as close to float64 as oneDNN's primitives are (within 1e-5 relative, or 2× oneDNN's own error). */
function assertAsClose(a: Run, b: Run, ref: Run, keys: readonly (keyof Run)[]): void {
  for (const k of keys) {
    const [ea, eb] = [relL2(a[k], ref[k]), relL2(b[k], ref[k])];
    assert.ok(ea < Math.max(1e-5, 2 * eb), `${k}: kernel ${ea.toExponential(2)} from float64, oneDNN ${eb.toExponential(2)}`);
  }
}

function data(dims: number[], seed: number): { x: Float32Array; dy: Float32Array; gamma: Float32Array; beta: Float32Array } {
  const rng = new Rng(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  const c = dims[1]!;
  // Per-channel offsets well away from 0 (against a naive E[x²] - E[x]²), β spread so the clip cuts at both ends.
  const offset = Float32Array.from({ length: c }, () => 50 * rng.normal());
  const hw = n / dims[0]! / c;
  return {
    x: Float32Array.from({ length: n }, (_, i) => offset[Math.floor(i / hw) % c]! + 2 * rng.normal()),
    dy: Float32Array.from({ length: n }, () => rng.normal()),
    gamma: Float32Array.from({ length: c }, () => 1 + 0.5 * rng.normal()),
    beta: Float32Array.from({ length: c }, () => 3 * rng.normal()),
  };
}

describe('native BN + clip kernel (ReLU6)', () => {
  for (const dims of [[8, 64, 1, 1], [4, 12, 7, 7], [16, 40, 10, 10], [3, 24, 33, 33]]) {
    it(`as close to float64 as oneDNN's BN + eltwise relu6 at ${dims.join('×')}: statistics, output, every gradient`, () => {
      const d = data(dims, dims[1]!);
      const a = bnRelu6('clip', dims, d.x, d.dy, d.gamma, d.beta);
      const b = bnRelu6('onednn', dims, d.x, d.dy, d.gamma, d.beta);
      assertAsClose(a, b, reference(dims, d.x, d.dy, d.gamma, d.beta), ['mean', 'var', 'y', 'dx', 'dgamma', 'dbeta']);
      const clipped = a.y.filter((v) => v === 0 || v === 6).length / a.y.length;
      assert.ok(clipped > 0.2 && clipped < 0.8, `the clip cuts ${clipped}`);
    });
  }

  it('frozen statistics: normalizes with the given mean and variance, leaves them, and the gradient treats them as constants', () => {
    const dims = [6, 20, 5, 5];
    const d = data(dims, 9);
    const frozen = { mean: Float32Array.from({ length: 20 }, (_, c) => 10 * Math.sin(c)), var: Float32Array.from({ length: 20 }, (_, c) => 1 + c) };
    const a = bnRelu6('clip', dims, d.x, d.dy, d.gamma, d.beta, frozen);
    const b = bnRelu6('onednn', dims, d.x, d.dy, d.gamma, d.beta, frozen);
    assert.deepEqual([a.mean, a.var], [frozen.mean, frozen.var]);
    assertAsClose(a, b, reference(dims, d.x, d.dy, d.gamma, d.beta, frozen), ['y', 'dx', 'dgamma', 'dbeta']);
  });

  it('a NaN input comes out NaN (the divergence check sees it), not clipped to a number', () => {
    const dims = [2, 8, 2, 2];
    const d = data(dims, 4);
    const frozen = { mean: new Float32Array(8), var: new Float32Array(8).fill(1) };
    d.x[5] = Number.NaN;
    const a = bnRelu6('clip', dims, d.x, d.dy, d.gamma, d.beta, frozen);
    assert.ok(Number.isNaN(a.y[5]!) && a.y.filter(Number.isNaN).length === 1);
  });

  it('the training plan runs every BN → ReLU6 in the kernel (blocked layouts): no eltwise op is left', () => {
    const g = mobilenetV2('imagenet', { alpha: 0.35, resolution: 32, numClasses: 10 });
    const spec = buildTrainProgram(g, 2, { get: () => new Float32Array(1) }, 'nChw8c', false);
    const ops = spec.segments.flat();
    assert.equal(ops.filter((o) => o.op === 'eltwise' || o.op === 'eltwise_bwd').length, 0);
    assert.equal(ops.filter((o) => o.op === 'bn' && o.clip === 6).length, 35);
    const nhwc = buildTrainProgram(g, 2, { get: () => new Float32Array(1) }, 'nhwc', false).segments.flat();
    assert.equal(nhwc.filter((o) => o.op === 'eltwise').length, 35, 'channels-last keeps oneDNN\'s eltwise');
  });
});
