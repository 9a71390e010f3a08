import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import onnxProto from 'onnx-proto';
import { foldBatchNorm } from '../src/model/fold.js';
import { exportOnnx, readOnnxConfig } from '../src/engine/onnx/export.js';
import { OrtModel } from '../src/engine/onnx/session.js';
import { readSafetensors, toFloat32 } from '../src/io/safetensors.js';
import { GraphBuilder } from '../src/model/builder.js';
import { makeConfig, type ModelConfig } from '../src/model/config.js';
import { numel } from '../src/model/graph.js';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { initWeights, type StateDict } from '../src/model/weights.js';
import { referenceForward } from './helpers/reference-forward.js';
import { randomInput, randomWeights } from './helpers/random-model.js';

const { onnx } = onnxProto;
const FIXTURES = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** max |a - b| / max |b|. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d / maxAbs(b);
}

interface Case {
  label: string;
  arch: 'seed-cifar' | 'imagenet';
  overrides: Partial<ModelConfig>;
}
const CASES: Case[] = [
  { label: 'seed-cifar', arch: 'seed-cifar', overrides: {} },
  { label: 'imagenet α 0.35 @ 96', arch: 'imagenet', overrides: { alpha: 0.35, resolution: 96 } },
];

describe('foldBatchNorm', () => {
  it('folds every conv+bn, fuses activations and drops dropout', () => {
    const g = mobilenetV2('imagenet', { alpha: 0.35, resolution: 96 });
    const fg = foldBatchNorm(g, randomWeights(g, 3));
    const convs = g.nodes.filter((n) => n.op === 'conv').length;
    assert.equal(fg.nodes.filter((n) => n.op === 'conv').length, convs);
    assert.equal(fg.nodes.filter((n) => n.op === 'act').length, 0);
    assert.ok(fg.nodes.every((n) => n.op !== 'conv' || n.bnName !== null));
    assert.equal(fg.nodes.filter((n) => n.op === 'conv' && n.act === 'relu6').length, g.nodes.filter((n) => n.op === 'act').length);
    assert.equal(fg.output, 'classifier.1');
    assert.deepEqual(fg.outputShape, [1000]);
  });

  it('computes w·γ/√(var+eps) and β − mean·γ/√(var+eps), including a conv bias', () => {
    const b = new GraphBuilder(makeConfig('seed-cifar'));
    b.bn('bn', b.conv('conv', b.g.input, 2, 1, 1, 1, true));
    const w: StateDict = new Map([
      ['conv.weight', Float32Array.from([1, 2, 3, -1, -2, -3])],
      ['conv.bias', Float32Array.from([0.5, -0.25])],
      ['bn.weight', Float32Array.from([2, 0.5])],
      ['bn.bias', Float32Array.from([1, -1])],
      ['bn.running_mean', Float32Array.from([0.1, 0.2])],
      ['bn.running_var', Float32Array.from([3, 0.25])],
    ]);
    const [c] = foldBatchNorm(b.g, w).nodes;
    assert.ok(c && c.op === 'conv');
    const s = [2 / Math.sqrt(3 + 1e-5), 0.5 / Math.sqrt(0.25 + 1e-5)];
    const close = (a: number, e: number): void => assert.ok(Math.abs(a - e) <= 1e-6 * Math.max(1, Math.abs(e)), `${a} vs ${e}`);
    [1, 2, 3].forEach((v, i) => close(c.weight[i]!, v * s[0]!));
    [-1, -2, -3].forEach((v, i) => close(c.weight[3 + i]!, v * s[1]!));
    close(c.bias[0]!, 1 - 0.1 * s[0]! + 0.5 * s[0]!);
    close(c.bias[1]!, -1 - 0.2 * s[1]! - 0.25 * s[1]!);
    assert.deepEqual([...w.get('conv.weight')!], [1, 2, 3, -1, -2, -3], 'input weights are not modified');
  });

  it('rejects a batch norm that does not follow a conv', () => {
    const b = new GraphBuilder(makeConfig('seed-cifar'));
    b.bn('bn', b.act('relu', b.conv('conv', b.g.input, 4, 3, 1)));
    const w = initWeights(b.g, 0);
    assert.throws(() => foldBatchNorm(b.g, w), /batch norm bn does not directly follow a conv/);
  });
});

