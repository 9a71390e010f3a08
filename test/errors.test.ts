/**
 * The one error factory: readers, validators and parsers all throw InputError, whose message is
 * `${source}: ${problem}` with both parts kept as fields.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fail, failFor, InputError } from '../src/util/errors.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { readIdxImages } from '../src/data/idx.js';
import { makeConfig } from '../src/model/config.js';
import { makeSchedule } from '../src/train/schedule.js';

const tmp = mkdtempSync(join(tmpdir(), 'mnv2-errors-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** The InputError `fn` throws, checked for its source and problem. */
function thrown(fn: () => unknown, source: string, problem: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof InputError, `an InputError, got ${String(e)}`);
    assert.equal(String(e), `Error: ${source}: ${e.problem}`, 'printed as a plain Error');
    assert.equal(e.source, source);
    assert.match(e.problem, problem);
    assert.equal(e.message, `${source}: ${e.problem}`);
    return true;
  });
}

describe('InputError', () => {
  it('fail and failFor build `${source}: ${problem}`, keeping the cause', () => {
    thrown(() => fail('a.bin', 'too short'), 'a.bin', /^too short$/);
    thrown(() => failFor('b.bin')('bad magic'), 'b.bin', /^bad magic$/);
    const cause = new Error('EIO');
    assert.throws(() => fail('c.bin', 'cannot read', { cause }), (e: Error) => e.cause === cause);
  });

  it('file readers, config and schedule validation throw it with the file or the thing named', () => {
    const short = join(tmp, 'short.safetensors');
    writeFileSync(short, Buffer.from([1, 2, 3]));
    thrown(() => readSafetensors(short), short, /^file is 3 bytes, too short for the 8-byte header length$/);
    const idx = join(tmp, 'bad-idx3-ubyte');
    writeFileSync(idx, Buffer.alloc(16));
    thrown(() => readIdxImages(idx), idx, /magic/);
    thrown(() => readSafetensors(join(tmp, 'missing.safetensors')), join(tmp, 'missing.safetensors'), /no such file/);
    thrown(() => makeConfig('imagenet', { resolution: 100 }), 'invalid model config', /^imagenet resolution must be a multiple of 32, got 100$/);
    thrown(() => makeSchedule({ kind: 'cosine', base: -1, epochs: 1 }, 'my schedule'), 'my schedule', /base/);
  });
});
