/** The architecture as data: Table 2 / torchvision / the seed, counted and named. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mobilenetV2, makeDivisible } from '../src/model/mobilenetv2.js';
import { makeConfig } from '../src/model/config.js';
import { summarize } from '../src/model/summary.js';
import { initWeights } from '../src/model/weights.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { fixturePath } from './helpers/fixtures.js';

// TF-slim checkpoint table (facts file §1.4): MACs in millions, truncated to integers.
const SLIM_MACS: Record<string, number> = {
  '1.4_224': 582, '1.3_224': 509, '1.0_224': 300, '1.0_192': 221, '1.0_160': 154, '1.0_128': 99, '1.0_96': 56,
  '0.75_224': 209, '0.75_192': 153, '0.75_160': 107, '0.75_128': 69, '0.75_96': 39,
  '0.5_224': 97, '0.5_192': 71, '0.5_160': 50, '0.5_128': 32, '0.5_96': 18,
  '0.35_224': 59, '0.35_192': 43, '0.35_160': 30, '0.35_128': 20, '0.35_96': 11,
};
const PARAMS: [number, number][] = [[0.35, 1_677_128], [0.5, 1_968_680], [0.75, 2_636_424], [1, 3_504_872], [1.3, 5_386_792], [1.4, 6_108_776]];

describe('summary numbers', () => {
  it('alpha 1.0 @ 224, 1000 classes: 3,504,872 params, 300,774,272 MACs', () => {
    const s = summarize(mobilenetV2('imagenet'));
    assert.equal(s.totals.params, 3_504_872);
    assert.equal(s.totals.macs, 300_774_272);
    assert.equal(s.rows.filter((r) => r.operator === 'bottleneck').length, 17);
  });
  it('the seed CIFAR model: 2,296,922 params, 91,154,944 MACs', () => {
    const s = summarize(mobilenetV2('seed-cifar'));
    assert.equal(s.totals.params, 2_296_922);
    assert.equal(s.totals.macs, 91_154_944);
  });
  for (const [alpha, params] of PARAMS) {
    it(`alpha ${alpha}: ${params} params`, () => assert.equal(summarize(mobilenetV2('imagenet', { alpha })).totals.params, params));
  }
  it('all 22 alpha x resolution MACs match the TF-slim table (in millions, truncated)', () => {
    assert.equal(Object.keys(SLIM_MACS).length, 22);
    for (const [key, macs] of Object.entries(SLIM_MACS)) {
      const [a, r] = key.split('_').map(Number) as [number, number];
      const got = summarize(mobilenetV2('imagenet', { alpha: a, resolution: r })).totals.macs;
      assert.equal(Math.floor(got / 1e6), macs, `${key}: ${got}`);
    }
  });
  it('rows chain shapes and add up to the totals', () => {
    const s = summarize(mobilenetV2('imagenet', { alpha: 0.75, resolution: 160 }));
    for (let i = 1; i < s.rows.length; i++) assert.deepEqual(s.rows[i]!.input, s.rows[i - 1]!.output);
    assert.equal(s.rows.reduce((a, r) => a + r.params, 0), s.totals.params);
    assert.equal(s.rows.reduce((a, r) => a + r.macs, 0), s.totals.macs);
    assert.deepEqual(s.rows.at(-3)!.output, [1280, 5, 5]);
  });
});

describe('structure', () => {
  it('_make_divisible as torchvision', () => {
    assert.deepEqual([makeDivisible(32 * 0.35), makeDivisible(16 * 0.35), makeDivisible(24 * 0.35), makeDivisible(1280 * 1.4), makeDivisible(1280 * 1.3)], [16, 8, 8, 1792, 1664]);
  });
  it('parameter and buffer names are exactly the PyTorch state-dict keys (torchvision and seed)', () => {
    for (const [file, g] of [['tv-0.35-96.weights.safetensors', mobilenetV2('imagenet', { alpha: 0.35, resolution: 96 })], ['seed-cifar.weights.safetensors', mobilenetV2('seed-cifar')]] as const) {
      const keys = [...readSafetensors(fixturePath(file)).tensors.keys()].sort();
      const ours = [...g.params, ...g.buffers].map((t) => t.name).sort();
      assert.deepEqual(ours, keys);
      const shapes = new Map([...readSafetensors(fixturePath(file)).tensors].map(([k, t]) => [k, t.shape.join()]));
      for (const p of g.params) assert.equal(p.shape.join(), shapes.get(p.name), p.name);
    }
  });
  it('torchvision rules: no expand conv for t = 1, residual iff stride 1 and in == out, ReLU6', () => {
    const g = mobilenetV2('imagenet');
    assert.ok(!g.nodes.some((n) => n.name.startsWith('features.1.conv.0.0') && n.op === 'conv' && n.k === 1));
    const adds = g.nodes.filter((n) => n.op === 'add').map((n) => n.name.split('.')[1]);
    assert.deepEqual(adds, ['3', '5', '6', '8', '9', '10', '12', '13', '15', '16']);
    assert.ok(g.nodes.filter((n) => n.op === 'act').every((n) => n.op === 'act' && n.kind === 'relu6'));
  });
  it('seed rules: expand conv for t = 1, projection shortcuts in blocks 0, 1, 10, 16, plain ReLU, no dropout', () => {
    const g = mobilenetV2('seed-cifar');
    assert.ok(g.params.some((p) => p.name === 'layers.0.conv1.weight'));
    const sc = g.params.filter((p) => p.name.endsWith('shortcut.0.weight')).map((p) => p.name.split('.')[1]);
    assert.deepEqual(sc, ['0', '1', '10', '16']);
    assert.ok(g.nodes.every((n) => n.op !== 'dropout' && (n.op !== 'act' || n.kind === 'relu')));
  });
  it('ablation switches: linear bottleneck off adds an activation after each project BN; residual off drops the adds', () => {
    const base = mobilenetV2('imagenet').nodes.filter((n) => n.op === 'act').length;
    assert.equal(mobilenetV2('imagenet', { linearBottleneck: false }).nodes.filter((n) => n.op === 'act').length, base + 17);
    assert.equal(mobilenetV2('imagenet', { shortcut: 'none' }).nodes.filter((n) => n.op === 'add').length, 0);
    assert.equal(mobilenetV2('imagenet', { activation: 'relu' }).nodes.filter((n) => n.op === 'act' && n.kind === 'relu').length, base);
  });
  it('keras padding: stride-2 convs pad (0, 1); stride 1 symmetric', () => {
    const g = mobilenetV2('imagenet', { padding: 'keras' });
    for (const n of g.nodes) if (n.op === 'conv' && n.k === 3) assert.deepEqual(n.pads, n.stride === 2 ? [0, 0, 1, 1] : [1, 1, 1, 1], n.name);
  });
  it('invalid configs are rejected with the field named', () => {
    assert.throws(() => makeConfig('imagenet', { resolution: 100 }), /multiple of 32/);
    assert.throws(() => makeConfig('imagenet', { alpha: -1 }), /alpha must be a positive number/);
    assert.throws(() => makeConfig('seed-cifar', { resolution: 64 }), /seed-cifar resolution must be 32/);
    assert.throws(() => makeConfig('nope' as never), /unknown arch/);
  });
});

describe('initialization', () => {
  it('same seed, same weights; different seed, different weights; torchvision statistics', () => {
    const g = mobilenetV2('imagenet', { alpha: 0.5, resolution: 96 });
    const a = initWeights(g, 7);
    const b = initWeights(g, 7);
    const c = initWeights(g, 8);
    for (const [k, v] of a) assert.deepEqual(v, b.get(k));
    assert.notDeepEqual(a.get('features.0.0.weight'), c.get('features.0.0.weight'));
    // kaiming normal, fan_out: std = sqrt(2 / (out * kh * kw)); the final 1x1 conv has 1280 outputs.
    const w = a.get('features.18.0.weight')!;
    const std = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
    assert.ok(Math.abs(std - Math.sqrt(2 / 1280)) / Math.sqrt(2 / 1280) < 0.02, `std ${std}`);
    const fc = a.get('classifier.1.weight')!;
    const fcStd = Math.sqrt(fc.reduce((s, v) => s + v * v, 0) / fc.length);
    assert.ok(Math.abs(fcStd - 0.01) < 0.0005, `linear std ${fcStd}`);
    assert.ok(a.get('features.0.1.weight')!.every((v) => v === 1));
    assert.ok(a.get('features.0.1.bias')!.every((v) => v === 0));
    assert.ok(a.get('features.0.1.running_var')!.every((v) => v === 1));
  });
});
