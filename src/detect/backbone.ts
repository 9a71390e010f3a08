/**
 * A detector started from trained weights (`mnv2 train --weights`): from a MobileNetV2 classifier, whose
 * `features.*` tensors (weights and BN statistics) load as they are because SSDLite's backbone keeps torchvision's
 * names (the extras and heads keep their fresh initialisation; `classifier.*` is unused); or from another SSDLite
 * detector of the same width and classes, all of it — e.g. at another input resolution, which changes no shape.
 */
import type { Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import { loadModelFile } from '../io/weights.js';
import { fail } from '../util/errors.js';

const BACKBONE = 'features.';

/** `fresh` with the tensors of `path` that it takes (see the file comment); names what does not fit. */
export function detectorInit(graph: Graph, fresh: StateDict, path: string): { weights: StateDict; copied: number; whole: boolean } {
  const source = loadModelFile(path);
  const cfg = source.graph.config as { family?: string; alpha?: number; numClasses?: number };
  const whole = cfg.family === graph.config.family;
  const what = whole ? `detector (alpha ${cfg.alpha}, ${cfg.numClasses} classes)` : `classifier's width (alpha ${cfg.alpha ?? '?'})`;
  const out: StateDict = new Map(fresh);
  let copied = 0;
  for (const t of [...graph.params, ...graph.buffers]) {
    if (!whole && !t.name.startsWith(BACKBONE)) continue;
    const w = source.weights.get(t.name);
    const want = fresh.get(t.name)!.length;
    if (!w) fail(path, `has no ${t.name}, which the detector's MobileNetV2 backbone needs (is it a MobileNetV2 classifier?)`);
    if (w.length !== want) fail(path, `${t.name} has ${w.length} values, the detector's ${want}: the ${what} must match the detector's (--alpha, the dataset's classes)`);
    out.set(t.name, w);
    copied++;
  }
  if (copied === 0) fail(path, 'no backbone tensors (features.*) to copy');
  return { weights: out, copied, whole };
}
