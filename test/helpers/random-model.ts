/** A model's weights and inputs drawn at random, for comparing engines on non-trivial numbers. */
import { numel, type Graph } from '../../src/model/graph.js';
import { initWeights, type StateDict } from '../../src/model/weights.js';
import { Rng } from '../../src/util/rng.js';
import { archConfig, buildModel } from '../../src/model/registry.js';
import { saveWeights } from '../../src/io/weights.js';
import { encodeModelInfo } from '../../src/io/metadata.js';

/** Random weights with non-trivial BN statistics and affine parameters, so folding matters. */
export function randomWeights(graph: Graph, seed: number): StateDict {
  const sd = initWeights(graph, seed);
  const rng = new Rng(seed + 1000);
  for (const n of graph.nodes) {
    if (n.op !== 'bn') continue;
    const g = sd.get(`${n.name}.weight`)!;
    const b = sd.get(`${n.name}.bias`)!;
    const m = sd.get(`${n.name}.running_mean`)!;
    const v = sd.get(`${n.name}.running_var`)!;
    for (let c = 0; c < n.channels; c++) {
      g[c] = 0.5 + rng.uniform();
      b[c] = 0.2 * rng.normal();
      m[c] = 0.2 * rng.normal();
      v[c] = 0.5 + 1.5 * rng.uniform();
    }
  }
  for (const p of graph.params) if (p.role === 'linear.bias') sd.get(p.name)!.forEach((_, i, a) => (a[i] = 0.1 * rng.normal()));
  return sd;
}

export function randomInput(graph: Graph, batch: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(batch * numel(graph.inputShape));
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  return x;
}

/** A tiny SSDLite for fashion-detect sets (α 0.35, 129 px, 10 classes, seeded init) saved at `file`, its config as metadata. */
export function saveTinyDetector(file: string, seed = 3, ssdStyle: 'tf' | 'torchvision' = 'tf'): void {
  const g = buildModel(archConfig('ssdlite', { resolution: 129, numClasses: 10, alpha: 0.35, ssdStyle }));
  saveWeights(file, g, initWeights(g, seed), new Map(), encodeModelInfo({ config: g.config }));
}
