/**
 * Start-up: a command loads only the libraries it uses (issue 11 §5). The time itself is measured in bench/startup.ts;
 * this checks what makes it, by listing every package the ES module loader resolves while the command runs.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { nativeAvailable } from '../src/engine/native/binding.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
// A resolve hook that prints each package it resolves, once, as "pkg: NAME" on stderr.
const HOOK = `data:text/javascript,${encodeURIComponent(`
import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(\`
const seen = new Set();
export async function resolve(s, c, next) {
  const r = await next(s, c);
  const m = /node_modules\\\\/((?:@[^/]+\\\\/)?[^/]+)/.exec(r.url);
  if (m && !seen.has(m[1])) { seen.add(m[1]); process._rawDebug('pkg: ' + m[1]); }
  return r;
}\`));`)}`;

function packagesOf(...args: string[]): { status: number | null; stdout: string; stderr: string; packages: string[] } {
  const r = spawnSync(process.execPath, ['--import', HOOK, CLI, ...args], { encoding: 'utf8' });
  const packages = [...r.stderr.matchAll(/^pkg: (.+)$/gm)].map((m) => m[1]!).sort();
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.replace(/^pkg: .+\n/gm, ''), packages };
}

const HEAVY = ['sharp', 'onnxruntime-node', 'onnx-proto', 'fastify', 'h5wasm', 'tar', 'fflate', 'fast-xml-parser', 'cli-progress', 'flatbuffers'];

describe('cli start-up', () => {
  it('summary loads commander and no engine, image, archive or server library', () => {
    const r = packagesOf('summary', '--arch', 'seed-cifar');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /total\s+2,296,922\s+/); // the seed model's parameter count, the table as before
    assert.ok(r.packages.includes('commander'), `the hook saw no package at all: ${r.packages.join(', ')}`);
    assert.deepEqual(r.packages.filter((p) => HEAVY.includes(p)), []);
  });

  it('predict on the native engine loads sharp but not ONNX Runtime, the ONNX encoder or the server', { skip: nativeAvailable() ? false : 'native addon not built' }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mnv2-startup-'));
    try {
      const png = path.join(dir, 'grey.png');
      await sharp({ create: { width: 28, height: 28, channels: 3, background: { r: 128, g: 128, b: 128 } } }).png().toFile(png);
      const r = packagesOf('predict', '--json', png);
      assert.equal(r.status, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { top: unknown[] }[])[0]!.top.length, 5);
      assert.ok(r.packages.includes('sharp'));
      assert.deepEqual(r.packages.filter((p) => HEAVY.includes(p) && p !== 'sharp'), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
