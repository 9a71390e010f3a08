/** One batch through a model on either engine, the classifier created and released around it. */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { createClassifier, type EngineName } from '../../src/engine/classifier.js';
import type { Graph } from '../../src/model/graph.js';
import type { StateDict } from '../../src/model/weights.js';
import { maxAbs, maxAbsDiff } from './fixtures.js';

/** Logits [batch, classes] of `input` (NCHW), on one thread. */
export async function classify(m: { graph: Graph; weights: StateDict }, engine: EngineName, input: Float32Array, batch: number): Promise<Float32Array> {
  const clf = await createClassifier(m.graph, m.weights, engine, 1);
  try {
    return await clf.run(input, batch);
  } finally {
    await clf.release();
  }
}

/**
 * Both engines' logits within `tol` x max|reference| of a reference that is not trivial (max > 0.1); each
 * engine's error goes to the test's diagnostics. Returns max|reference|.
 */
export async function assertEnginesMatch(
  t: TestContext, m: { graph: Graph; weights: StateDict }, input: Float32Array, batch: number, reference: Float32Array, tol: number,
): Promise<number> {
  const scale = maxAbs(reference);
  assert.ok(scale > 0.1, `reference logits are not trivial (max ${scale})`);
  for (const engine of ['native', 'ort'] as const) {
    const d = maxAbsDiff(await classify(m, engine, input, batch), reference);
    t.diagnostic(`${engine}: max |diff| ${d.toExponential(2)}, max |logit| ${scale.toFixed(3)}`);
    assert.ok(d <= tol * scale, `${engine}: max |diff| ${d} > ${tol} * ${scale}`);
  }
  return scale;
}
