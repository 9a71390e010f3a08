/**
 * The layer graph every engine consumes: nodes in topological order, each with its inputs, its output shape and
 * the PyTorch state-dict prefix of its parameters. Shapes are per image, [C, H, W] (or [F] after pooling).
 */
import type { BaseConfig } from './family.js';

/** [top, left, bottom, right] zero padding. */
export type Pads = readonly [number, number, number, number];

/** Activations a block uses (the configs' ablation switch). */
export const ACTIVATIONS = ['relu', 'relu6'] as const;
export type ActivationKind = (typeof ACTIVATIONS)[number];
/** Elementwise ops of an `act` node: a block activation, or a sigmoid (e.g. detection scores). */
export type EltwiseKind = ActivationKind | 'sigmoid';

interface NodeBase {
  /** Unique name; for nodes with parameters, the state-dict prefix (`features.3.conv.1.0`). */
  name: string;
  /** Values the node reads, in operand order. */
  inputs: readonly string[];
  /** Output value name (the node's name). */
  output: string;
  /** Output shape per image (no batch dimension). */
  shape: readonly number[];
}
export interface ConvNode extends NodeBase {
  op: 'conv';
  inC: number;
  outC: number;
  k: number;
  stride: number;
  pads: Pads;
  groups: number;
  bias: boolean;
}
export interface BatchNormNode extends NodeBase {
  op: 'bn';
  channels: number;
  eps: number;
}
export interface ActNode extends NodeBase {
  op: 'act';
  kind: EltwiseKind;
}
export interface AddNode extends NodeBase {
  op: 'add';
  inputs: readonly [string, string];
}
/** Global average pooling: [C, H, W] -> [C]. */
export interface PoolNode extends NodeBase {
  op: 'avgpool';
}
/** Global max pooling: [C, H, W] -> [C] (a feature extractor's `pooling: 'max'`). */
export interface MaxPoolNode extends NodeBase {
  op: 'maxpool';
}
export interface DropoutNode extends NodeBase {
  op: 'dropout';
  p: number;
}
export interface LinearNode extends NodeBase {
  op: 'linear';
  inF: number;
  outF: number;
}
/** Inputs joined along per-image axis `axis` (all other dims equal). */
export interface ConcatNode extends NodeBase {
  op: 'concat';
  axis: number;
}
/** The same values in another per-image shape (`flatten` is a reshape to [numel]). */
export interface ReshapeNode extends NodeBase {
  op: 'reshape';
}
/** Per-image axes permuted: output dim i is input dim perm[i] (CHW -> HWC is [1, 2, 0]). */
export interface TransposeNode extends NodeBase {
  op: 'transpose';
  perm: readonly number[];
}
/** Softmax along per-image axis `axis`. */
export interface SoftmaxNode extends NodeBase {
  op: 'softmax';
  axis: number;
}
export type GraphNode =
  | ConvNode | BatchNormNode | ActNode | AddNode | PoolNode | MaxPoolNode | DropoutNode | LinearNode
  | ConcatNode | ReshapeNode | TransposeNode | SoftmaxNode;

/** The output name of a classifier's class scores (the ONNX output name too). */
export const LOGITS = 'logits';

/** A named graph output (`logits`; a detector's `boxes`, `scores`) and the value it is. */
export interface GraphOutput {
  name: string;
  value: string;
}

export type ParamRole = 'conv.weight' | 'conv.bias' | 'bn.weight' | 'bn.bias' | 'linear.weight' | 'linear.bias';
export type BufferRole = 'bn.running_mean' | 'bn.running_var' | 'bn.num_batches_tracked';

export interface TensorSpec<R> {
  name: string;
  shape: readonly number[];
  role: R;
}

/** One row of the summary table: a Table-2 layer (stem, one bottleneck block, final conv, pool, classifier). */
export interface LayerRow {
  label: string;
  operator: string;
  t?: number;
  c?: number;
  n?: number;
  s?: number;
  inShape: readonly number[];
  outShape: readonly number[];
  /** Names of the nodes that make up this row. */
  nodes: string[];
}

export interface Graph<C extends BaseConfig = BaseConfig> {
  config: C;
  /** Name of the graph input value; its shape is [inChannels, resolution, resolution]. */
  input: string;
  inputShape: readonly number[];
  /** Named outputs, in order (a classifier: one, `logits`). */
  outputs: GraphOutput[];
  nodes: GraphNode[];
  params: TensorSpec<ParamRole>[];
  buffers: TensorSpec<BufferRole>[];
  layers: LayerRow[];
}

export function nodeParamCount(n: GraphNode): number {
  switch (n.op) {
    case 'conv':
      return n.outC * (n.inC / n.groups) * n.k * n.k + (n.bias ? n.outC : 0);
    case 'bn':
      return 2 * n.channels;
    case 'linear':
      return n.inF * n.outF + n.outF;
    default:
      return 0;
  }
}

/** Multiply-accumulates per image: convolutions and the classifier only (the paper's MAdds). */
export function nodeMacs(n: GraphNode): number {
  if (n.op === 'conv') {
    const [, h, w] = n.shape as [number, number, number];
    return h * w * n.outC * (n.inC / n.groups) * n.k * n.k;
  }
  if (n.op === 'linear') return n.inF * n.outF;
  return 0;
}

export function totalParams(g: Graph): number {
  return g.nodes.reduce((s, n) => s + nodeParamCount(n), 0);
}

export function totalMacs(g: Graph): number {
  return g.nodes.reduce((s, n) => s + nodeMacs(n), 0);
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Who reads each value (graph outputs are not nodes: see {@link isGraphOutput}). */
export function consumers<N extends { inputs: readonly string[] }>(graph: { nodes: readonly N[] }): Map<string, N[]> {
  const m = new Map<string, N[]>();
  for (const n of graph.nodes) for (const v of n.inputs) m.set(v, [...(m.get(v) ?? []), n]);
  return m;
}

export function isGraphOutput(graph: Pick<Graph, 'outputs'>, value: string): boolean {
  return graph.outputs.some((o) => o.value === value);
}

/** The node computing `value`, if a node does (the graph input has none). */
export function producer<N extends { output: string }>(graph: { nodes: readonly N[] }, value: string): N | undefined {
  return graph.nodes.find((n) => n.output === value);
}

/** The one output of a single-output graph (a classifier's logits). */
export function soleOutput(graph: Pick<Graph, 'outputs'>, what: string): GraphOutput {
  if (graph.outputs.length !== 1) throw new Error(`${what}: expects a graph with one output, this one has ${graph.outputs.length} (${graph.outputs.map((o) => o.name).join(', ')})`);
  return graph.outputs[0]!;
}
