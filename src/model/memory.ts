/**
 * Peak activation memory of a layer graph, as MobileNetV2 (Sandler et al. 2018) §5.1 and Table 3 count it: the
 * network is a DAG of operations, and what must be held in memory is the largest total of the tensors an
 * operation reads and writes. Tensors internal to an operation need not be materialised whole: the inverted
 * residual block is one operation whose expanded tensor can be computed in t splits.
 *
 * Definition (what is materialised, from the graph alone):
 *  - The graph input and outputs are materialised.
 *  - Inside an inverted-residual block (a summary row with an expansion factor t: Table 2's bottleneck), a value
 *    read only by nodes of the same block is inner: the expand conv's and the depthwise conv's outputs, BN and
 *    activation outputs, a projection shortcut. The block's output is materialised, and so is any value that is
 *    read outside its block (the 'expansion' shortcut ablation's expanded tensor, SSDLite's block-14 feature map).
 *  - Elsewhere a value read only by an elementwise node (BN, activation, dropout) is fused into its producer, as
 *    every inference engine (and this project's BN folding) does: conv → BN → ReLU6 writes one tensor.
 *  - Reshape and transpose outputs are views folded into their consumer (SSDLite's predictor outputs are read by
 *    the concats in place).
 *  - Every other node output is materialised: MobileNetV1's every depthwise and pointwise output, the stem, the
 *    last 1×1 conv, the pooled features, the logits.
 * Operations are then the connected groups of nodes joined by inner values; an operation's memory is the sum of
 * its distinct materialised inputs and outputs.
 *
 * The paper's convention for MobileNetV2 (Table 3's 200K): the stem's output feeds a first block with t = 1 and no
 * expand conv, so stem conv + first depthwise conv act as that block's expand + depthwise pair, and the stem's
 * 32-channel output is the block's inner tensor. {@link memoryReport} gives that figure beside the plain one.
 */
import { consumers, isGraphOutput, numel, producer, type Graph, type GraphNode } from './graph.js';

/** Table 3 counts 16-bit activations. */
export const FP16_BYTES = 2;

/** The largest materialised tensor at one spatial size. */
export interface ResolutionPeak {
  /** `HxW` of a [C, H, W] tensor; `1x1` for a [C] vector (pooled features, logits); `other` for any other rank. */
  size: string;
  /** C of [C, H, W] or [C]; null for other ranks. */
  channels: number | null;
  elements: number;
  bytes: number;
  /** The value (node output name) that is this tensor. */
  value: string;
  shape: number[];
}

export interface TensorSize {
  value: string;
  shape: number[];
  elements: number;
}

/** One operation of the §5.1 count: the summary rows its nodes belong to, its materialised inputs and outputs. */
export interface Operation {
  layers: string[];
  inputs: TensorSize[];
  outputs: TensorSize[];
  /** Inputs + outputs. */
  elements: number;
  bytes: number;
}

export interface ActivationMemory {
  /** In order of first appearance in the graph (the input first). */
  perResolution: ResolutionPeak[];
  /** The largest materialised tensor (Table 3's "max"). */
  peak: ResolutionPeak;
  /** The operation with the largest inputs + outputs (§5.1's memory bound). */
  largestOperation: Operation;
}

export interface MemoryReport extends ActivationMemory {
  /** The same count with the stem fused into a first t = 1 block that has no expand conv; null where there is none. */
  stemFused: ActivationMemory | null;
}

const ELEMENTWISE = new Set<GraphNode['op']>(['bn', 'act', 'dropout']);
const VIEWS = new Set<GraphNode['op']>(['reshape', 'transpose']);

/** The plain count and, where it applies, the paper's fused-stem convention. */
export function memoryReport(graph: Graph): MemoryReport {
  const rows = new Map(graph.layers.flatMap((l, i) => l.nodes.map((n) => [n, i] as const)));
  // The paper's convention: the stem's nodes count as members of the first block.
  const stemFused = fusibleStem(graph) ? activationMemory(graph, new Map([...rows].map(([n, r]) => [n, r === 0 ? 1 : r]))) : null;
  return { ...activationMemory(graph, rows), stemFused };
}

