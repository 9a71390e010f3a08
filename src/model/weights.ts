/**
 * Weights as a PyTorch-style state dict: parameter and buffer names -> float32 data (num_batches_tracked
 * included, stored as a float here and as int64 in files).
 */
import { Rng } from '../util/rng.js';
import { assertFinite } from '../util/finite.js';
import { numel, type Graph } from './graph.js';
import { familyOf } from './registry.js';
import { fail } from '../util/errors.js';

export type StateDict = Map<string, Float32Array>;

/** torchvision's init: kaiming-normal (fan_out) convs, BN weight 1 / bias 0, linear N(0, 0.01), zero biases. */
export function initWeights(graph: Graph, seed = 0): StateDict {
  const rng = new Rng(seed);
  const sd: StateDict = new Map();
  for (const p of graph.params) {
    const data = new Float32Array(numel(p.shape));
    if (p.role === 'conv.weight') {
      // PyTorch's fan_out = size(0) * kh * kw (groups are not divided out).
      const fanOut = p.shape[0]! * p.shape[2]! * p.shape[3]!;
      const std = Math.sqrt(2 / fanOut);
      for (let i = 0; i < data.length; i++) data[i] = rng.normal() * std;
    } else if (p.role === 'linear.weight') {
      for (let i = 0; i < data.length; i++) data[i] = rng.normal() * 0.01;
    } else if (p.role === 'bn.weight') {
      data.fill(1);
    }
    sd.set(p.name, data);
  }
  for (const b of graph.buffers) {
    const data = new Float32Array(Math.max(1, numel(b.shape)));
    if (b.role === 'bn.running_var') data.fill(1);
    sd.set(b.name, data);
  }
  return sd;
}

/** Every parameter and buffer is finite and every BN running variance non-negative; names the first bad tensor. */
export function checkWeightValues(graph: Graph, sd: ReadonlyMap<string, Float32Array>, source: string): void {
  for (const t of [...graph.params, ...graph.buffers]) {
    const a = sd.get(t.name);
    if (!a) continue;
    assertFinite(a, `${source}: ${t.name}`);
    if (t.role === 'bn.running_var') {
      const i = a.findIndex((v) => v < 0);
      if (i >= 0) fail(source, `${t.name} has ${a[i]} at index ${i}; a variance cannot be negative`);
    }
  }
}

/** Check that a state dict has exactly the graph's tensors with the right sizes; names every problem. */
export function checkStateDict(graph: Graph, sd: ReadonlyMap<string, { length: number }>, source: string, allowMissingBuffers = false): void {
  const problems: string[] = [];
  const expected = new Map<string, readonly number[]>();
  for (const t of [...graph.params, ...graph.buffers]) expected.set(t.name, t.shape);
  for (const [name, shape] of expected) {
    const got = sd.get(name);
    const n = Math.max(1, numel(shape));
    if (!got) {
      if (!(allowMissingBuffers && name.endsWith('num_batches_tracked'))) problems.push(`missing ${name} [${shape.join(', ')}]`);
    } else if (got.length !== n) problems.push(`${name}: expected ${n} elements [${shape.join(', ')}], got ${got.length}`);
  }
  for (const name of sd.keys()) if (!expected.has(name)) problems.push(`unexpected ${name}`);
  if (problems.length) {
    const more = problems.length > 12 ? `\n  ... and ${problems.length - 12} more` : '';
    fail(source, `weights do not match the model (${familyOf(graph.config).describe(graph.config)}):\n  ${problems.slice(0, 12).join('\n  ')}${more}`);
  }
}
