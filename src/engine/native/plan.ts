/**
 * Turns the layer graph into native programs: a training program (forward with batch statistics, then a
 * backward segment) and an inference program (BN folded into convs, activations and residual adds as conv
 * post-ops). Each op's backward is written next to its forward. Buffers are numbered here; gradient buffers
 * are recycled as soon as their last reader has been emitted.
 */
import type { ActFormat, BufferSpec, OpSpec, ProgramSpec } from './binding.js';
import { consumers, isGraphOutput, producer, type Graph, type GraphOutput } from '../../model/graph.js';
import { outputViews, padView, viewSpec } from './views.js';

/** The caller-owned arrays a program reads and writes, by name. */
export interface Externals {
  get(name: string): Float32Array;
}

export class ProgramBuilder {
  readonly buffers: BufferSpec[] = [];
  readonly segments: OpSpec[][] = [];
  private free = new Map<string, number[]>();
  private refs = new Map<number, number>();
  /** Elements of each arena's largest member, and the arenas no live buffer holds. */
  private arenaSize: number[] = [];
  private freeArenas: number[] = [];

  constructor(readonly actFormat: ActFormat) {}

  segment(): OpSpec[] {
    const s: OpSpec[] = [];
    this.segments.push(s);
    return s;
  }

  act(dims: number[]): number {
    this.buffers.push({ layout: 'act', dims });
    return this.buffers.length - 1;
  }

  plain(dims: number[], data?: Float32Array): number {
    this.buffers.push(data ? { layout: 'plain', dims, data } : { layout: 'plain', dims });
    return this.buffers.length - 1;
  }

  ws(): number {
    this.buffers.push({ layout: 'ws' });
    return this.buffers.length - 1;
  }

  /**
   * A recyclable act buffer (for gradients). It starts with one reference, held by the caller; the last release
   * frees its memory for the next temp. Buffers whose channels fill the layout's blocks share arenas of any
   * shape (the smallest free one that holds it, else the largest, which grows): gradient memory is then about
   * the largest set live at once, not one buffer per shape. The others are reused at the same dims only.
   */
  temp(dims: number[]): number {
    if (dims[1]! % channelBlock(this.actFormat) !== 0) {
      const id = this.free.get(dims.join('x'))?.pop() ?? this.act(dims);
      this.refs.set(id, 1);
      return id;
    }
    const need = dims.reduce((a, d) => a * d, 1);
    const size = (a: number): number => this.arenaSize[a]!;
    const fits = this.freeArenas.filter((a) => size(a) >= need).sort((p, q) => size(p) - size(q));
    const best = fits[0] ?? [...this.freeArenas].sort((p, q) => size(q) - size(p))[0];
    const arena = best ?? this.arenaSize.push(0) - 1;
    if (best !== undefined) this.freeArenas.splice(this.freeArenas.indexOf(best), 1);
    this.arenaSize[arena] = Math.max(this.arenaSize[arena]!, need);
    this.buffers.push({ layout: 'act', dims, arena });
    const id = this.buffers.length - 1;
    this.refs.set(id, 1);
    return id;
  }

  /** One more holder of a temp buffer. */
  retain(id: number): void {
    const r = this.refs.get(id);
    if (r !== undefined) this.refs.set(id, r + 1);
  }

  /** A holder is done; a temp buffer nobody holds returns to the free list. */
  release(id: number): void {
    const r = this.refs.get(id);
    if (r === undefined) return;
    if (r > 1) {
      this.refs.set(id, r - 1);
      return;
    }
    this.refs.delete(id);
    const arena = this.buffers[id]!.arena;
    if (arena !== undefined) {
      this.freeArenas.push(arena);
      return;
    }
    const key = this.buffers[id]!.dims!.join('x');
    const list = this.free.get(key) ?? [];
    list.push(id);
    this.free.set(key, list);
  }

  spec(): ProgramSpec {
    return { actFormat: this.actFormat, buffers: this.buffers, segments: this.segments };
  }
}

/** Channels per block of an activation layout: a channel count that is not a multiple is padded. */
function channelBlock(f: ActFormat): number {
  return f === 'nChw16c' ? 16 : f === 'nChw8c' ? 8 : 1;
}

