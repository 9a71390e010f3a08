/**
 * Eval-mode graph folding: every conv followed by its batch norm becomes one conv with a bias, activations
 * that directly follow such a conv are fused into it, and dropout disappears. The result is an engine-neutral
 * list of fused layers (plain data + Float32Array weights) consumed by the ONNX exporter and usable by any
 * inference engine.
 */
import type { ActivationKind } from '../../model/config.js';
import { foldConvBn } from '../../model/fold.js';
import type { ConvNode, Graph, GraphNode } from '../../model/graph.js';
import type { StateDict } from '../../model/weights.js';

interface FoldedBase {
  /** Name of the first source node (for a conv: the conv's state-dict prefix). */
  name: string;
  /** Output value name: the name of the last source node folded into this layer. */
  output: string;
  /** Output shape per image ([C, H, W] or [F]). */
  shape: readonly number[];
}

/** Conv with bias (BN folded in), optionally followed by an activation; geometry as the graph's conv. */
export interface FoldedConv extends Omit<ConvNode, 'bias'> {
  /** [outC, inC / groups, k, k], row-major (OIHW). */
  weight: Float32Array;
  /** [outC]. */
  bias: Float32Array;
  /** Name of the folded batch norm, if any. */
  bnName: string | null;
  /** Fused activation (applied after the bias), if any. */
  act: ActivationKind | null;
  /** Name of the fused activation node, if any. */
  actName: string | null;
}

/** A standalone activation (only when it cannot be fused into the preceding conv). */
export interface FoldedAct extends FoldedBase {
  op: 'act';
  input: string;
  kind: ActivationKind;
}

export interface FoldedAdd extends FoldedBase {
  op: 'add';
  inputs: readonly [string, string];
}

/** Global average pool: [C, H, W] -> [C]. */
export interface FoldedPool extends FoldedBase {
  op: 'avgpool';
  input: string;
}

export interface FoldedLinear extends FoldedBase {
  op: 'linear';
  input: string;
  inF: number;
  outF: number;
  /** [outF, inF], row-major (PyTorch layout). */
  weight: Float32Array;
  /** [outF]. */
  bias: Float32Array;
}

export type FoldedNode = FoldedConv | FoldedAct | FoldedAdd | FoldedPool | FoldedLinear;

export interface FoldedGraph {
  /** Input value name; shape per image `inputShape` ([C, H, W]). */
  input: string;
  inputShape: readonly number[];
  /** Output value name; shape per image [numClasses]. */
  output: string;
  outputShape: readonly number[];
  nodes: FoldedNode[];
}

function nodeInputs(n: GraphNode): readonly string[] {
  return n.op === 'add' ? n.inputs : [n.input];
}

function getTensor(weights: ReadonlyMap<string, Float32Array>, name: string, expected: number): Float32Array {
  const t = weights.get(name);
  if (!t) throw new Error(`foldBatchNorm: missing weight ${name}`);
  if (t.length !== expected) throw new Error(`foldBatchNorm: ${name} has ${t.length} elements, expected ${expected}`);
  return t;
}

/**
 * Fold every BN into its preceding conv (eval mode: running statistics), fuse activations that follow a conv,
 * drop dropout. Computes the folded parameters in float64 and stores them as float32 (the arithmetic is
 * `foldConvBn` from src/model/fold.ts, shared with the native engine). The input weights are
 * not modified. Throws if a BN does not directly follow a conv whose output only feeds that BN.
 */
