/**
 * Start-up: a command loads only the libraries it uses (issue 11 §5). The time itself is measured in bench/startup.ts;
 * this checks what makes it, by listing every package and project file the ES module loader resolves while the
 * command runs, for the tsc output and for the bundle that `mnv2` runs once installed.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { Command } from 'commander';
import { nativeAvailable } from '../src/engine/native/binding.js';
import { COMMAND_MODULES, modulesFor } from '../src/cli/commands.js';
import { FASHION_MNIST_DIR } from '../src/data/idx.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
// What `npm install` users run: package.json's bin, the esbuild bundle of the CLI (tools/bundle-cli.mjs).
const BIN = path.join(ROOT, (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: { mnv2: string } }).bin.mnv2);
// A resolve hook that prints each package it resolves, once, as "pkg: NAME", and each file of this project
// under dist/ as "mod: PATH" (src/... for the tsc output, bundle/... for the bundle) on stderr.
const HOOK = `data:text/javascript,${encodeURIComponent(`
import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(\`
const seen = new Set();
export async function resolve(s, c, next) {
  const r = await next(s, c);
  const m = /node_modules\\\\/((?:@[^/]+\\\\/)?[^/]+)/.exec(r.url);
  if (m && !seen.has(m[1])) { seen.add(m[1]); process._rawDebug('pkg: ' + m[1]); }
  const own = /\\\\/dist\\\\/((?:src|bundle)\\\\/.+)$/.exec(r.url);
  if (own && !seen.has(r.url)) { seen.add(r.url); process._rawDebug('mod: ' + own[1]); }
  return r;
}\`));`)}`;

function packagesOf(cli: string, ...args: string[]): { status: number | null; stdout: string; stderr: string; packages: string[]; modules: string[] } {
  const r = spawnSync(process.execPath, ['--import', HOOK, cli, ...args], { encoding: 'utf8' });
  const packages = [...r.stderr.matchAll(/^pkg: (.+)$/gm)].map((m) => m[1]!).sort();
  const modules = [...r.stderr.matchAll(/^mod: (.+)$/gm)].map((m) => m[1]!).sort();
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.replace(/^(pkg|mod): .+\n/gm, ''), packages, modules };
}

const HEAVY = ['sharp', 'onnxruntime-node', 'onnx-proto', 'fastify', 'h5wasm', 'tar', 'fflate', 'fast-xml-parser', 'cli-progress', 'flatbuffers'];

function summaryLoads(cli: string): ReturnType<typeof packagesOf> {
  const r = packagesOf(cli, 'summary', '--arch', 'seed-cifar');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /total\s+2,296,922\s+/); // the seed model's parameter count, the table as before
  // commander: resolved as a package by the tsc output, compiled into the bundle (tools/bundle-cli.mjs).
  if (cli === BIN) assert.ok(!r.packages.includes('commander') && r.modules.length > 0, `bundle: ${r.packages.join(', ')} | ${r.modules.join(', ')}`);
  else assert.ok(r.packages.includes('commander'), `the hook saw no package at all: ${r.packages.join(', ')}`);
  assert.deepEqual(r.packages.filter((p) => HEAVY.includes(p)), []);
  return r;
}

async function predictLoads(cli: string): Promise<ReturnType<typeof packagesOf>> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mnv2-startup-'));
  try {
    const png = path.join(dir, 'grey.png');
    await sharp({ create: { width: 28, height: 28, channels: 3, background: { r: 128, g: 128, b: 128 } } }).png().toFile(png);
    const r = packagesOf(cli, 'predict', '--json', png);
    assert.equal(r.status, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { top: unknown[] }[])[0]!.top.length, 5);
    assert.ok(r.packages.includes('sharp'));
    assert.deepEqual(r.packages.filter((p) => HEAVY.includes(p) && p !== 'sharp'), []);
    return r;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const NATIVE = { skip: nativeAvailable() ? false : 'native addon not built' };

describe('cli start-up', () => {
  it('summary loads commander and no engine, image, archive or server library', () => {
    const r = summaryLoads(CLI);
    // The model definitions and the CLI's shell only: no other command's module, no file, engine or data code.
    assert.deepEqual(r.modules.filter((m) => !m.startsWith('src/model/') && !m.startsWith('src/util/')),
      ['src/cli/arch-options.js', 'src/cli/args.js', 'src/cli/commands.js', 'src/cli/main.js', 'src/cli/summary-command.js']);
    assert.ok(r.modules.includes('src/model/mobilenetv2.js'), r.modules.join(', '));
    assert.deepEqual(r.modules.filter((m) => /^src\/model\/(weights|fold|features)\.js$/.test(m)), []);
  });

  it('predict on the native engine loads sharp but not ONNX Runtime, the ONNX encoder or the server', NATIVE, async () => {
    await predictLoads(CLI);
  });
});

describe('cli bundle (package.json bin)', () => {
  it('is the esbuild bundle, self-contained: it loads no module of the tsc output', () => {
    assert.equal(path.relative(ROOT, BIN), path.join('dist', 'bundle', 'cli', 'main.js'));
    const r = summaryLoads(BIN);
    assert.ok(r.modules.length >= 2, r.modules.join(', ')); // the hook saw the bundle's files
    assert.deepEqual(r.modules.filter((m) => !m.startsWith('bundle/cli/')), []);
  });

  it('summary reads fewer files than the tsc output: the model code is one chunk', (t) => {
    const bundled = summaryLoads(BIN).modules.length;
    // The tsc output also reads commander's files from node_modules (index.js, lib/*.js); the bundle compiles them in.
    const commanderFiles = 1 + readdirSync(path.join(ROOT, 'node_modules', 'commander', 'lib')).filter((f) => f.endsWith('.js')).length;
    const unbundled = summaryLoads(CLI).modules.length + commanderFiles;
    t.diagnostic(`summary: ${bundled} bundle files vs ${unbundled} modules (${commanderFiles} of them commander's)`);
    assert.ok(bundled * 2 <= unbundled, `${bundled} vs ${unbundled}`);
  });

  it('keeps every library lazy: predict loads sharp but not ONNX Runtime, the ONNX encoder or the server', NATIVE, async (t) => {
    const r = await predictLoads(BIN);
    t.diagnostic(`predict: ${r.modules.length} bundle files`);
    assert.deepEqual(r.modules.filter((m) => !m.startsWith('bundle/cli/')), []);
  });

  it('evaluates through the data loader\'s worker thread, whose script sits beside the chunks, as the tsc output does', {
    skip: existsSync(FASHION_MNIST_DIR) ? false : `${FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)`,
  }, () => {
    // src/data/loader.ts finds its worker script from import.meta.url: the one sibling file the bundle must keep.
    const args = ['eval', '--dataset', 'fashion-mnist', '--limit', '64', '--batch', '32', '--json'];
    const [bundled, unbundled] = [BIN, CLI].map((cli) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' }));
    assert.equal(bundled!.status, 0, bundled!.stderr);
    const r = JSON.parse(bundled!.stdout) as { total: number; correct: number };
    assert.equal(r.total, 64);
    assert.deepEqual(r, JSON.parse(unbundled!.stdout));
  });
});

describe('cli command table', () => {
  it('names exactly the top-level commands each module creates or adds to', async () => {
    // One program, modules in table order (a module adding to a group needs the one creating it first).
    const program = new Command();
    const shape = (): Map<string, string> => new Map(program.commands.map((c) => [c.name(), `${c.commands.length} ${c.options.length} ${c.registeredArguments.length}`]));
    for (const m of COMMAND_MODULES) {
      const before = shape();
      (await m.load())(program);
      const touched = [...shape()].filter(([name, s]) => before.get(name) !== s).map(([name]) => name);
      assert.deepEqual(touched.sort(), [...m.names].sort());
    }
  });

  it('loads the modules of the command word only, every module for help, no command or an unknown word', () => {
    const names = (argv: string[]): string[] => [...new Set(modulesFor(argv).flatMap((m) => m.names))];
    assert.deepEqual(names(['summary', '--arch', 'seed-cifar']), ['summary']);
    assert.deepEqual(names(['export', 'triton', '--weights', 'predict']), ['infer', 'export', 'predict', 'serve']);
    assert.deepEqual(names(['serve', '--onnx', 'm.onnx']), ['infer', 'export', 'predict', 'serve']); // serve adds to export
    assert.deepEqual(names(['data', 'make', 'fashion-detect']), ['train', 'eval', 'plot', 'data', 'detect']);
    assert.deepEqual(names(['knn', 'add']), ['knn']);
    const all = [...new Set(COMMAND_MODULES.flatMap((m) => m.names))];
    for (const argv of [[], ['--help'], ['-V'], ['help', 'predict'], ['sumary']]) assert.deepEqual(names(argv), all, argv.join(' '));
  });

  it('mnv2 NAME --help, from NAME\'s modules only, prints what `mnv2 help NAME` prints with every module registered', () => {
    for (const name of new Set(COMMAND_MODULES.flatMap((m) => m.names))) {
      const [own, all] = [[name, '--help'], ['help', name]].map((argv) => spawnSync(process.execPath, [BIN, ...argv], { encoding: 'utf8' }));
      assert.equal(own!.status, 0, `${name}: ${own!.stderr}`);
      assert.match(own!.stdout, new RegExp(`^Usage: mnv2 ${name} `));
      assert.equal(own!.stdout, all!.stdout, name);
    }
  });

  it('lists the same commands in help as registering every module', () => {
    const r = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const listed = [...r.stdout.split('Commands:')[1]!.matchAll(/^ {2}(\S+)/gm)].map((m) => m[1]!);
    assert.deepEqual(listed, [...new Set(COMMAND_MODULES.flatMap((m) => m.names)), 'help']);
    const typo = spawnSync(process.execPath, [CLI, 'sumary'], { encoding: 'utf8' });
    assert.match(typo.stderr, /unknown command 'sumary'\n\(Did you mean summary\?\)/);
  });
});
