/**
 * A classifier without its top, as a feature extractor (Keras's `include_top=False, pooling=...`): the graph up to
 * the global pool, whose one output `features` is the pooled vector [C] ('avg' or 'max') or the last feature map
 * [C, H, W] ('none'). Parameters and buffers are those of the nodes kept, so a file without a classifier runs too.
 */
import type { Graph, GraphNode } from './graph.js';

export type Pooling = 'avg' | 'max' | 'none';
export const POOLINGS: readonly Pooling[] = ['avg', 'max', 'none'];
/** The output name of a feature extractor (the ONNX output name too). */
export const FEATURES = 'features';

/** The global pool every classifier graph of this project has before its head. */
export function globalPool(graph: Graph): GraphNode | undefined {
  return graph.nodes.find((n) => n.op === 'avgpool');
}

export function featureGraph<G extends Graph>(graph: G, pooling: Pooling): G {
  if (!POOLINGS.includes(pooling)) throw new Error(`pooling must be ${POOLINGS.join(', ')}, got '${String(pooling)}'`);
  const pool = globalPool(graph);
  if (!pool) throw new Error(`feature extraction: the ${graph.config.family} graph has no global pool to cut its top at`);
  const backbone = graph.nodes.slice(0, graph.nodes.indexOf(pool));
  const nodes: GraphNode[] =
    pooling === 'none' ? backbone : [...backbone, pooling === 'avg' ? pool : { op: 'maxpool', name: pool.name, output: pool.output, inputs: pool.inputs, shape: pool.shape }];
  const kept = new Set(nodes.map((n) => n.name));
  const owned = <T extends { name: string }>(t: T): boolean => kept.has(t.name.slice(0, t.name.lastIndexOf('.')));
  return {
    ...graph,
    nodes,
    outputs: [{ name: FEATURES, value: pooling === 'none' ? pool.inputs[0]! : pool.output }],
    params: graph.params.filter(owned),
    buffers: graph.buffers.filter(owned),
    layers: graph.layers.filter((row) => row.nodes.every((n) => kept.has(n))),
  };
}
