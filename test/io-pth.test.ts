/** The .pth reader against fixtures written by torch 1.13 (tools/make-pth-fixtures.py). */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { readPth } from '../src/io/pth.js';
import { toFloat32 } from '../src/io/safetensors.js';
import { loadWeights } from '../src/io/weights.js';
import { createClassifier } from '../src/engine/classifier.js';
import { fixturePath, get, loadFixture, maxAbs, maxAbsDiff } from './helpers/fixtures.js';

const pth = (name: string) => fixturePath(path.join('pth', name));
const expected = JSON.parse(readFileSync(pth('expected.json'), 'utf8')) as {
  dtypes: Record<string, { dtype: string; shape: number[]; values: number[] }>;
  views: Record<string, { dtype: string; shape: number[]; values: number[] }>;
  marker: string;
};
const DTYPE: Record<string, string> = {
  float32: 'F32', float16: 'F16', float64: 'F64', int64: 'I64', int32: 'I32', int16: 'I16', int8: 'I8', uint8: 'U8', bool: 'BOOL', bfloat16: 'BF16',
};

function checkAll(file: string, want: typeof expected.dtypes): void {
  const got = readPth(file);
  assert.deepEqual([...got.tensors.keys()], Object.keys(want), 'keys in saved order');
  for (const [name, w] of Object.entries(want)) {
    const t = got.tensors.get(name)!;
    assert.equal(t.dtype, DTYPE[w.dtype], `${name} dtype`);
    assert.deepEqual(t.shape, w.shape, `${name} shape`);
    const v = [...toFloat32(t, name, file)];
    // float64 values compare after the float32 conversion toFloat32 makes; int64 2^40 is exact in float32
    assert.deepEqual(v, w.values.map((x) => Math.fround(x)), `${name} values`);
  }
}

test('zip .pth: every dtype, a 0-d tensor, a Parameter, an empty tensor, two views of one storage', () => {
  checkAll(pth('dtypes.pth'), expected.dtypes);
});

test('legacy (pre-1.6) .pth: the same state dict', () => {
  checkAll(pth('dtypes-legacy.pth'), expected.dtypes);
});

test('non-contiguous views (transpose, strided slice, stride-0 expand) come out contiguous', () => {
  checkAll(pth('views.pth'), expected.views);
});

test('a pickle naming os.system / builtins.eval / an arbitrary class is refused, naming the file and the global, and runs nothing', () => {
  rmSync(expected.marker, { force: true });
  for (const [file, global] of [['evil-system.pth', 'posix.system'], ['evil-eval.pth', '__builtin__.eval'], ['evil-class.pth', '__main__.Plain']] as const) {
    assert.throws(() => readPth(pth(file)), (e: Error) => {
      assert.ok(e.message.startsWith(`${pth(file)}: refusing to load`), e.message);
      assert.ok(e.message.includes(`'${global}'`), e.message);
      return true;
    });
    assert.throws(() => loadWeights(pth(file)), /refusing to load/);
  }
  assert.equal(existsSync(expected.marker), false, 'the fixture command ran');
});

test('a truncated or corrupt .pth is a clear error', () => {
  assert.throws(() => readPth(pth('truncated.pth')), new RegExp(`${pth('truncated.pth').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not a readable zip archive`));
  const dir = mkdtempSync(path.join(tmpdir(), 'mnv2-pth-'));
  try {
    const legacy = readFileSync(pth('dtypes-legacy.pth'));
    const cut = path.join(dir, 'cut-legacy.pth');
    writeFileSync(cut, legacy.subarray(0, legacy.length - 10));
    assert.throws(() => readPth(cut), /truncated: storage \S+ (needs \d+ bytes|starts at byte)/);
    const midPickle = path.join(dir, 'mid-pickle.pth');
    writeFileSync(midPickle, legacy.subarray(0, 300));
    assert.throws(() => readPth(midPickle), /pickle at byte \d+: truncated/);
    // A corrupt zip64 entry count (found by `npm run fuzz`): fflate alone walked 2.5e9 entries for minutes.
    const zip = Buffer.from(readFileSync(pth('dtypes.pth')));
    const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    const z64 = zip.readUInt32LE(eocd - 12);
    zip.writeUInt32LE(2526451350, z64 + 32);
    const huge = path.join(dir, 'huge-count.pth');
    writeFileSync(huge, zip);
    assert.throws(() => readPth(huge), /huge-count\.pth: not a readable zip archive \(truncated or corrupt: its central directory lists 2526451350 entries at offset \d+, more than the \d+-byte file holds\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--weights x.pth: a torchvision state dict loads through loadWeights and runs to PyTorch\'s logits', async () => {
  const m = loadWeights(pth('tiny-mnv2.pth'), { resolution: 96 });
  const c = m.graph.config;
  assert.deepEqual([c.arch, c.alpha, c.numClasses], ['imagenet', 0.35, 10]);
  const io = loadFixture(path.join('pth', 'tiny-mnv2.io.safetensors')).tensors;
  const want = get(io, 'logits');
  const clf = await createClassifier(m.graph, m.weights, 'native');
  const got = await clf.run(get(io, 'input'), 1);
  await clf.release();
  const err = maxAbsDiff(got, want);
  assert.ok(err <= 1e-4 * maxAbs(want), `max |diff| ${err} vs max |logit| ${maxAbs(want)}`);
});

test('formats that need an import step are named with their command', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mnv2-fmt-'));
  try {
    const h5 = path.join(dir, 'w.h5');
    writeFileSync(h5, Buffer.from('\x89HDF\r\n\x1a\n0000000000', 'latin1'));
    assert.throws(() => loadWeights(h5), new RegExp(`${h5.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: a Keras HDF5 file, not a weights file .*mnv2 import keras`));
    const tfl = path.join(dir, 'm.bin');
    writeFileSync(tfl, Buffer.from('\x1c\0\0\0TFL3\0\0\0\0', 'latin1'));
    assert.throws(() => loadWeights(tfl), /a TFLite model, not a weights file .*mnv2 import tflite/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
