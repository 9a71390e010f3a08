/**
 * Inference program: every conv -> BN [-> activation] [-> residual add] chain becomes one oneDNN conv with
 * the BN folded into its weights and bias and the rest as post-ops. Dropout is the identity in eval mode.
 */
import type { ActFormat, OpSpec, ProgramSpec } from './binding.js';
import { ProgramBuilder, consumers, convGeometry, dims4, networkInput, type Externals } from './plan.js';
import type { ConvNode, Graph, GraphNode } from '../../model/graph.js';
import type { StateDict } from '../../model/weights.js';
import { foldConvBn, foldChains } from '../../model/fold.js';

export const INFER_IO = {
  input: 'io.input',
  logits: 'io.logits',
  /** The pooled features the classifier reads, [N, C] (what `embed` returns). */
  features: 'io.features',
  weight: (conv: string) => `fold.${conv}.weight`,
  bias: (conv: string) => `fold.${conv}.bias`,
} as const;

/** Writes the folded conv weights/biases of every chain into `out` (arrays reused across calls). */
export function foldedWeights(graph: Graph, weights: StateDict, out: { ensure(name: string, n: number): Float32Array }): void {
  for (const ch of foldChains(graph)) {
    const { weight, bias } = foldConvBn(ch.conv, ch.bn, weights);
    out.ensure(INFER_IO.weight(ch.conv.name), weight.length).set(weight);
    out.ensure(INFER_IO.bias(ch.conv.name), bias.length).set(bias);
  }
}

export interface InferPlanOptions {
  /**
   * Fuse each 1x1 expand conv with the 3x3 depthwise conv after it (oneDNN's depthwise post-op), so the
   * expanded activation never goes to memory. Default true; false keeps one primitive per conv.
   */
  fuseDepthwise?: boolean;
}

/** A depthwise 3x3 conv whose padding oneDNN's fused depthwise post-op reproduces ('same'-shaped output). */
function fusableDepthwise(n: GraphNode | undefined, inShape: readonly number[]): n is ConvNode {
  if (n?.op !== 'conv' || n.k !== 3 || n.groups !== n.inC || n.inC !== n.outC) return false;
  const [t, l, b, r] = n.pads;
  const same = n.shape[1] === Math.ceil(inShape[1]! / n.stride) && n.shape[2] === Math.ceil(inShape[2]! / n.stride);
  return same && t === l && b === r && (n.stride === 1 ? t === 1 : n.stride === 2 && t <= 1);
}

