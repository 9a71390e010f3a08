/**
 * `mnv2 experiment` (src/experiments) in --quick mode: the whole pipeline of two experiments (train, eval,
 * export, quantize, QAT, diagnose, summary, bench) on tiny budgets; the reports' numbers against the files the
 * jobs wrote; a second run skips every finished job and a removed output reruns exactly its job; the ablation
 * flags reach the trained model's config; bad names are clear errors. Needs the system Fashion-MNIST.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { FASHION_MNIST_DIR } from '../src/data/idx.js';
import { compare, deadSummary, spread } from '../src/experiments/report.js';
import { planJobs, type Job } from '../src/experiments/jobs.js';
import { runJobs } from '../src/experiments/runner.js';
import { EXPERIMENT_NAMES, FULL_BUDGET, QUICK_BUDGET } from '../src/experiments/plan.js';
import { loadModelFile } from '../src/io/weights.js';
import { CIFAR_TRAIN_FILES } from '../src/data/cifar.js';
import { Rng } from '../src/util/rng.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const noData = existsSync(FASHION_MNIST_DIR) ? false : `Fashion-MNIST is not installed at ${FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)`;
const tmp = mkdtempSync(path.join(tmpdir(), 'mnv2-experiment-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const runs = path.join(tmp, 'runs');
const out = path.join(tmp, 'reports');

function mnv2(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const json = <T>(f: string): T => JSON.parse(readFileSync(f, 'utf8')) as T;
const top1 = (f: string): number => json<{ top1: number }>(f).top1;

describe('mnv2 experiment --quick', { skip: noData }, () => {
  const names = ['bottleneck', 'v1-vs-v2'];
  let first: ReturnType<typeof mnv2>;

  it('runs two experiments end to end and writes their reports', () => {
    first = mnv2('experiment', ...names, '--quick', '--runs', runs, '--out', out, '--jobs', '2');
    assert.equal(first.status, 0, first.stderr);
    const jobs = planJobs(['bottleneck', 'v1-vs-v2'], QUICK_BUDGET, runs);
    assert.match(first.stderr, new RegExp(`${jobs.length} jobs: 0 done before, ${jobs.length} to run`));
    for (const n of names) for (const f of ['README.md', 'results.json', `${n}.png`]) assert.ok(existsSync(path.join(out, n, f)), `${n}/${f}`);
    const png = readFileSync(path.join(out, 'v1-vs-v2', 'v1-vs-v2.png'));
    assert.deepEqual([...png.subarray(1, 4)], [...Buffer.from('PNG')]);
  });

  it("the bottleneck report's numbers are the eval files' top-1 per seed", () => {
    const r = json<{ variants: { id: string; fp32: number[] }[] }>(path.join(out, 'bottleneck', 'results.json'));
    assert.deepEqual(r.variants.map((v) => v.id), ['v2', 'v2-nonlinear']);
    for (const v of r.variants) {
      assert.deepEqual(v.fp32, QUICK_BUDGET.seeds.map((s) => top1(path.join(runs, `${v.id}-s${s}`, 'eval-fp32.json'))));
      for (const x of v.fp32) assert.ok(x >= 0 && x <= 1);
    }
    const md = readFileSync(path.join(out, 'bottleneck', 'README.md'), 'utf8');
    assert.ok(md.includes(`| V2 (paper) | ${spread(r.variants[0].fp32)} |`), md);
    assert.ok(md.includes(compare(r.variants[0].fp32, r.variants[1].fp32).text));
    assert.match(md, /mnv2 train --arch seed-cifar --activation relu6 --nonlinear-bottleneck --alpha 0\.25 .*--seed 2 .*--threads 1 {3}# /);
    assert.match(md, /Quick mode/);
  });

  it('the ablation flags reach the trained models', () => {
    const cfg = (id: string) => loadModelFile(path.join(runs, `${id}-s1`, 'model.safetensors')).graph.config as unknown as Record<string, unknown>;
    assert.deepEqual([cfg('v2').activation, cfg('v2').linearBottleneck], ['relu6', true]);
    assert.deepEqual([cfg('v2-nonlinear').activation, cfg('v2-nonlinear').linearBottleneck], ['relu6', false]);
    assert.deepEqual([cfg('v1').family, cfg('v1').activation], ['mobilenetv1', 'relu6']);
  });

  it("v1-vs-v2 times each file's own model and counts its parameters", () => {
    const r = json<{ variants: { id: string; cost: { params: number; macs: number }; inferImgPerS: number[]; trainImgPerS: number[] }[] }>(path.join(out, 'v1-vs-v2', 'results.json'));
    const bench = json<{ model: string; img_per_s: number }>(path.join(runs, 'v1-s1', 'bench-infer.json'));
    assert.match(bench.model, /^MobileNetV1 mobilenetv1-cifar, alpha 0\.25/);
    const summary = json<{ totals: { params: number; macs: number } }>(path.join(runs, 'v1-cost.json'));
    assert.deepEqual(r.variants[0].cost.params, summary.totals.params);
    assert.equal(r.variants[0].inferImgPerS[0], bench.img_per_s);
    for (const v of r.variants) for (const x of [...v.inferImgPerS, ...v.trainImgPerS]) assert.ok(x > 0);
  });

  it('a second run skips every finished job; a removed output reruns exactly its job', () => {
    const again = mnv2('experiment', ...names, '--quick', '--runs', runs, '--out', out);
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stderr, /(\d+) jobs: \1 done before, 0 to run/);
    rmSync(path.join(runs, 'v2-nonlinear-s2', 'eval-fp32.json'));
    const third = mnv2('experiment', 'bottleneck', '--quick', '--runs', runs, '--out', out);
    assert.equal(third.status, 0, third.stderr);
    assert.match(third.stderr, / 1 to run/);
    assert.match(third.stderr, /start v2-nonlinear-s2\/fp32: /);
  });

  it('a damaged measurement file is an error naming it', () => {
    const damaged = path.join(runs, 'v1-s2', 'eval-fp32.json');
    const kept = readFileSync(damaged);
    writeFileSync(damaged, kept.subarray(0, 10));
    const r2 = mnv2('experiment', 'v1-vs-v2', '--quick', '--report-only', '--runs', runs, '--out', out);
    writeFileSync(damaged, kept);
    assert.notEqual(r2.status, 0);
    assert.match(r2.stderr, /eval-fp32\.json: not valid JSON \(.*\); delete it to rerun the job that wrote it/);
  });
});

describe('mnv2 experiment --quick --dataset cifar10', () => {
  it('trains and scores on CIFAR-10 binaries (a small synthetic set in the real format)', () => {
    const dir = path.join(tmp, 'cifar-10-batches-bin');
    mkdirSync(dir, { recursive: true });
    const rng = new Rng(3);
    const batch = (n: number): Buffer => {
      const b = Buffer.alloc(n * 3073);
      for (let i = 0; i < n; i++) {
        b[i * 3073] = i % 10;
        for (let j = 1; j < 3073; j++) b[i * 3073 + j] = Math.floor(rng.uniform() * 256);
      }
      return b;
    };
    for (const f of CIFAR_TRAIN_FILES) writeFileSync(path.join(dir, f), batch(60));
    writeFileSync(path.join(dir, 'test_batch.bin'), batch(100));
    const cruns = path.join(tmp, 'cifar-runs');
    const r = mnv2('experiment', 'bottleneck', '--quick', '--dataset', 'cifar10', '--data', dir, '--runs', cruns, '--out', path.join(tmp, 'cifar-reports'));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /mnv2 train --dataset cifar10 --data \S+ --arch seed-cifar/);
    assert.deepEqual(json<{ total: number }>(path.join(cruns, 'v2-s1', 'eval-fp32.json')).total, 100);
    assert.match(readFileSync(path.join(tmp, 'cifar-reports', 'bottleneck', 'README.md'), 'utf8'), /CIFAR-10 \(32×32 RGB\)/);
  });
});

describe('experiment runner', () => {
  it('a job that waits for a timing job runs after it (the timing job does not wait for it in turn)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mnv2-runner-'));
    try {
      const cli = path.join(dir, 'fake-cli.mjs');
      writeFileSync(cli, 'process.stdout.write(JSON.stringify({ argv: process.argv.slice(2), at: process.hrtime.bigint().toString() }));\n');
      const job = (id: string, after: string[], exclusive = false): Job =>
        ({ id, argv: [id], threads: false, output: path.join(dir, `${id}.json`), stdoutToOutput: true, after, exclusive });
      const log: string[] = [];
      await runJobs([job('speed', [], true), job('report', ['speed']), job('train', [])], { parallel: 2, threads: 1, cli, log: (m) => log.push(m) });
      const at = (id: string): bigint => BigInt(JSON.parse(readFileSync(path.join(dir, `${id}.json`), 'utf8')).at);
      assert.ok(at('train') < at('speed') && at('speed') < at('report'), log.join('\n'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('experiment plan and report helpers', () => {
  it('every experiment plans its jobs; shared models are trained once', () => {
    const jobs = planJobs(EXPERIMENT_NAMES, FULL_BUDGET, '/r');
    const trains = jobs.filter((j) => j.id.endsWith('/train')).map((j) => j.id);
    assert.equal(trains.length, 7 * FULL_BUDGET.seeds.length); // seven models, each seed once
    assert.equal(new Set(jobs.map((j) => j.id)).size, jobs.length);
    for (const j of jobs) for (const a of j.after) assert.ok(jobs.findIndex((x) => x.id === a) < jobs.indexOf(j), `${j.id} after ${a}`);
  });

  it('compare calls overlapping seed ranges noise', () => {
    assert.deepEqual(compare([0.9, 0.92], [0.91, 0.95]).overlap, true);
    const c = compare([0.9, 0.91], [0.93, 0.95]);
    assert.equal(c.overlap, false);
    assert.equal(c.text, '+3.50 points, outside the seed ranges');
    assert.equal(spread([0.9, 0.92]), '91.00 % (90.00 %–92.00 %)');
  });

  it('deadSummary counts filters per kind and dead channels over measured ones', () => {
    const d = deadSummary({ layers: [
      { kind: 'depthwise', relativeNorms: [1e-4, 5e-3, 0.05, 1], deadKernels: 1, deadChannels: 1, zeroShares: [1, 0, 0, 0] },
      { kind: 'pointwise', relativeNorms: [0.5, 2], deadKernels: 0, deadChannels: null, zeroShares: null },
    ] });
    assert.deepEqual(d.depthwise, { filters: 4, dead: 1, below1e2: 2, below1e1: 3, minRelative: 1e-4 });
    assert.deepEqual(d.pointwise, { filters: 2, dead: 0, below1e2: 0, below1e1: 0, minRelative: 0.5 });
    assert.deepEqual(d.deadChannels, { depthwise: 1, pointwise: 0, measured: 4 });
  });

  it('an unknown experiment or a switch the family lacks is a clear error', () => {
    const r = mnv2('experiment', 'bottlenek', '--quick', '--runs', runs);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /unknown experiment 'bottlenek' \(expected bottleneck, shortcut, v1-vs-v2, dead-kernels, low-precision or all\)/);
    const s = mnv2('summary', '--arch', 'mobilenetv1-cifar', '--nonlinear-bottleneck');
    assert.notEqual(s.status, 0);
    assert.match(s.stderr, /--nonlinear-bottleneck applies to mobilenetv2 \(imagenet, seed-cifar\), not mobilenetv1-cifar/);
    assert.match(execFileSync(process.execPath, [CLI, 'summary', '--arch', 'mobilenetv1-cifar', '--activation', 'relu', '--json'], { encoding: 'utf8' }), /"activation": "relu"/);
    const empty = mnv2('experiment', 'shortcut', '--report-only', '--runs', path.join(tmp, 'empty'), '--out', path.join(tmp, 'empty-reports'));
    assert.match(empty.stderr, /experiment shortcut: no finished job in \S+empty \(run it without --report-only\)/);
    assert.ok(!existsSync(path.join(tmp, 'empty-reports', 'shortcut')));
    const both = mnv2('eval', '--onnx', 'a.onnx', '--weights', 'b.safetensors', '--dataset', 'fashion-mnist');
    assert.match(both.stderr, /eval: give either --weights or --onnx, not both/);
    const missing = mnv2('eval', '--onnx', path.join(tmp, 'nope.onnx'), '--dataset', 'fashion-mnist');
    assert.match(missing.stderr, /nope\.onnx: no such file/);
  });
});
