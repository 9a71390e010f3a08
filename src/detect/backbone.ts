/**
 * A detector started from a trained classifier: SSDLite's backbone keeps torchvision's MobileNetV2 names
 * (`features.N...`), so a MobileNetV2 classifier's `features.*` tensors (weights and BN statistics) load into it as
 * they are; the extras and heads keep their fresh initialisation. The classifier itself (`classifier.*`) is unused.
 */
import type { Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import { loadModelFile } from '../io/weights.js';
import { fail } from '../util/errors.js';

const BACKBONE = 'features.';

/** `fresh` with every backbone tensor replaced by the classifier's in `path`; names what does not fit. */
export function backboneFromClassifier(graph: Graph, fresh: StateDict, path: string): { weights: StateDict; copied: number } {
  const source = loadModelFile(path);
  const cfg = source.graph.config as { family?: string; alpha?: number };
  const out: StateDict = new Map(fresh);
  let copied = 0;
  for (const t of [...graph.params, ...graph.buffers]) {
    if (!t.name.startsWith(BACKBONE)) continue;
    const w = source.weights.get(t.name);
    const want = fresh.get(t.name)!.length;
    if (!w) fail(path, `has no ${t.name}, which the detector's MobileNetV2 backbone needs (is it a MobileNetV2 classifier?)`);
    if (w.length !== want) {
      fail(path, `${t.name} has ${w.length} values, the detector's backbone ${want}: the classifier's width (alpha ${cfg.alpha ?? '?'}) must match the detector's (--alpha)`);
    }
    out.set(t.name, w);
    copied++;
  }
  if (copied === 0) fail(path, 'no backbone tensors (features.*) to copy');
  return { weights: out, copied };
}