export function foldBatchNorm(graph: Graph, weights: StateDict): FoldedGraph {
  // Consumers of each value (the graph output counts as one).
  const consumers = new Map<string, number>();
  const use = (v: string): void => {
    consumers.set(v, (consumers.get(v) ?? 0) + 1);
  };
  for (const n of graph.nodes) for (const v of nodeInputs(n)) use(v);
  use(graph.output);

  // Dropout (and anything folded away) is an alias: value name -> the value that carries it.
  const alias = new Map<string, string>();
  const resolve = (v: string): string => {
    let r = v;
    while (alias.has(r)) r = alias.get(r)!;
    return r;
  };

  const out: FoldedNode[] = [];
  // Folded conv layers by their current output value, while they can still absorb a BN / activation.
  const openConv = new Map<string, FoldedConv>();
  const convSource = new Map<FoldedConv, ConvNode>();

  for (const n of graph.nodes) {
    switch (n.op) {
      case 'conv': {
        const wSize = n.outC * (n.inC / n.groups) * n.k * n.k;
        const w = getTensor(weights, `${n.name}.weight`, wSize);
        const bias = n.bias ? Float32Array.from(getTensor(weights, `${n.name}.bias`, n.outC)) : new Float32Array(n.outC);
        const fc: FoldedConv = {
          op: 'conv', name: n.name, output: n.output, shape: n.shape, input: resolve(n.input),
          inC: n.inC, outC: n.outC, k: n.k, stride: n.stride, pads: n.pads, groups: n.groups,
          weight: Float32Array.from(w), bias, bnName: null, act: null, actName: null,
        };
        out.push(fc);
        convSource.set(fc, n);
        openConv.set(fc.output, fc);
        break;
      }
      case 'bn': {
        const src = resolve(n.input);
        const fc = openConv.get(src);
        if (!fc || fc.bnName !== null || fc.act !== null || fc.output !== n.input || (consumers.get(n.input) ?? 0) !== 1) {
          throw new Error(
            `foldBatchNorm: batch norm ${n.name} does not directly follow a conv whose output feeds only it (input ${n.input}); ` +
              'a standalone batch norm cannot be folded',
          );
        }
        const c = n.channels;
        if (c !== fc.outC) throw new Error(`foldBatchNorm: ${n.name} has ${c} channels but conv ${fc.name} has ${fc.outC}`);
        for (const suffix of ['weight', 'bias', 'running_mean', 'running_var']) getTensor(weights, `${n.name}.${suffix}`, c);
        // The shared float64 folding arithmetic (also used by the native engine), from the original conv weights.
        const folded = foldConvBn(convSource.get(fc)!, n, weights);
        fc.weight = folded.weight;
        fc.bias = folded.bias;
        fc.bnName = n.name;
        openConv.delete(fc.output);
        fc.output = n.output;
        fc.shape = n.shape;
        openConv.set(fc.output, fc);
        break;
      }
      case 'act': {
        const src = resolve(n.input);
        const fc = openConv.get(src);
        if (fc && fc.act === null && fc.output === n.input && (consumers.get(n.input) ?? 0) === 1) {
          fc.act = n.kind;
          fc.actName = n.name;
          openConv.delete(fc.output);
          fc.output = n.output;
          openConv.set(fc.output, fc);
        } else {
          out.push({ op: 'act', name: n.name, output: n.output, shape: n.shape, input: src, kind: n.kind });
        }
        break;
      }
      case 'add':
        out.push({ op: 'add', name: n.name, output: n.output, shape: n.shape, inputs: [resolve(n.inputs[0]), resolve(n.inputs[1])] });
        break;
      case 'avgpool':
        out.push({ op: 'avgpool', name: n.name, output: n.output, shape: n.shape, input: resolve(n.input) });
        break;
      case 'dropout':
        alias.set(n.output, n.input);
        break;
      case 'linear':
        out.push({
          op: 'linear', name: n.name, output: n.output, shape: n.shape, input: resolve(n.input), inF: n.inF, outF: n.outF,
          weight: Float32Array.from(getTensor(weights, `${n.name}.weight`, n.inF * n.outF)),
          bias: Float32Array.from(getTensor(weights, `${n.name}.bias`, n.outF)),
        });
        break;
      default: {
        const never: never = n;
        throw new Error(`foldBatchNorm: unknown node ${JSON.stringify(never)}`);
      }
    }
  }
  const output = resolve(graph.output);
  const last = out.find((x) => x.output === output);
  return {
    input: graph.input,
    inputShape: graph.inputShape,
    output,
    outputShape: last ? last.shape : graph.inputShape,
    nodes: out,
  };
}

/** Number of parameters (weights + biases) of a folded graph. */
export function foldedParamCount(fg: FoldedGraph): number {
  let s = 0;
  for (const n of fg.nodes) if (n.op === 'conv' || n.op === 'linear') s += n.weight.length + n.bias.length;
  return s;
}