describe('exportOnnx structure', () => {
  for (const c of CASES) {
    it(`${c.label}: decodes with onnx-proto; opset 17, dynamic batch, names, metadata`, () => {
      const g = mobilenetV2(c.arch, c.overrides);
      const bytes = exportOnnx(g, randomWeights(g, 1), { producer: 'unit-test' });
      const m = onnx.ModelProto.decode(bytes);
      assert.equal(Number(m.irVersion), 8);
      assert.equal(m.producerName, 'unit-test');
      assert.deepEqual(m.opsetImport.map((o) => [o.domain, Number(o.version)]), [['', 17]]);
      const gr = m.graph as onnxProto.onnx.GraphProto;
      assert.equal(gr.input.length, 1);
      assert.equal(gr.output.length, 1);
      const dims = (vi: onnxProto.onnx.IValueInfoProto): (string | number)[] =>
        vi.type!.tensorType!.shape!.dim!.map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue)));
      assert.equal(gr.input[0]!.name, 'input');
      assert.equal(gr.input[0]!.type!.tensorType!.elemType, onnx.TensorProto.DataType.FLOAT);
      assert.deepEqual(dims(gr.input[0]!), ['batch', 3, g.config.resolution, g.config.resolution]);
      assert.equal(gr.output[0]!.name, 'logits');
      assert.equal(gr.output[0]!.type!.tensorType!.elemType, onnx.TensorProto.DataType.FLOAT);
      assert.deepEqual(dims(gr.output[0]!), ['batch', g.config.numClasses]);

      const ops = gr.node.map((n) => n.opType);
      assert.equal(ops.filter((o) => o === 'Conv').length, g.nodes.filter((n) => n.op === 'conv').length);
      assert.ok(!ops.includes('BatchNormalization') && !ops.includes('Dropout'));
      assert.equal(ops.filter((o) => o === 'Add').length, g.nodes.filter((n) => n.op === 'add').length);
      const actOp = g.config.activation === 'relu6' ? 'Clip' : 'Relu';
      assert.equal(ops.filter((o) => o === actOp).length, g.nodes.filter((n) => n.op === 'act').length);
      assert.deepEqual(ops.slice(-3), ['GlobalAveragePool', 'Flatten', 'Gemm']);
      // Node names come from the graph; ONNX pads order [top, left, bottom, right] = ours.
      const stem = g.nodes[0]!;
      assert.ok(stem.op === 'conv');
      const stemNode = gr.node[0]!;
      assert.equal(stemNode.name, stem.name);
      assert.deepEqual(stemNode.attribute!.find((a) => a.name === 'pads')!.ints!.map(Number), [...stem.pads]);
      assert.equal(new Set(gr.node.map((n) => n.name)).size, gr.node.length, 'unique node names');

      for (const t of gr.initializer) {
        assert.equal(t.dataType, onnx.TensorProto.DataType.FLOAT);
        assert.equal(t.rawData!.length, 4 * t.dims!.reduce<number>((a, d) => a * Number(d), 1), t.name ?? '');
      }
      const meta = Object.fromEntries(m.metadataProps.map((p) => [p.key, p.value]));
      assert.equal(meta['mnv2.format_version'], '1');
      assert.deepEqual(JSON.parse(meta['mnv2.config']!), g.config);
      assert.deepEqual(readOnnxConfig(bytes, 'x.onnx'), g.config);
    });
  }

  it('readOnnxConfig: clear errors', () => {
    assert.throws(() => readOnnxConfig(new TextEncoder().encode('definitely not protobuf'), 'junk.onnx'), /^Error: junk\.onnx: not an ONNX model/);
    assert.throws(() => readOnnxConfig(new Uint8Array(0), 'empty.onnx'), /empty\.onnx: not an ONNX model/);
    const g = mobilenetV2('seed-cifar');
    const m = onnx.ModelProto.decode(exportOnnx(g, initWeights(g, 0)));
    m.metadataProps = [];
    assert.throws(() => readOnnxConfig(onnx.ModelProto.encode(m).finish(), 'bare.onnx'), /bare\.onnx: no mnv2\.config metadata/);
  });

});

describe('ONNX Runtime vs float64 reference (unfolded graph)', () => {
  for (const c of CASES) {
    it(`${c.label}: batch 2 and 3 logits within 1e-4·max|logit|`, async () => {
      const g = mobilenetV2(c.arch, c.overrides);
      const w = randomWeights(g, 7);
      const x = randomInput(g, 3, 11);
      const ref = referenceForward(g, w, x, 3);
      const model = await OrtModel.create(exportOnnx(g, w), { threads: 2 });
      try {
        assert.deepEqual(model.inputShape, g.inputShape);
        assert.equal(model.numClasses, g.config.numClasses);
        const k = g.config.numClasses;
        const y3 = await model.run(x, 3);
        const y2 = await model.run(x.subarray(0, 2 * numel(g.inputShape)), 2);
        const e3 = relErr(y3, ref);
        const e2 = relErr(y2, ref.subarray(0, 2 * k));
        assert.ok(maxAbs(ref) > 1e-3, `logits are not degenerate (max ${maxAbs(ref)})`);
        assert.ok(e3 <= 1e-4, `batch 3 rel err ${e3}`);
        assert.ok(e2 <= 1e-4, `batch 2 rel err ${e2}`);
        await assert.rejects(model.run(x, 2), /input has \d+ values, expected batch·C·H·W = 2·3·/);
      } finally {
        await model.release();
      }
    });
  }
});

