/**
 * Inference program from the folded graph (src/model/fold.ts: BN folded into the convs, activations fused,
 * dropout gone): each folded conv is one oneDNN conv with its activation as a post-op, and where possible the
 * 3x3 depthwise conv after a 1x1 expand conv and a residual add join it as further post-ops.
 */
import type { ActFormat, OpSpec, ProgramSpec } from './binding.js';
import { ProgramBuilder, convGeometry, dims4, networkInput, unsupported, valueShape, type Externals } from './plan.js';
import { consumers, isGraphOutput } from '../../model/graph.js';
import { isLayout, outputViews, padView, viewSpec } from './views.js';
import type { FoldedConv, FoldedGraph, FoldedNode } from '../../model/fold.js';

export const INFER_IO = {
  input: 'io.input',
  /** A graph output, [N, ...shape] plain, by output name (a classifier's `logits`, a detector's `boxes`). */
  output: (name: string) => `io.out.${name}`,
  /** The pooled features the classifier reads, [N, C] (what `embed` returns). */
  features: 'io.features',
  weight: (conv: string) => `fold.${conv}.weight`,
  bias: (conv: string) => `fold.${conv}.bias`,
} as const;

/** Writes the folded weights and biases of every conv and linear layer into `out` (arrays reused across calls). */
export function foldedWeights(fg: FoldedGraph, out: { ensure(name: string, n: number): Float32Array }): void {
  for (const n of fg.nodes) {
    if (n.op !== 'conv' && n.op !== 'linear') continue;
    out.ensure(INFER_IO.weight(n.name), n.weight.length).set(n.weight);
    out.ensure(INFER_IO.bias(n.name), n.bias.length).set(n.bias);
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
function fusableDepthwise(n: FoldedNode | undefined, inShape: readonly number[]): n is FoldedConv {
  if (n?.op !== 'conv' || n.k !== 3 || n.groups !== n.inC || n.inC !== n.outC) return false;
  const [t, l, b, r] = n.pads;
  const same = n.shape[1] === Math.ceil(inShape[1]! / n.stride) && n.shape[2] === Math.ceil(inShape[2]! / n.stride);
  return same && t === l && b === r && (n.stride === 1 ? t === 1 : n.stride === 2 && t <= 1);
}

export function buildInferProgram(fg: FoldedGraph, batch: number, ext: Externals, actFormat: ActFormat, opts: InferPlanOptions = {}): ProgramSpec {
  const b = new ProgramBuilder(actFormat);
  const seg: OpSpec[] = b.segment();
  const val = new Map<string, number>();
  const outputs = new Map(fg.outputs.map((o) => [o.name, b.plain([batch, ...valueShape(fg, o.value)], ext.get(INFER_IO.output(o.name)))] as const));
  const views = outputViews(fg, batch, (o) => outputs.get(o.name)!, (v) => valueShape(fg, v), 'native inference');

  const done = new Set<string>();
  const users = consumers(fg);
  const single = (v: string): FoldedNode | undefined => {
    const u = users.get(v) ?? [];
    return u.length === 1 && !isGraphOutput(fg, v) ? u[0] : undefined;
  };
  // Activation buffers are recycled once every reader of their value has been emitted; a value that layout
  // nodes read is copied into its windows of the outputs at once (views.ts), so those do not count.
  const reads = new Map<number, number>();
  const define = (value: string, id: number): void => {
    val.set(value, id);
    reads.set(id, (reads.get(id) ?? 0) + (users.get(value) ?? []).filter((u) => !isLayout(u)).length);
    for (const [i, v] of (views.get(value) ?? []).entries()) {
      seg.push({ op: 'reorder', name: `${value}.out${i}`, src: id, dst: v.buffer, dstView: viewSpec(padView(v, b.buffers[id]!.dims!.length)) });
    }
    if (reads.get(id) === 0) b.release(id);
  };
  const inDims = dims4(batch, fg.inputShape);
  define(fg.input, networkInput(b, seg, b.plain(inDims, ext.get(INFER_IO.input)), inDims));
  const doneReading = (...values: string[]): void => {
    for (const v of values) {
      const id = val.get(v)!;
      const left = reads.get(id)! - 1;
      reads.set(id, left);
      if (left === 0) b.release(id);
    }
  };
  const weights = (n: FoldedConv) => ({
    wei: b.plain([n.outC, n.inC / n.groups, n.k, n.k], ext.get(INFER_IO.weight(n.name))),
    bias: b.plain([n.outC], ext.get(INFER_IO.bias(n.name))),
  });

  for (const n of fg.nodes) {
    if (done.has(n.name)) continue;
    const outDims = dims4(batch, n.shape);
    switch (n.op) {
      case 'conv': {
        const post: Record<string, unknown>[] = n.act ? [{ kind: n.act }] : [];
        let out = n.output;
        // The conv whose output this primitive writes: `n`, or the depthwise conv fused into it.
        let last: FoldedConv = n;
        const dw = single(out);
        if (opts.fuseDepthwise !== false && n.k === 1 && n.stride === 1 && n.groups === 1 && n.pads.every((p) => p === 0) && fusableDepthwise(dw, n.shape)) {
          post.push({ kind: 'dw', stride: dw.stride, pad: dw.pads[0], ...weights(dw) });
          if (dw.act) post.push({ kind: dw.act });
          done.add(dw.name);
          out = dw.output;
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
        seg.push({ op: 'conv', name: n.name, src: val.get(n.inputs[0]!)!, dst: y, train: false, ...convGeometry(n), ...weights(n), post });
        define(out, y);
        doneReading(n.inputs[0]!, ...(other === undefined ? [] : [other]));
        break;
      }
      case 'act': {
        const y = b.temp(outDims);
        seg.push({ op: 'eltwise', name: n.name, kind: n.kind, src: val.get(n.inputs[0]!)!, dst: y });
        define(n.output, y);
        doneReading(n.inputs[0]!);
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
        seg.push({ op: 'pool', name: n.name, src: val.get(n.inputs[0]!)!, dst: y });
        seg.push({ op: 'reorder', name: `${n.name}.features`, src: y, dst: b.plain(outDims, ext.get(INFER_IO.features)) });
        define(n.output, y);
        doneReading(n.inputs[0]!);
        break;
      }
      case 'linear': {
        const out = fg.outputs.find((o) => o.value === n.output);
        if (!out || users.has(n.output)) throw new Error(`native inference: linear ${n.name} must compute a graph output that no other node reads`);
        const y = outputs.get(out.name)!;
        seg.push({
          op: 'ip', name: n.name, src: val.get(n.inputs[0]!)!, dst: y,
          wei: b.plain([n.outF, n.inF, 1, 1], ext.get(INFER_IO.weight(n.name))),
          bias: b.plain([n.outF], ext.get(INFER_IO.bias(n.name))),
        });
        val.set(n.output, y);
        doneReading(n.inputs[0]!);
        break;
      }
      case 'transpose':
      case 'reshape':
      case 'concat':
        break; // views onto the outputs (define)
      default:
        throw unsupported(n, 'native inference');
    }
  }
  return { ...b.spec(), cacheWeights: true };
}
