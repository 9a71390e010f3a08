/**
 * Quantization-aware training (src/quant/qat.ts, native/mnv2.cc fake_quant): the fake-quantization kernel and
 * its observer against PyTorch (tools/make-qat-fixtures.py), the weights' fake quantization against
 * torch.fake_quantize_per_channel_affine, the QAT model's export (the QDQ graph `mnv2 quantize` writes, fully
 * fused by ONNX Runtime, with the trained scales), and a short QAT fine-tune against post-training quantization.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { native, type ActFormat, type BufferSpec, type OpSpec } from '../src/engine/native/binding.js';
import { activationParams, quantizePerChannel } from '../src/quant/quantize.js';
import { get, loadFixture } from './helpers/fixtures.js';

const fx = loadFixture('qat.safetensors');
const t = (k: string): Float32Array => get(fx.tensors, k);

/** A program fake-quantizing a [2, 5, 3, 3] tensor held in a `layout` buffer: segment 0 forward, 1 backward. */
function fakeQuantProgram(actFormat: ActFormat, layout: 'act' | 'plain') {
  const dims = [2, 5, 3, 3];
  const n = 90;
  const x = new Float32Array(new ArrayBuffer(n * 4));
  const y = new Float32Array(new ArrayBuffer(n * 4));
  const g = new Float32Array(new ArrayBuffer(n * 4));
  const dx = new Float32Array(new ArrayBuffer(n * 4));
  const state = new Float32Array(new ArrayBuffer(20));
  state.set([Infinity, -Infinity, 0.01, 0, 0]);
  const buffers: BufferSpec[] = [
    { layout: 'plain', dims, data: x }, { layout: 'plain', dims, data: y }, { layout: 'plain', dims, data: g }, { layout: 'plain', dims, data: dx },
    { layout: 'plain', dims: [5], data: state }, { layout: 'ws' }, { layout, dims }, { layout, dims },
  ];
  const fwd: OpSpec[] = [
    { op: 'reorder', src: 0, dst: 6 },
    { op: 'fake_quant', src: 6, dst: 6, ws: 5, state: 4, qmin: 0, qmax: 255 },
    { op: 'reorder', src: 6, dst: 1 },
  ];
  const bwd: OpSpec[] = [{ op: 'reorder', src: 2, dst: 6 }, { op: 'fake_quant_bwd', diff_dst: 6, diff_src: 7, ws: 5 }, { op: 'reorder', src: 7, dst: 3 }];
  const prog = new (native().Program)({ actFormat, buffers, segments: [fwd, bwd] });
  return { prog, x, y, g, dx, state };
}

describe('fake quantization against PyTorch', () => {
  for (const [fmt, layout] of [['nChw8c', 'act'], ['nhwc', 'act'], ['nchw', 'plain']] as const) {
    it(`observer, forward and straight-through backward equal torch's (${layout} ${fmt}${fmt === 'nChw8c' ? ': 5 channels, 3 of padding' : ''})`, () => {
      const p = fakeQuantProgram(fmt, layout);
      for (let i = 0; i < 3; i++) {
        p.x.set(t(`act.x${i}`));
        p.prog.run(0);
        // MovingAverageMinMaxObserver's min_val / max_val after each batch, to the bit.
        assert.equal(p.state[0], t('act.min')[i], `min after batch ${i}`);
        assert.equal(p.state[1], t('act.max')[i], `max after batch ${i}`);
      }
      // The parameters are activationParams' (what the QDQ export writes), which equal torch's calculate_qparams here.
      const { scale, zeroPoint } = activationParams(Math.min(0, p.state[0]!), Math.max(0, p.state[1]!));
      assert.deepEqual([p.state[3], p.state[4]], [scale, zeroPoint]);
      assert.deepEqual([scale, zeroPoint], [t('act.scale')[0], t('act.zero_point')[0]]);
      assert.deepEqual([scale, zeroPoint], [t('act.torch_scale')[0], t('act.torch_zero_point')[0]]);
      assert.deepEqual(p.y, t('act.y'));
      p.g.set(t('act.grad'));
      p.prog.run(1);
      assert.deepEqual(p.dx, t('act.dx'));
      assert.equal(p.dx.filter((v) => v === 0).length, Number(fx.metadata.clipped), 'gradient zeroed where the input was clipped');
      assert.equal(Number(fx.metadata.clipped), 3);
      p.prog.release();
    });
  }

  it('refuses a backward without its forward and a state of the wrong size, naming them', () => {
    const { Program } = native();
    const dims = [1, 8, 2, 2];
    assert.throws(() => new Program({ actFormat: 'nChw8c', buffers: [{ layout: 'act', dims }, { layout: 'act', dims }, { layout: 'ws' }], segments: [[{ op: 'fake_quant_bwd', diff_dst: 0, diff_src: 1, ws: 2 }]] }),
      /fake_quant_bwd needs the workspace of a fake_quant/);
    assert.throws(() => new Program({ actFormat: 'nChw8c', buffers: [{ layout: 'act', dims }, { layout: 'plain', dims: [4] }, { layout: 'ws' }], segments: [[{ op: 'fake_quant', src: 0, dst: 0, ws: 2, state: 1, qmin: 0, qmax: 255 }]] }),
      /fake quantization state .* has dims \[4\], expected \[5\]/);
  });

  it("weights: the export's per-channel int8 (7-bit) equals torch.fake_quantize_per_channel_affine", () => {
    const { q, scale } = quantizePerChannel(t('w'), [6, 3, 3, 3], 0, 63);
    assert.deepEqual(scale, t('w.scale'));
    assert.deepEqual(Float32Array.from(q, (v, i) => v * scale[Math.floor(i / 27)]!), t('w.fq'));
  });
});