/**
 * The value the stem conv reads: with blocked activations oneDNN's first-layer kernels read plain NCHW
 * directly; with channels-last they do not (a reference kernel would run), so the input is reordered first.
 */
export function networkInput(b: ProgramBuilder, seg: OpSpec[], plain: number, dims: number[]): number {
  if (b.actFormat !== 'nhwc') return plain;
  const act = b.act(dims);
  seg.push({ op: 'reorder', name: 'input', src: plain, dst: act });
  return act;
}

export function convGeometry(n: { pads: readonly number[]; stride: number; groups: number }): Record<string, unknown> {
  const [pt, pl, pb, pr] = n.pads;
  return { stride: [n.stride, n.stride], padL: [pt, pl], padR: [pb, pr], groups: n.groups };
}

/** 4-D dims of a value for a batch: [N, C, H, W], with pooled vectors as [N, C, 1, 1]. */
export function dims4(batch: number, shape: readonly number[]): number[] {
  return shape.length === 3 ? [batch, ...shape] : [batch, shape[0]!, 1, 1];
}

/** Per-image shape of a value (the graph input's, or its producer's). */
export function valueShape(graph: { input: string; inputShape: readonly number[]; nodes: readonly { output: string; shape: readonly number[] }[] }, value: string): readonly number[] {
  if (value === graph.input) return graph.inputShape;
  const n = producer(graph, value);
  if (!n) throw new Error(`native plan: no node computes ${value}`);
  return n.shape;
}

/** The error for a node the native engine has no primitive for yet (ONNX Runtime runs it). */
export function unsupported(n: { op: string; name: string }, what: string): Error {
  return new Error(`${what}: the native engine does not run ${n.op} nodes yet (${n.name}); export the model to ONNX and use --engine ort`);
}

/** Names of the per-step arrays a training program exchanges with TypeScript. */
export const TRAIN_IO = {
  input: 'io.input',
  /** A graph output, [N, ...shape] plain, by output name; and the gradient the task writes for it. */
  output: (name: string) => `io.out.${name}`,
  outputGrad: (name: string) => `io.dout.${name}`,
  dinput: 'io.dinput',
  batchMean: (bn: string) => `stat.${bn}.mean`,
  batchVar: (bn: string) => `stat.${bn}.var`,
  grad: (param: string) => `grad.${param}`,
  mask: (node: string) => `mask.${node}`,
  /** A fake-quantized value's observer state: [min, max, averaging constant, scale, zero point]. */
  fakeQuant: (value: string) => `fq.${value}`,
} as const;

/** What quantization-aware training changes in a training program (src/quant/qat.ts). */
export interface TrainQuant {
  /**
   * Graph values fake-quantized per tensor to uint8 where they are computed (in place; the gradient passes
   * straight through where the value was inside the range, zero elsewhere), each with its observer state
   * `TRAIN_IO.fakeQuant(value)`. The weights are fake-quantized by the caller, in the arrays the program reads.
   */
  fakeQuant: readonly string[];
  /** Batch norms normalize with their running statistics, as constants (BN folded, statistics frozen). */
  frozenBn: boolean;
}

/**
 * Training program. Segment 0: forward with batch statistics (BN batch mean/var written to `stat.*`).
 * Segment 1: backward seeded from the gradients of the graph outputs (`io.dout.<name>`, written by the task
 * between the segments), writing `grad.*` (and `io.dinput` when inputGrad is set).
 */
