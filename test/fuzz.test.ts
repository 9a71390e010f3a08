/**
 * A short (10 s) seeded fuzz run of every loader (fuzz/loaders.ts): each accepts its own valid input, and truncated or
 * mutated inputs end as a clear error naming the file or are accepted — no unclear error, hang or crash.
 * `npm run fuzz -- --seconds N --seed S` runs longer.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fuzz } from '../fuzz/run.js';
import { LOADERS } from '../fuzz/loaders.js';

test('10 s seeded fuzz run: zero unclear errors, hangs and crashes in every loader', async () => {
  const reports = await fuzz({ seconds: 10, seed: 12, timeoutMs: 10_000 });
  assert.deepEqual(reports.map((r) => r.loader), LOADERS.map((l) => l.name));
  for (const r of reports) {
    assert.deepEqual(r.failures, [], r.loader);
    assert.equal(r.counts.unclear + r.counts.hang + r.counts.crash, 0, `${r.loader}: ${JSON.stringify(r.counts)}`);
    assert.equal(r.counts.clear + r.counts.accepted, r.inputs);
    assert.ok(r.inputs >= 20, `${r.loader}: only ${r.inputs} inputs in 10 s`);
    assert.ok(r.counts.clear >= r.inputs / 2, `${r.loader}: ${r.counts.clear} of ${r.inputs} mutated inputs refused`);
  }
});
