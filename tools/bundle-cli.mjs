#!/usr/bin/env node
/**
 * Bundles the CLI (`mnv2`, package.json `bin`) from the tsc output into dist/bundle/cli with esbuild: one file per
 * lazily imported part instead of ~50-90 modules to resolve and read at start-up (issue 11 §5). Code splitting keeps
 * every `await import()` lazy, and npm packages stay external, so a command still loads only the libraries it
 * uses (test/cli-startup.test.ts checks the bundle too) — except commander, which every command loads: bundled,
 * it skips CommonJS resolution and loading (summary 0.22 vs 0.265 s wall, median of 8, on a busy machine). All files sit in one folder three levels below the
 * package root, like dist/src/<dir>/<file>.js, so the paths the code builds from import.meta.url (package.json,
 * the bundled model, the data loader's worker script, which is an entry point of its own) hold unchanged.
 *
 *   node tools/bundle-cli.mjs        (npm run build runs it after tsc -p .)
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const SRC = path.join(ROOT, 'dist', 'src');
const OUT = path.join(ROOT, 'dist', 'bundle', 'cli');
const ENTRIES = ['cli/main.js', 'data/loader-worker.js'].map((f) => path.join(SRC, f));
/** Packages compiled into the bundle: pure JavaScript that every command loads. */
const BUNDLED = ['commander'];
const external = Object.keys(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).dependencies).filter((d) => !BUNDLED.includes(d));

for (const f of ENTRIES) if (!existsSync(f)) throw new Error(`${f} is missing: run tsc -p . first`);
rmSync(OUT, { recursive: true, force: true }); // chunk names carry hashes: stale ones would pile up
await build({
  entryPoints: ENTRIES,
  outdir: OUT,
  entryNames: '[name]',
  chunkNames: 'chunk-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: [...external, ...external.map((d) => `${d}/*`)],
  // A bundled CommonJS package requires Node's built-ins ('node:events'); an ES module has no `require` of its own.
  banner: { js: "import { createRequire as __mnv2Require } from 'node:module'; const require = __mnv2Require(import.meta.url);" },
  logLevel: 'warning',
});
