/** One meaning per flag: `train --recipe`, `predict/serve --preprocess`; the old `--preset` still works, with a notice. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadFashionMnist } from '../src/data/idx.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const mnv2 = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

describe('cli: recipe and preprocessing have distinct names', () => {
  it('predict --preset is --preprocess with a one-line notice; both disagreeing is an error; help names the new flags', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mnv2-names-'));
    try {
      const ds = loadFashionMnist(undefined, 'test');
      const png = path.join(dir, 'boot.png');
      writeFileSync(png, await sharp(Buffer.from(ds.images.subarray(0, 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer());
      const now = mnv2('predict', '--json', '--preprocess', 'fashion-mnist', png);
      const old = mnv2('predict', '--json', '--preset', 'fashion-mnist', png);
      assert.equal(now.status, 0, now.stderr);
      assert.equal(old.status, 0, old.stderr);
      assert.equal(old.stdout, now.stdout);
      assert.equal((JSON.parse(now.stdout) as { top: { label: string }[] }[])[0]!.top[0]!.label, 'Ankle boot');
      // The old spelling adds exactly one line, the notice, before predict's own 'model:' header.
      assert.match(now.stderr, /^model: the bundled Fashion-MNIST model/);
      assert.equal(old.stderr, `mnv2 predict: --preset is deprecated, use --preprocess fashion-mnist\n${now.stderr}`);
      const both = mnv2('predict', '--preset', 'fashion-mnist', '--preprocess', 'seed-cifar', png);
      assert.notEqual(both.status, 0);
      assert.match(both.stderr, /--preset fashion-mnist and --preprocess seed-cifar disagree/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const help = mnv2('train', '--help').stdout;
    assert.match(help, /--recipe <name>/);
    assert.doesNotMatch(help, /--preset/);
    assert.match(mnv2('predict', '--help').stdout, /--preprocess <name>/);
  });
});
