/** The atomic file writer: stale temp files of killed writers are removed, errors name the target, metadata order does not change bytes. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { writeFileAtomic } from '../src/util/atomic-write.js';
import { serializeSafetensors } from '../src/io/safetensors.js';

const dir = mkdtempSync(join(tmpdir(), 'mnv2-atomic-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('a write removes the temp files of writers that were killed, and keeps those of live ones', () => {
  const dead = spawnSync(process.execPath, ['-e', '']).pid!; // exited: its pid is free
  const stale = [`model.safetensors.tmp-${dead}-0123456789ab`, `model.onnx.tmp-${dead}-ba9876543210`];
  for (const f of stale) writeFileSync(join(dir, f), Buffer.alloc(1 << 20));
  const live = `other.bin.tmp-${process.pid}-aaaaaaaaaaaa`;
  writeFileSync(join(dir, live), 'in progress');
  writeFileSync(join(dir, 'notes.tmp-1-x'), 'not a temp file of ours');
  writeFileAtomic(join(dir, 'model.safetensors'), 'new');
  assert.deepEqual(readdirSync(dir).sort(), ['model.safetensors', 'notes.tmp-1-x', live].sort());
  assert.equal(readFileSync(join(dir, 'model.safetensors'), 'utf8'), 'new');
});

test('writing into a missing folder names the target and the problem, not the temp file', () => {
  const target = join(dir, 'missing', 'model.onnx');
  assert.throws(() => writeFileAtomic(target, 'x'), (e: Error) => {
    assert.equal(e.message, `cannot write ${target}: folder ${join(dir, 'missing')} does not exist`);
    return true;
  });
  writeFileSync(join(dir, 'file'), '');
  assert.throws(() => writeFileAtomic(join(dir, 'file', 'x.onnx'), 'x'), new RegExp(`cannot write .*file/x\\.onnx: .*file is not a folder`));
  assert.ok(!existsSync(join(dir, 'missing')));
});

test('safetensors bytes do not depend on the order metadata was built in', () => {
  const t = { w: { dtype: 'F32' as const, shape: [2], data: Float32Array.of(1, 2) } };
  const a = serializeSafetensors(t, { 'mnv2.config': '{}', 'mnv2.epoch': '3', 'mnv2.preset': 'fashion-mnist' });
  const b = serializeSafetensors(t, { 'mnv2.preset': 'fashion-mnist', 'mnv2.epoch': '3', 'mnv2.config': '{}' });
  assert.ok(Buffer.from(a).equals(Buffer.from(b)));
});