export function buildInferProgram(graph: Graph, batch: number, ext: Externals, actFormat: ActFormat, opts: InferPlanOptions = {}): ProgramSpec {
  const b = new ProgramBuilder(actFormat);
  const seg: OpSpec[] = b.segment();
  const val = new Map<string, number>();
  const inDims = dims4(batch, graph.inputShape);
  val.set(graph.input, networkInput(b, seg, b.plain(inDims, ext.get(INFER_IO.input)), inDims));

  const chains = new Map(foldChains(graph).map((c) => [c.conv.name, c]));
  const done = new Set<string>();
  const users = consumers(graph);
  const single = (v: string): GraphNode | undefined => {
    const u = users.get(v) ?? [];
    return u.length === 1 ? u[0] : undefined;
  };
  // Activation buffers are recycled once every reader of their value has been emitted.
  const reads = new Map<number, number>();
  const define = (value: string, id: number): void => {
    val.set(value, id);
    reads.set(id, (reads.get(id) ?? 0) + (users.get(value)?.length ?? 0));
  };
  const doneReading = (...values: string[]): void => {
    for (const v of values) {
      const id = val.get(v)!;
      const left = reads.get(id)! - 1;
      reads.set(id, left);
      if (left === 0) b.release(id);
    }
  };

  for (const n of graph.nodes) {
    if (done.has(n.name)) continue;
    const outDims = dims4(batch, n.shape);
    switch (n.op) {
      case 'conv': {
        const ch = chains.get(n.name);
        if (!ch) throw new Error(`inference plan: conv ${n.name} is not followed by a batch norm`);
        const post: Record<string, unknown>[] = [];
        // conv -> BN [-> act]: the BN is folded into the weights, the activation becomes a post-op.
        const absorbChain = (conv: ConvNode): string => {
          const bn = chains.get(conv.name)!.bn;
          done.add(bn.name);
          const act = single(bn.output);
          if (act?.op !== 'act') return bn.output;
          post.push({ kind: act.kind });
          done.add(act.name);
          return act.output;
        };
        let out = absorbChain(n);
        // The conv whose output this primitive writes: `n`, or the depthwise conv fused into it.
        let last: ConvNode = n;
        const dw = single(out);
        if (opts.fuseDepthwise !== false && n.k === 1 && n.stride === 1 && n.groups === 1 && n.pads.every((p) => p === 0) &&
            chains.has(dw?.name ?? '') && fusableDepthwise(dw, n.shape)) {
          post.push({
            kind: 'dw', stride: dw.stride, pad: dw.pads[0],
            wei: b.plain([dw.outC, 1, 3, 3], ext.get(INFER_IO.weight(dw.name))),
            bias: b.plain([dw.outC], ext.get(INFER_IO.bias(dw.name))),
          });
          done.add(dw.name);
          out = absorbChain(dw);
          last = dw;
        }
        // A residual add joins as a post-op when its other operand is already computed (and no depthwise
        // post-op precedes it: oneDNN allows only eltwise post-ops after one).
        const add = single(out);
        let other: string | undefined;
        if (add?.op === 'add' && last === n) {
          const o = add.inputs[0] === out ? add.inputs[1] : add.inputs[0];
          if (val.has(o)) {
            other = o;
            post.push({ kind: 'add', src: val.get(o) });
            done.add(add.name);
            out = add.output;
          }
        }
        const y = b.temp(dims4(batch, last.shape));
        seg.push({
          op: 'conv', name: n.name, src: val.get(n.input)!, dst: y, train: false, ...convGeometry(n),
          wei: b.plain([n.outC, n.inC / n.groups, n.k, n.k], ext.get(INFER_IO.weight(n.name))),
          bias: b.plain([n.outC], ext.get(INFER_IO.bias(n.name))),
          post,
        });
        define(out, y);
        doneReading(n.input, ...(other === undefined ? [] : [other]));
        break;
      }
      case 'act': {
        const y = b.temp(outDims);
        seg.push({ op: 'eltwise', name: n.name, kind: n.kind, src: val.get(n.input)!, dst: y });
        define(n.output, y);
        doneReading(n.input);
        break;
      }
      case 'add': {
        const y = b.temp(outDims);
        seg.push({ op: 'add', name: n.name, a: val.get(n.inputs[0])!, b: val.get(n.inputs[1])!, dst: y });
        define(n.output, y);
        doneReading(...n.inputs);
        break;
      }
      case 'avgpool': {
        const y = b.temp(outDims);
        seg.push({ op: 'pool', name: n.name, src: val.get(n.input)!, dst: y });
        seg.push({ op: 'reorder', name: `${n.name}.features`, src: y, dst: b.plain(outDims, ext.get(INFER_IO.features)) });
        define(n.output, y);
        doneReading(n.input);
        break;
      }
      case 'dropout':
        define(n.output, val.get(n.input)!);
        doneReading(n.input);
        break;
      case 'linear': {
        const y = b.plain([batch, n.outF], ext.get(INFER_IO.logits));
        seg.push({
          op: 'ip', name: n.name, src: val.get(n.input)!, dst: y,
          wei: b.plain([n.outF, n.inF, 1, 1], ext.get(`${n.name}.weight`)),
          bias: b.plain([n.outF], ext.get(`${n.name}.bias`)),
        });
        val.set(n.output, y);
        doneReading(n.input);
        break;
      }
      case 'bn':
        throw new Error(`inference plan: batch norm ${n.name} does not follow a conv`);
    }
  }
  return { ...b.spec(), cacheWeights: true };
}
