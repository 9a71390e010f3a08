/**
 * Eval-mode batch-norm folding, shared by the native inference program and the ONNX export:
 * w' = w * g / sqrt(var + eps) per output channel, b' = beta + (b - mean) * g / sqrt(var + eps).
 */
import type { BatchNormNode, ConvNode, Graph } from './graph.js';
import type { StateDict } from './weights.js';

export interface FoldChain {
  conv: ConvNode;
  bn: BatchNormNode;
}

/** Every conv whose output feeds exactly one node, a batch norm. */
export function foldChains(graph: Graph): FoldChain[] {
  const readers = new Map<string, number>();
  for (const n of graph.nodes) for (const v of n.op === 'add' ? n.inputs : [n.input]) readers.set(v, (readers.get(v) ?? 0) + 1);
  const chains: FoldChain[] = [];
  for (const n of graph.nodes) {
    if (n.op !== 'bn') continue;
    const conv = graph.nodes.find((c) => c.output === n.input);
    if (conv?.op === 'conv' && readers.get(conv.output) === 1) chains.push({ conv, bn: n });
  }
  return chains;
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
