/**
 * The layer graph every engine consumes: nodes in topological order, each with its output shape and the
 * PyTorch state-dict prefix of its parameters. Shapes are per image, [C, H, W] (or [F] after pooling).
 */
import type { BaseConfig } from './family.js';

export type ActivationKind = 'relu' | 'relu6';

/** [top, left, bottom, right] zero padding. */
export type Pads = readonly [number, number, number, number];

interface NodeBase {
  /** Unique name; for nodes with parameters, the state-dict prefix (`features.3.conv.1.0`). */
  name: string;
  /** Output value name (the node's name). */
  output: string;
  /** Output shape per image. */
  shape: readonly number[];
}
export interface ConvNode extends NodeBase {
  op: 'conv';
  input: string;
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
  input: string;
  channels: number;
  eps: number;
}
export interface ActNode extends NodeBase {
  op: 'act';
  kind: ActivationKind;
  input: string;
}
export interface AddNode extends NodeBase {
  op: 'add';
  inputs: readonly [string, string];
}
/** Global average pooling: [C, H, W] -> [C]. */
export interface PoolNode extends NodeBase {
  op: 'avgpool';
  input: string;
}
export interface DropoutNode extends NodeBase {
  op: 'dropout';
  input: string;
  p: number;
}
export interface LinearNode extends NodeBase {
  op: 'linear';
  input: string;
  inF: number;
  outF: number;
}
export type GraphNode = ConvNode | BatchNormNode | ActNode | AddNode | PoolNode | DropoutNode | LinearNode;

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
  output: string;
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
