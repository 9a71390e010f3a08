/**
 * The native engine's limits (issue 12): tensors of 2^31 elements or more are refused with a clear error
 * before oneDNN runs, compiled programs stay within a byte budget, plans larger than the available memory are
 * refused with the estimate, `mnv2 predict` over many images runs in flat memory, and OpenMP waits passively
 * (latency under contention: `npm run bench:contention`).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { initWeights } from '../src/model/weights.js';
import { NativeModel } from '../src/engine/native/model.js';
import { native, type ProgramSpec } from '../src/engine/native/binding.js';

const MB = 2 ** 20;
const sine = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i));

describe('native engine: tensor sizes', () => {
  it('the addon refuses a tensor of 2^31 elements and a dims product that overflows 64 bits', () => {
    const { Program } = native();
    const spec = (dims: number[]): ProgramSpec => ({ actFormat: 'nChw8c', buffers: [{ layout: 'act', dims }], segments: [] });
    assert.throws(() => new Program(spec([1, 32, 8192, 8192])),
      /buffers\[0\] \[1, 32, 8192, 8192\] has 2\^31 or more elements; .* at most 2\^31 - 1 per tensor/);
    assert.throws(() => new Program(spec([1e12, 1e12, 1e12, 1e12])), /has 2\^31 or more elements/);
    assert.equal(native().info().maxTensorElements, 2 ** 31 - 1);
  });

  it('NativeModel names the layer and its shape before compiling anything (alpha 0.35 @ 8192, batch 3)', () => {
    const g = mobilenetV2('imagenet', { alpha: 0.35, resolution: 8192, numClasses: 10 });
    const m = new NativeModel(g, initWeights(g, 1), { threads: 1 });
    const want = /batch 3 makes features\.2\.conv\.0\.0 \[3, 48, 4096, 4096\] = 2415919104 elements, more than the 2147483647 \(2\^31 - 1\) per tensor/;
    assert.throws(() => m.predict(new Float32Array(1), 3), want);
    assert.throws(() => m.trainStep(new Float32Array(1), [0, 0, 0], 3), want);
    assert.equal(m.programStats().programs, 0);
  });
});

describe('native engine: memory', () => {
  it('programs for 24 batch sizes stay within the byte budget: RSS grows < 150 MB (unbounded: ~580 MB)', { timeout: 120_000 }, () => {
    const g = mobilenetV2('imagenet', { alpha: 0.35, resolution: 96, numClasses: 10 });
    const budget = 4 * MB;
    const m = new NativeModel(g, initWeights(g, 2), { threads: 1, programCacheBytes: budget });
    const per = 3 * 96 * 96;
    const x = sine(31 * per);
    const ref = m.predict(x.subarray(0, 8 * per), 8);
    const rss0 = process.memoryUsage.rss();
    for (let n = 9; n <= 31; n++) m.predict(x.subarray(0, n * per), n);
    const growth = (process.memoryUsage.rss() - rss0) / MB;
    assert.ok(growth < 150, `RSS grew ${growth.toFixed(1)} MB over batch sizes 9..31`);
    const s = m.programStats();
    assert.equal(s.programs, 1, 'each program (5 MB at batch 9, 14 MB at 31) alone fills the 4 MB budget');
    assert.ok(s.bytes > 10 * MB && s.evictions === 23, JSON.stringify(s));
    // An evicted batch size compiles again and gives the same logits.
    assert.deepEqual(m.predict(x.subarray(0, 8 * per), 8), ref);
  });

  it('a batch whose plan exceeds the available memory is refused with the estimate', (t) => {
    // A training step (~15 MB per image): an inference program needs so little per image (gradient-free, its
    // buffers shared) that a batch filling 1.5 × the free memory would hit the per-tensor limit first.
    const g = mobilenetV2('seed-cifar', { numClasses: 10 });
    const m = new NativeModel(g, initWeights(g, 3), { threads: 1 });
    const per = 3 * 32 * 32;
    // Per image: what the batch-2 program holds beyond the batch-1 one (weight layouts are the same in both).
    m.trainStep(sine(per), [0], 1);
    const one = m.programStats().bytes;
    m.trainStep(sine(2 * per), [0, 1], 2);
    const perImage = m.programStats().bytes - 2 * one;
    const batch = Math.ceil((1.5 * os.freemem()) / perImage);
    const largest = Math.max(...g.nodes.map((n) => n.shape.reduce((a, d) => a * d, 1)));
    if (batch * largest > 2 ** 31 - 1) return t.skip(`this machine has so much free memory that batch ${batch} hits the per-tensor limit first`);
    // Zero pages: the input is not resident until written, so the test itself stays small.
    assert.throws(() => m.trainStep(new Float32Array(batch * per), new Uint8Array(batch), batch),
      new RegExp(`batch ${batch} needs an estimated \\d+\\.\\d\\d GB for its activations, \\d+\\.\\d\\d GB is available; use a smaller batch`));
  });

  it('mnv2 predict over 300 images peaks within 40 MB of 30 images (one batch of all: +2.6 MB per image)', { timeout: 180_000 }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mnv2-limits-'));
    const img = path.join(dir, 'garment.png');
    await sharp({ create: { width: 28, height: 28, channels: 3, background: { r: 200, g: 40, b: 90 } } }).png().toFile(img);
    const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const peak = async (n: number): Promise<number> => {
      // The child reports its own peak RSS when it exits.
      const report = 'data:text/javascript,process.on("exit",()=>process.stderr.write("maxrss "+process.resourceUsage().maxRSS+"\\n"))';
      const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--import', report, cli, 'predict', '--json', ...Array(n).fill(img)], { maxBuffer: 1 << 26 });
      assert.equal(JSON.parse(stdout).length, n);
      return Number(/maxrss (\d+)/.exec(stderr)![1]) / 1024;
    };
    const [few, many] = [await peak(30), await peak(300)];
    assert.ok(many - few < 40, `peak RSS ${few.toFixed(0)} MB for 30 images, ${many.toFixed(0)} MB for 300`);
  });
});

describe('native engine: OpenMP wait policy', () => {
  // libgomp prints the values it read at load with OMP_DISPLAY_ENV=VERBOSE: proof that setting process.env
  // before the addon's require reaches it. Spin count 0 is passive waiting; 300000 was libgomp's spinning default.
  const spinCount = async (env: Record<string, string>): Promise<string> => {
    const clean = { ...process.env };
    delete clean.OMP_WAIT_POLICY;
    delete clean.GOMP_SPINCOUNT;
    const binding = new URL('../src/engine/native/binding.js', import.meta.url).href;
    const { stderr } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', `(await import('${binding}')).native();`],
      { env: { ...clean, OMP_DISPLAY_ENV: 'VERBOSE', ...env } });
    return /GOMP_SPINCOUNT = '(\d+)'/.exec(stderr)?.[1] ?? `no GOMP_SPINCOUNT in: ${stderr}`;
  };
  it('passive by default; a policy or spin count the user set wins', async () => {
    assert.equal(await spinCount({}), '0');
    assert.equal(await spinCount({ OMP_WAIT_POLICY: 'ACTIVE' }), '30000000000');
    assert.equal(await spinCount({ GOMP_SPINCOUNT: '1000' }), '1000');
  });
});