export function buildTrainProgram(graph: Graph, batch: number, ext: Externals, actFormat: ActFormat, inputGrad: boolean, quant?: TrainQuant): ProgramSpec {
  if (quant?.fakeQuant.length && inputGrad) throw new Error('native training: quantization-aware training has no input gradient');
  const b = new ProgramBuilder(actFormat);
  const fwd = b.segment();
  const bwd = b.segment();
  const users = consumers(graph);
  const val = new Map<string, number>(); // value name -> buffer
  const io = (name: string, dims: number[]): number => b.plain(dims, ext.get(name));
  const param = (name: string, dims: number[]): number => b.plain(dims, ext.get(name));
  const grad = (name: string, dims: number[]): number => b.plain(dims, ext.get(TRAIN_IO.grad(name)));

  const inDims = dims4(batch, graph.inputShape);
  val.set(graph.input, networkInput(b, fwd, io(TRAIN_IO.input, inDims), inDims));
  // The graph outputs, [N, ...shape] plain, and the gradients the task writes for them.
  const outDimsOf = (o: GraphOutput): number[] => [batch, ...valueShape(graph, o.value)];
  const outBuf = new Map(graph.outputs.map((o) => [o.name, io(TRAIN_IO.output(o.name), outDimsOf(o))] as const));
  const doutBuf = new Map(graph.outputs.map((o) => [o.name, io(TRAIN_IO.outputGrad(o.name), outDimsOf(o))] as const));
  const views = outputViews(graph, batch, (o) => outBuf.get(o.name)!, (v) => valueShape(graph, v), 'native training');

  // Activations computed by the BN before them (see 'bn').
  const fusedAct = new Set<string>();
  // Backward closures, run in reverse order once the forward is laid out.
  const backward: (() => void)[] = [];
  const grads = new Map<string, number>();
  // Hands the caller's reference to `id` over to the gradient of `value`, summing when one exists.
  const addGrad = (value: string, id: number): void => {
    const prev = grads.get(value);
    if (prev === undefined) {
      grads.set(value, id);
      return;
    }
    const sum = b.temp(b.buffers[id]!.dims!);
    bwd.push({ op: 'add', name: `${value}.gradsum`, a: prev, b: id, dst: sum });
    b.release(prev);
    b.release(id);
    grads.set(value, sum);
  };
  const takeGrad = (value: string): number => {
    const id = grads.get(value);
    if (id === undefined) throw new Error(`training plan: no gradient reaches ${value}`);
    return id;
  };
  const needsInputGrad = (v: string): boolean => v !== graph.input || inputGrad;
  const quantized = new Set(quant?.fakeQuant ?? []);
  // Fake quantization of `value` in its buffer; its backward masks the gradient before the producer's backward.
  const fakeQuant = (value: string): void => {
    if (!quantized.delete(value)) return;
    const x = val.get(value);
    if (x === undefined) throw new Error(`native training: ${value} is a view of an output and cannot be fake-quantized`);
    const ws = b.ws();
    fwd.push({ op: 'fake_quant', name: `${value}.fake_quant`, src: x, dst: x, ws, state: io(TRAIN_IO.fakeQuant(value), [5]), qmin: 0, qmax: 255 });
    if (value === graph.input) return;
    backward.push(() => {
      const dy = takeGrad(value);
      const dx = b.temp(b.buffers[x]!.dims!);
      bwd.push({ op: 'fake_quant_bwd', name: `${value}.fake_quant`, diff_dst: dy, diff_src: dx, ws });
      b.release(dy);
      grads.set(value, dx);
    });
  };
  fakeQuant(graph.input);

  for (const n of graph.nodes) {
    const outDims = dims4(batch, n.shape);
    switch (n.op) {
      case 'conv': {
        const x = val.get(n.inputs[0]!)!;
        const y = b.act(outDims);
        const wDims = [n.outC, n.inC / n.groups, n.k, n.k];
        const w = param(`${n.name}.weight`, wDims);
        const geo = convGeometry(n);
        fwd.push({ op: 'conv', name: n.name, src: x, wei: w, dst: y, train: true, ...geo, ...(n.bias ? { bias: param(`${n.name}.bias`, [n.outC]) } : {}) });
        backward.push(() => {
          const dy = takeGrad(n.output);
          const dw = grad(`${n.name}.weight`, wDims);
          const db = n.bias ? { diff_bias: grad(`${n.name}.bias`, [n.outC]) } : {};
          bwd.push({ op: 'conv_bwd_weights', name: n.name, src: x, diff_dst: dy, diff_wei: dw, ...geo, ...db });
          if (needsInputGrad(n.inputs[0]!)) {
            const dx = b.temp(b.buffers[x]!.dims!);
            bwd.push({ op: 'conv_bwd_data', name: n.name, diff_dst: dy, wei: w, diff_src: dx, ...geo });
            addGrad(n.inputs[0]!, dx);
          }
          b.release(dy);
        });
        val.set(n.output, y);
        break;
      }
      case 'bn': {
        const x = val.get(n.inputs[0]!)!;
        const y = b.act(outDims);
        const c = n.channels;
        const next = users.get(n.output) ?? [];
        // Its only reader is an activation: ReLU fuses into oneDNN's BN (fuse_norm_relu); ReLU6, which oneDNN
        // 2.6 cannot fuse, runs in the addon's own BN + clip kernel (blocked layouts) instead of a BN and two
        // eltwise passes.
        const only = next.length === 1 && next[0]!.op === 'act' && !isGraphOutput(graph, n.output) ? next[0]!.kind : undefined;
        const act = only === 'relu' || (only === 'relu6' && channelBlock(b.actFormat) > 1) ? only : undefined;
        const relu = act === 'relu';
        const ws = relu ? b.ws() : undefined;
        if (act !== undefined) fusedAct.add(next[0]!.name);
        const frozen = quant?.frozenBn ?? false;
        const common = {
          src: x, eps: n.eps, train: true, relu, globalStats: frozen, ...(act === 'relu6' ? { clip: 6 } : {}),
          scale: param(`${n.name}.weight`, [c]), shift: param(`${n.name}.bias`, [c]),
          mean: frozen ? param(`${n.name}.running_mean`, [c]) : io(TRAIN_IO.batchMean(n.name), [c]),
          var: frozen ? param(`${n.name}.running_var`, [c]) : io(TRAIN_IO.batchVar(n.name), [c]),
          ...(ws !== undefined ? { ws } : {}),
        };
        fwd.push({ op: 'bn', name: n.name, dst: y, ...common });
        // With a fused activation the gradient arrives at its output, which is this same buffer.
        const outValue = act !== undefined ? next[0]!.output : n.output;
        backward.push(() => {
          const dy = takeGrad(outValue);
          const dx = b.temp(outDims);
          bwd.push({ op: 'bn_bwd', name: n.name, ...common, diff_dst: dy, diff_src: dx, diff_scale: grad(`${n.name}.weight`, [c]), diff_shift: grad(`${n.name}.bias`, [c]) });
          addGrad(n.inputs[0]!, dx);
          b.release(dy);
        });
        val.set(n.output, y);
        break;
      }
      case 'act': {
        const x = val.get(n.inputs[0]!)!;
        if (fusedAct.has(n.name)) {
          val.set(n.output, x);
          break;
        }
        const y = b.act(outDims);
        fwd.push({ op: 'eltwise', name: n.name, kind: n.kind, src: x, dst: y, train: true });
        backward.push(() => {
          const dy = takeGrad(n.output);
          const dx = b.temp(outDims);
          bwd.push({ op: 'eltwise_bwd', name: n.name, kind: n.kind, data: x, diff_dst: dy, diff_src: dx });
          addGrad(n.inputs[0]!, dx);
          b.release(dy);
        });
        val.set(n.output, y);
        break;
      }
      case 'add': {
        // In place into an operand that only this add reads and whose producer's backward does not need it
        // (a BN output: BN backward reads the BN input), saving one activation per residual block.
        const inPlace = n.inputs.find((v) => (users.get(v) ?? []).length === 1 && !isGraphOutput(graph, v) && producer(graph, v)?.op === 'bn');
        const y = inPlace !== undefined ? val.get(inPlace)! : b.act(outDims);
        const [first, second] = inPlace === n.inputs[1] ? [n.inputs[1], n.inputs[0]] : n.inputs; // oneDNN: dst may alias src0
        fwd.push({ op: 'add', name: n.name, a: val.get(first)!, b: val.get(second)!, dst: y });
        backward.push(() => {
          const dy = takeGrad(n.output);
          for (const v of n.inputs) {
            b.retain(dy);
            addGrad(v, dy);
          }
          b.release(dy);
        });
        val.set(n.output, y);
        break;
      }
      case 'avgpool': {
        const x = val.get(n.inputs[0]!)!;
        const y = b.act(outDims);
        fwd.push({ op: 'pool', name: n.name, src: x, dst: y });
        backward.push(() => {
          const dy = takeGrad(n.output);
          const dx = b.temp(b.buffers[x]!.dims!);
          bwd.push({ op: 'pool_bwd', name: n.name, diff_dst: dy, diff_src: dx });
          addGrad(n.inputs[0]!, dx);
          b.release(dy);
        });
        val.set(n.output, y);
        break;
      }
      case 'dropout': {
        // The mask (0 or 1/(1-p) per element) is drawn in TypeScript before each step.
        const x = val.get(n.inputs[0]!)!;
        const y = b.act(outDims);
        const mask = io(TRAIN_IO.mask(n.name), outDims);
        fwd.push({ op: 'mul', name: n.name, a: x, b: mask, dst: y });
        backward.push(() => {
          const dy = takeGrad(n.output);
          const dx = b.temp(outDims);
          bwd.push({ op: 'mul', name: `${n.name}.bwd`, a: dy, b: mask, dst: dx });
          addGrad(n.inputs[0]!, dx);
          b.release(dy);
        });
        val.set(n.output, y);
        break;
      }
      case 'linear': {
        // A graph output no other node reads is written plain [N, F] straight into its output array; a hidden
        // layer of a head (read by its activation) into an activation buffer.
        const out = graph.outputs.find((o) => o.value === n.output);
        const direct = out !== undefined && !users.has(n.output);
        const x = val.get(n.inputs[0]!)!;
        const wDims = [n.outF, n.inF, 1, 1];
        const w = param(`${n.name}.weight`, wDims);
        const y = direct ? outBuf.get(out.name)! : b.act(outDims);
        fwd.push({ op: 'ip', name: n.name, src: x, wei: w, bias: param(`${n.name}.bias`, [n.outF]), dst: y, train: true });
        backward.push(() => {
          const dy = direct ? doutBuf.get(out.name)! : takeGrad(n.output);
          bwd.push({ op: 'ip_bwd_weights', name: n.name, src: x, diff_dst: dy, diff_wei: grad(`${n.name}.weight`, wDims), diff_bias: grad(`${n.name}.bias`, [n.outF]) });
          const dx = b.temp(b.buffers[x]!.dims!);
          bwd.push({ op: 'ip_bwd_data', name: n.name, diff_dst: dy, wei: w, diff_src: dx });
          addGrad(n.inputs[0]!, dx);
          if (!direct) b.release(dy);
        });
        val.set(n.output, y);
        break;
      }
      case 'transpose':
      case 'reshape':
      case 'concat':
        break; // views onto the outputs (below)
      default:
        throw unsupported(n, 'native training');
    }
    fakeQuant(n.output);
  }
  if (quantized.size) throw new Error(`native training: no node computes the fake-quantized value(s) ${[...quantized].join(', ')}`);
  // Values in activation buffers are copied into their windows of the outputs after the forward; their
  // gradients come back from the same windows of the output gradients first.
  const gradOf = new Map(graph.outputs.map((o) => [outBuf.get(o.name)!, doutBuf.get(o.name)!] as const));
  for (const [value, vs] of views) {
    const x = val.get(value)!;
    for (const [i, v] of vs.entries()) {
      if (v.buffer === x) continue; // an inner product already wrote its output there
      const dims = b.buffers[x]!.dims!;
      const window = padView(v, dims.length);
      fwd.push({ op: 'reorder', name: `${value}.out${i}`, src: x, dst: v.buffer, dstView: viewSpec(window) });
      const d = b.temp(dims);
      bwd.push({ op: 'reorder', name: `${value}.dout${i}`, src: gradOf.get(v.buffer)!, srcView: viewSpec(window), dst: d });
      addGrad(value, d);
    }
  }
  for (let i = backward.length - 1; i >= 0; i--) backward[i]!();
  if (inputGrad) bwd.push({ op: 'reorder', name: 'dinput', src: takeGrad(graph.input), dst: io(TRAIN_IO.dinput, inDims) });
  return b.spec();
}