/** A stem row followed by a t = 1 block whose first node is a depthwise conv on the stem's output. */
function fusibleStem(graph: Graph): boolean {
  const [stem, block] = graph.layers;
  if (!stem || stem.t !== undefined || block?.t !== 1) return false;
  const first = producer(graph, block.nodes[0]!);
  return first?.op === 'conv' && first.groups > 1 && first.groups === first.inC && first.inputs[0] === stem.nodes.at(-1);
}

/** The count with `rows` (node name → summary row index) deciding block membership. */
function activationMemory(graph: Graph, rows: ReadonlyMap<string, number>): ActivationMemory {
  const readers = consumers(graph);
  const blockOf = (name: string): number | undefined => {
    const r = rows.get(name);
    return r !== undefined && graph.layers[r]!.t !== undefined ? r : undefined;
  };
  const inner = (n: GraphNode): boolean => {
    if (isGraphOutput(graph, n.output)) return false;
    if (VIEWS.has(n.op)) return true;
    const rs = readers.get(n.output) ?? [];
    const block = blockOf(n.name);
    if (block !== undefined && rs.every((r) => blockOf(r.name) === block)) return true;
    return rs.length === 1 && ELEMENTWISE.has(rs[0]!.op);
  };

  const innerValues = new Set(graph.nodes.filter(inner).map((n) => n.output));
  const materialised = [tensor(graph.input, graph.inputShape), ...graph.nodes.filter((n) => !innerValues.has(n.output)).map((n) => tensor(n.output, n.shape))];
  const perResolution = new Map<string, ResolutionPeak>();
  for (const t of materialised) {
    const p = resolutionPeak(t);
    if (p.elements > (perResolution.get(p.size)?.elements ?? -1)) perResolution.set(p.size, p);
  }
  const peaks = [...perResolution.values()];
  const peak = peaks.reduce((a, b) => (b.elements > a.elements ? b : a));
  return { perResolution: peaks, peak, largestOperation: largestOperation(graph, innerValues) };
}

function tensor(value: string, shape: readonly number[]): TensorSize {
  return { value, shape: [...shape], elements: numel(shape) };
}

function resolutionPeak(t: TensorSize): ResolutionPeak {
  const [c, h, w] = t.shape;
  const size = t.shape.length === 3 ? `${h}x${w}` : t.shape.length === 1 ? '1x1' : 'other';
  const channels = t.shape.length === 3 || t.shape.length === 1 ? c! : null;
  return { size, channels, elements: t.elements, bytes: t.elements * FP16_BYTES, value: t.value, shape: t.shape };
}

/** Groups nodes joined by inner values (union-find) and returns the group with the largest inputs + outputs. */
function largestOperation(graph: Graph, innerValues: ReadonlySet<string>): Operation {
  const index = new Map(graph.nodes.map((n, i) => [n.output, i]));
  const parent = graph.nodes.map((_, i) => i);
  const root = (i: number): number => (parent[i] === i ? i : (parent[i] = root(parent[i]!)));
  graph.nodes.forEach((n, i) => {
    for (const v of n.inputs) if (innerValues.has(v)) parent[root(i)] = root(index.get(v)!);
  });

  const groups = new Map<number, GraphNode[]>();
  graph.nodes.forEach((n, i) => {
    const g = groups.get(root(i));
    if (g) g.push(n);
    else groups.set(root(i), [n]);
  });
  const label = new Map(graph.layers.flatMap((l) => l.nodes.map((n) => [n, l.label] as const)));
  const shapeOf = (v: string): readonly number[] => (v === graph.input ? graph.inputShape : graph.nodes[index.get(v)!]!.shape);
  let best: Operation | undefined;
  for (const nodes of groups.values()) {
    const own = new Set(nodes.map((n) => n.output));
    const inputs = [...new Set(nodes.flatMap((n) => n.inputs))].filter((v) => !own.has(v)).map((v) => tensor(v, shapeOf(v)));
    const outputs = nodes.filter((n) => !innerValues.has(n.output)).map((n) => tensor(n.output, n.shape));
    const elements = [...inputs, ...outputs].reduce((s, t) => s + t.elements, 0);
    if (best && elements <= best.elements) continue;
    const layers = [...new Set(nodes.flatMap((n) => label.get(n.name) ?? []))];
    best = { layers, inputs, outputs, elements, bytes: elements * FP16_BYTES };
  }
  return best!;
}