describe('OrtModel', () => {
  it('loads from a file path; rejects a bad file with its path in the message', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mnv2-onnx-'));
    try {
      const g = mobilenetV2('imagenet', { alpha: 0.35, resolution: 96, numClasses: 7 });
      const path = join(dir, 'm.onnx');
      writeFileSync(path, exportOnnx(g, randomWeights(g, 2)));
      const m = await OrtModel.create(path, { threads: 1 });
      try {
        assert.deepEqual(m.inputShape, [3, 96, 96]);
        assert.equal(m.numClasses, 7);
        const y = await m.run(randomInput(g, 1, 1), 1);
        assert.equal(y.length, 7);
        assert.ok(y.every(Number.isFinite));
      } finally {
        await m.release();
      }
      await assert.rejects(m.run(randomInput(g, 1, 1), 1), /after release/);
      const bad = join(dir, 'bad.onnx');
      writeFileSync(bad, 'not a model');
      await assert.rejects(OrtModel.create(bad), (e: Error) => e.message.startsWith(`${bad}: `));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('float16 export', () => {
  for (const c of CASES) {
    it(`${c.label}: runs in ORT, agrees with fp32 within 2e-2·max|logit|, about half the size`, async () => {
      const g = mobilenetV2(c.arch, c.overrides);
      const w = randomWeights(g, 5);
      const b32 = exportOnnx(g, w);
      const b16 = exportOnnx(g, w, { fp16: true });
      const ratio = b16.length / b32.length;
      assert.ok(ratio > 0.48 && ratio < 0.53, `size ratio ${ratio}`);
      const m = onnx.ModelProto.decode(b16);
      const gr = m.graph as onnxProto.onnx.GraphProto;
      assert.equal(gr.input[0]!.type!.tensorType!.elemType, onnx.TensorProto.DataType.FLOAT);
      assert.equal(gr.output[0]!.type!.tensorType!.elemType, onnx.TensorProto.DataType.FLOAT);
      assert.equal(gr.node[0]!.opType, 'Cast');
      assert.equal(gr.node.at(-1)!.opType, 'Cast');
      assert.ok(gr.initializer.every((t) => t.dataType === onnx.TensorProto.DataType.FLOAT16));
      assert.deepEqual(readOnnxConfig(b16, 'fp16.onnx'), g.config);

      const x = randomInput(g, 4, 13);
      const m32 = await OrtModel.create(b32, { threads: 2 });
      const m16 = await OrtModel.create(b16, { threads: 2 });
      try {
        const y32 = await m32.run(x, 4);
        const y16 = await m16.run(x, 4);
        const e = relErr(y16, y32);
        assert.ok(e <= 2e-2, `fp16 vs fp32 rel err ${e}`);
      } finally {
        await m32.release();
        await m16.release();
      }
    });
  }
});

describe('PyTorch golden logits (test/fixtures)', () => {
  const golden: { tag: string; arch: 'seed-cifar' | 'imagenet'; overrides: Partial<ModelConfig> }[] = [
    { tag: 'seed-cifar', arch: 'seed-cifar', overrides: {} },
    { tag: 'tv-0.35-96', arch: 'imagenet', overrides: { alpha: 0.35, resolution: 96 } },
    { tag: 'tv-1.0-224', arch: 'imagenet', overrides: {} },
  ];
  for (const c of golden) {
    const wPath = `${FIXTURES}${c.tag}.weights.safetensors`;
    const ioPath = `${FIXTURES}${c.tag}.io.safetensors`;
    const missing = !existsSync(wPath) || !existsSync(ioPath);
    it(`${c.tag}: exported model in ORT matches PyTorch eval.logits within 1e-4·max|logit|`, { skip: missing && `fixtures for ${c.tag} not generated` }, async () => {
      const g = mobilenetV2(c.arch, c.overrides);
      const wf = readSafetensors(wPath);
      const sd: StateDict = new Map();
      for (const [name, t] of wf.tensors) sd.set(name, toFloat32(t, name, wPath));
      const io = readSafetensors(ioPath);
      const xi = io.tensors.get('eval.input');
      const li = io.tensors.get('eval.logits');
      assert.ok(xi && li, `${ioPath}: eval.input / eval.logits`);
      const x = toFloat32(xi, 'eval.input', ioPath);
      const logits = toFloat32(li, 'eval.logits', ioPath);
      const batch = xi.shape[0]!;
      assert.deepEqual(xi.shape.slice(1), [...g.inputShape]);
      assert.deepEqual(li.shape, [batch, g.config.numClasses]);

      const model = await OrtModel.create(exportOnnx(g, sd), { threads: 2 });
      try {
        const y = await model.run(x, batch);
        const e = relErr(y, logits);
        assert.ok(e <= 1e-4, `ORT vs PyTorch rel err ${e} (max|logit| ${maxAbs(logits)})`);
      } finally {
        await model.release();
      }
      if (c.tag === 'seed-cifar') {
        // The reference forward itself against PyTorch (float64 both): much tighter.
        const n = Math.min(batch, 2);
        const ref = referenceForward(g, sd, x.subarray(0, n * numel(g.inputShape)), n);
        const e = relErr(ref, logits.subarray(0, n * g.config.numClasses));
        assert.ok(e <= 1e-5, `reference vs PyTorch rel err ${e}`);
      }
    });
  }
});
