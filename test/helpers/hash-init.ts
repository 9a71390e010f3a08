/**
 * Tensors that are a hash of their name and element index, bit for bit as tools/make-ssdlite-fixtures.py makes
 * them, so a fixture needs to store neither weights nor inputs; and the CountSketch it stores gradients as.
 */
import type { Graph } from '../../src/model/graph.js';
import { numel } from '../../src/model/graph.js';
import type { StateDict } from '../../src/model/weights.js';

/** Chris Wellons' lowbias32. */
function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** FNV-1a, 32 bit (names are ASCII). */
function nameHash(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

function hash32(name: string, n: number): Uint32Array {
  const h = nameHash(name);
  return Uint32Array.from({ length: n }, (_, i) => mix32((h + Math.imul(i, 0x9e3779b9)) >>> 0));
}

/** Biases no activation follows (projection BNs, the SSD heads' output convs); other BN shifts centre a ReLU6 at 3. */
const LINEAR_BIAS = /^features\.\d+\.conv\.[23]\.bias$|\.module_list\.\d+\.1\.bias$/;

/** The float32 value of a parameter, BN buffer, input or loss weight named `name` (init_value in the script). */
export function hashTensor(name: string, shape: readonly number[]): Float32Array {
  const h = hash32(name, numel(shape));
  const out = new Float32Array(h.length);
  const fanIn = numel(shape.slice(1));
  for (let i = 0; i < h.length; i++) {
    const u = h[i]! / 2 ** 32;
    if (name.endsWith('num_batches_tracked')) out[i] = 0;
    else if (name.endsWith('running_var') || (name.endsWith('.weight') && shape.length === 1)) out[i] = 0.5 + u;
    else if (name.endsWith('.bias') && !LINEAR_BIAS.test(name)) out[i] = 3 + 0.1 * (2 * u - 1);
    else if (name.endsWith('.bias') || name.endsWith('running_mean')) out[i] = 0.1 * (2 * u - 1);
    else if (name.endsWith('.weight')) out[i] = Math.sqrt(3 / fanIn) * (2 * u - 1);
    else out[i] = 2 * u - 1;
  }
  return out;
}

/** Every parameter and BN buffer of a graph as {@link hashTensor}. */
export function hashWeights(graph: Graph): StateDict {
  return new Map([...graph.params, ...graph.buffers].map((t) => [t.name, hashTensor(t.name, t.shape)] as const));
}

/** A gradient as the fixture stores it: in full up to `buckets` elements, else its signed-hash CountSketch. */
export function countSketch(name: string, g: Float32Array, buckets: number): Float64Array {
  if (g.length <= buckets) return Float64Array.from(g);
  const h = hash32(`sketch:${name}`, g.length);
  const out = new Float64Array(buckets);
  for (let i = 0; i < g.length; i++) out[h[i]! % buckets]! += (h[i]! >>> 31 ? -1 : 1) * g[i]!;
  return out;
}
