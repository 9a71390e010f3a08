/** bench/onednn-verbose.ts: oneDNN 2.6's verbose lines (copied from a real ONEDNN_VERBOSE=1 training step) → op classes and per-step times. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { opClass, parseVerbose, perStep } from '../bench/onednn-verbose.js';

const LINES = [
  'onednn_verbose,info,oneDNN v2.6.3 (commit N/A)',
  'onednn_verbose,exec,cpu,reorder,jit:uni,undef,src_f32::blocked:abcd:f0 dst_f32::blocked:Acdb8a:f0,,,32x3x3x3,0.25',
  'onednn_verbose,exec,cpu,convolution,jit:avx2,forward_training,src_f32::blocked:abcd:f0 wei_f32::blocked:Acdb8a:f0 bia_undef::undef::f0 dst_f32::blocked:aBcd8b:f0,,alg:convolution_direct,mb8_ic3oc32_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1,1.5',
  'onednn_verbose,exec,cpu,batch_normalization,bnorm_jit:avx2,forward_training,data_f32::blocked:aBcd8b:f0 diff_undef::undef::f0,,flags:CHR,mb8ic32ih32iw32,6',
  'onednn_verbose,exec,cpu,convolution,jit_1x1:avx2,backward_weights,src_f32::blocked:aBcd8b:f0 wei_f32::blocked:ABcd8b8a:f0 bia_undef::undef::f0 dst_f32::blocked:aBcd8b:f0,,alg:convolution_direct,mb8_ic320oc1280_ih4oh4kh1sh1dh0ph0_iw4ow4kw1sw1dw0pw0,4',
  'onednn_verbose,exec,cpu,convolution,jit_dw:avx2,backward_data,src_f32::blocked:aBcd8b:f0 wei_f32::blocked:Abcde8a:f0 bia_undef::undef::f0 dst_f32::blocked:aBcd8b:f0,,alg:convolution_direct,g960mb8_ic960oc960_ih4oh4kh3sh1dh0ph1_iw4ow4kw3sw1dw0pw1,0.5',
  'onednn_verbose,exec,cpu,batch_normalization,bnorm_jit:avx2,backward,data_f32::blocked:aBcd8b:f0 diff_f32::blocked:aBcd8b:f0,,flags:CH,mb8ic320ih4iw4,0.75',
  'onednn_verbose,exec,cpu,binary,jit:uni,undef,src_f32::blocked:aBcd8b:f0 src_f32::blocked:aBcd8b:f0 dst_f32::blocked:aBcd8b:f0,,alg:binary_add,8x16x32x32:8x16x32x32,0.125',
  'onednn_verbose,exec,cpu,reorder,jit:blk,undef,src_f32::blocked:Abcde8a:f0 dst_f32::blocked:abcde:f0,,,960x1x1x3x3,0.0625',
  'onednn_verbose,exec,cpu,pooling_v2,jit:avx2,backward_data,src_f32::blocked:aBcd8b:f0 dst_f32::blocked:aBcd8b:f0 ws_undef::undef::f0,,alg:pooling_avg_exclude_padding,mb8ic1280_ih4oh1kh4sh4dh0ph0_iw4ow1kw4sw4dw0pw0,0.5',
  'onednn_verbose,exec,cpu,reorder,jit:uni,undef,src_f32::blocked:abcd:f0 dst_f32::blocked:aBcd8b:f0,,,8x3x32x32,0.5',
];

describe('oneDNN verbose log', () => {
  it('classifies each primitive by kind, kernel size, pass, fused ReLU and reorder direction', () => {
    const e = parseVerbose(LINES.join('\n'));
    assert.equal(e.length, 10); // the info line is not an execution
    assert.deepEqual(e.map(opClass), [
      'reorder weights → blocked',
      'conv full 3×3 · fwd',
      'BN+ReLU · fwd',
      'conv 1×1 · bwd weights',
      'conv depthwise · bwd data',
      'BN · bwd',
      'binary add (residual adds, gradient sums)',
      'reorder weights → plain',
      'pooling · bwd data',
      'reorder activations → blocked',
    ]);
    assert.equal(e[2]!.ms, 6);
  });

  it('sums the timed steps per class and drops the warm-up steps', () => {
    const step = (scale: number): string[] => LINES.slice(1, 4).map((l) => l.replace(/,[\d.]+$/, (m) => `,${Number(m.slice(1)) * scale}`));
    // Three identical steps; the first (warm-up) 100x slower: it must not count.
    const rows = perStep(parseVerbose([...step(100), ...step(1), ...step(3)].join('\n')), 3, 2);
    assert.deepEqual(rows.map((r) => [r.op, r.calls, r.ms]), [
      ['BN+ReLU · fwd', 1, 12], ['conv full 3×3 · fwd', 1, 3], ['reorder weights → blocked', 1, 0.5],
    ]);
    assert.throws(() => perStep(parseVerbose(LINES.slice(1, 5).join('\n')), 3, 2), /do not split into 3 equal steps/);
    assert.throws(() => parseVerbose('onednn_verbose,exec,cpu,reorder,jit:uni,undef,x,,,32,abc'), /no time/);
  });
});
