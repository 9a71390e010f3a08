/**
 * Eval-mode folding, the one pass behind both the native inference program and the ONNX export: every conv
 * followed by its batch norm becomes one conv with a bias (w' = w * g / sqrt(var + eps) per output channel,
 * b' = beta + (b - mean) * g / sqrt(var + eps)), an activation that directly follows such a conv is fused into
 * it, and dropout disappears. The result is an engine-neutral graph with Float32Array weights.
 */
import {
  consumers, isGraphOutput,
  type BatchNormNode, type ConvNode, type DropoutNode, type EltwiseKind, type Graph, type GraphNode, type GraphOutput, type LinearNode,
} from './graph.js';
import type { StateDict } from './weights.js';

/** Conv with bias (BN folded in), optionally followed by an activation; geometry as the graph's conv. */
export interface FoldedConv extends Omit<ConvNode, 'bias'> {
  /** [outC, inC / groups, k, k], row-major (OIHW). */
  weight: Float32Array;
  /** [outC]. */
  bias: Float32Array;
  /** Name of the folded batch norm, if any. */
  bnName: string | null;
  /** Fused activation (applied after the bias), if any. */
  act: EltwiseKind | null;
  /** Name of the fused activation node, if any. */
  actName: string | null;
}

export interface FoldedLinear extends LinearNode {
  /** [outF, inF], row-major (PyTorch layout). */
  weight: Float32Array;
  /** [outF]. */
  bias: Float32Array;
}

/** Nodes that pass through folding unchanged (inputs renamed past removed dropouts). */
export type PassNode = Exclude<GraphNode, ConvNode | BatchNormNode | DropoutNode | LinearNode>;
export type FoldedNode = FoldedConv | FoldedLinear | PassNode;

export interface FoldedGraph {
  /** Input value name; shape per image `inputShape` ([C, H, W]). */
  input: string;
  inputShape: readonly number[];
  /** Named outputs, as the graph's (values renamed past removed dropouts). */
  outputs: GraphOutput[];
  /** The first output's value and shape (a classifier's logits). */
  output: string;
  outputShape: readonly number[];
  nodes: FoldedNode[];
}

function tensor(w: StateDict, name: string): Float32Array {
  const t = w.get(name);
  if (!t) throw new Error(`fold: missing weight ${name}`);
  return t;
}

export function foldConvBn(conv: ConvNode, bn: BatchNormNode, w: StateDict): { weight: Float32Array; bias: Float32Array } {
  const src = tensor(w, `${conv.name}.weight`);
  const convBias = conv.bias ? tensor(w, `${conv.name}.bias`) : undefined;
  const gamma = tensor(w, `${bn.name}.weight`);
  const beta = tensor(w, `${bn.name}.bias`);
  const mean = tensor(w, `${bn.name}.running_mean`);
  const variance = tensor(w, `${bn.name}.running_var`);
  const per = src.length / conv.outC;
  const weight = new Float32Array(src.length);
  const bias = new Float32Array(conv.outC);
  for (let o = 0; o < conv.outC; o++) {
    const s = gamma[o]! / Math.sqrt(variance[o]! + bn.eps);
    for (let i = o * per; i < (o + 1) * per; i++) weight[i] = src[i]! * s;
    bias[o] = beta[o]! + ((convBias?.[o] ?? 0) - mean[o]!) * s;
  }
  return { weight, bias };
}

function getTensor(weights: ReadonlyMap<string, Float32Array>, name: string, expected: number): Float32Array {
  const t = weights.get(name);
  if (!t) throw new Error(`foldBatchNorm: missing weight ${name}`);
  if (t.length !== expected) throw new Error(`foldBatchNorm: ${name} has ${t.length} elements, expected ${expected}`);
  return t;
}

/**
 * Fold every BN into its preceding conv (eval mode: running statistics), fuse activations that follow a conv,
 * drop dropout. Folded parameters are computed in float64 and stored as float32; the input weights are not
 * modified. Throws if a BN does not directly follow a conv whose output only feeds that BN.
 */
