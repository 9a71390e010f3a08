/**
 * Memory of the native programs (src/engine/native/plan.ts): gradient (and inference) buffers that are never live
 * at the same time share arenas of any shape, so what a program allocates for them is about the largest set live
 * at once, not one buffer per distinct shape.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ProgramBuilder, buildTrainProgram } from '../src/engine/native/plan.js';
import { planBytes } from '../src/engine/native/model.js';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';

const MiB = 2 ** 20;

describe('native plan: shared arenas', () => {
  it('a released temp lends its arena to the next of any shape; a live one does not; the arena is its largest member', () => {
    const b = new ProgramBuilder('nChw8c');
    const a = b.temp([4, 16, 8, 8]);
    const c = b.temp([4, 8, 4, 4]);
    assert.notEqual(b.buffers[a]!.arena, b.buffers[c]!.arena, 'both live: two arenas');
    b.release(a);
    const d = b.temp([4, 32, 8, 8]); // larger than a: takes a's (the only free) arena and grows it
    assert.equal(b.buffers[d]!.arena, b.buffers[a]!.arena);
    b.retain(c);
    b.release(c);
    const f = b.temp([4, 8, 2, 2]);
    assert.notEqual(b.buffers[f]!.arena, b.buffers[c]!.arena, 'c still has a holder');
    b.release(c);
    b.release(d);
    // Two free arenas (4·8·4·4 and 4·32·8·8 elements): a small temp takes the smallest that holds it.
    const e = b.temp([4, 8, 4, 4]);
    assert.equal(b.buffers[e]!.arena, b.buffers[c]!.arena);
    assert.equal(planBytes(b.spec()), 4 * (4 * 32 * 8 * 8 + 4 * 8 * 4 * 4 + 4 * 8 * 2 * 2));
  });

  it('channels that leave blocked padding (12 in nChw8c) are reused at the same dims only, never in an arena', () => {
    const b = new ProgramBuilder('nChw8c');
    const a = b.temp([2, 12, 4, 4]);
    assert.equal(b.buffers[a]!.arena, undefined);
    b.release(a);
    assert.equal(b.temp([2, 12, 4, 4]), a, 'the same buffer again');
    assert.equal(b.buffers[b.temp([2, 16, 4, 4])]!.arena, 0);
    const nhwc = new ProgramBuilder('nhwc');
    assert.equal(nhwc.buffers[nhwc.temp([2, 12, 4, 4])]!.arena, 0, 'channels-last has no padding');
  });

  it('the seed model at batch 128: gradients in 4 arenas of 208 MiB (one buffer per shape: 600 MiB), 1893 MiB in all', () => {
    const g = mobilenetV2('seed-cifar', { numClasses: 10 });
    const spec = buildTrainProgram(g, 128, { get: () => new Float32Array(1) }, 'nChw8c', false);
    const arenas = new Map<number, number>();
    for (const buf of spec.buffers) {
      if (buf.arena !== undefined) arenas.set(buf.arena, Math.max(arenas.get(buf.arena) ?? 0, 4 * buf.dims!.reduce((x, y) => x * y, 1)));
    }
    assert.equal(arenas.size, 4);
    assert.equal(Math.round([...arenas.values()].reduce((x, y) => x + y, 0) / MiB), 208);
    assert.equal(Math.round(planBytes(spec) / MiB), 1893);
  });
});