export function foldBatchNorm(graph: Graph, weights: StateDict): FoldedGraph {
  const users = consumers(graph);
  // A value can be folded into the node after it only when that node is its one reader.
  const soleReader = (v: string): boolean => (users.get(v)?.length ?? 0) === 1 && !isGraphOutput(graph, v);
  // Dropout is an alias: value name -> the value that carries it.
  const alias = new Map<string, string>();
  const resolve = (v: string): string => {
    let r = v;
    while (alias.has(r)) r = alias.get(r)!;
    return r;
  };

  const out: FoldedNode[] = [];
  // Folded convs by their current output value, while they can still absorb a BN / activation.
  const open = new Map<string, { fc: FoldedConv; src: ConvNode }>();

  for (const n of graph.nodes) {
    switch (n.op) {
      case 'conv': {
        const w = getTensor(weights, `${n.name}.weight`, n.outC * (n.inC / n.groups) * n.k * n.k);
        const bias = n.bias ? Float32Array.from(getTensor(weights, `${n.name}.bias`, n.outC)) : new Float32Array(n.outC);
        const { bias: _b, ...geometry } = n;
        // The caller's array until a BN replaces it with the folded one; convs without a BN get a copy at the end.
        const fc: FoldedConv = { ...geometry, inputs: n.inputs.map(resolve), weight: w, bias, bnName: null, act: null, actName: null };
        out.push(fc);
        open.set(fc.output, { fc, src: n });
        break;
      }
      case 'bn': {
        const x = n.inputs[0]!;
        const o = open.get(x);
        if (!o || o.fc.bnName !== null || o.fc.act !== null || !soleReader(x)) {
          throw new Error(
            `foldBatchNorm: batch norm ${n.name} does not directly follow a conv whose output feeds only it (input ${x}); ` +
              'a standalone batch norm cannot be folded',
          );
        }
        if (n.channels !== o.fc.outC) throw new Error(`foldBatchNorm: ${n.name} has ${n.channels} channels but conv ${o.fc.name} has ${o.fc.outC}`);
        for (const suffix of ['weight', 'bias', 'running_mean', 'running_var']) getTensor(weights, `${n.name}.${suffix}`, n.channels);
        const folded = foldConvBn(o.src, n, weights);
        Object.assign(o.fc, { weight: folded.weight, bias: folded.bias, bnName: n.name, output: n.output, shape: n.shape });
        open.delete(x);
        open.set(n.output, o);
        break;
      }
      case 'act': {
        const x = n.inputs[0]!;
        const o = open.get(x);
        if (o && o.fc.act === null && soleReader(x)) {
          Object.assign(o.fc, { act: n.kind, actName: n.name, output: n.output });
          open.delete(x);
          open.set(n.output, o);
        } else {
          out.push({ ...n, inputs: [resolve(x)] });
        }
        break;
      }
      case 'dropout':
        alias.set(n.output, n.inputs[0]!);
        break;
      case 'linear':
        out.push({
          ...n, inputs: n.inputs.map(resolve),
          weight: Float32Array.from(getTensor(weights, `${n.name}.weight`, n.inF * n.outF)),
          bias: Float32Array.from(getTensor(weights, `${n.name}.bias`, n.outF)),
        });
        break;
      case 'add':
        out.push({ ...n, inputs: [resolve(n.inputs[0]), resolve(n.inputs[1])] });
        break;
      default:
        out.push({ ...n, inputs: n.inputs.map(resolve) });
    }
  }
  for (const n of out) if (n.op === 'conv' && n.bnName === null) n.weight = n.weight.slice();
  const shapeOf = (v: string): readonly number[] => out.find((x) => x.output === v)?.shape ?? graph.inputShape;
  const outputs = graph.outputs.map((o) => ({ name: o.name, value: resolve(o.value) }));
  const first = outputs[0]?.value ?? graph.input;
  return { input: graph.input, inputShape: graph.inputShape, outputs, output: first, outputShape: shapeOf(first), nodes: out };
}
