/**
 * A plain, deliberately simple float64 reference forward pass over the *unfolded* layer graph (eval mode:
 * BN with running statistics, dropout off). Used to check exported models without another engine.
 */
import { numel, type ConvNode, type Graph } from '../../src/model/graph.js';

type Weights = ReadonlyMap<string, Float32Array>;

function get(w: Weights, name: string): Float32Array {
  const t = w.get(name);
  if (!t) throw new Error(`reference forward: missing ${name}`);
  return t;
}

function conv(n: ConvNode, x: Float64Array, inShape: readonly number[], w: Weights): Float64Array {
  const [, H, W] = inShape as [number, number, number];
  const [, OH, OW] = n.shape as [number, number, number];
  const { k, stride: s, groups } = n;
  const [pt, pl] = n.pads;
  const icPerG = n.inC / groups;
  const ocPerG = n.outC / groups;
  const weight = get(w, `${n.name}.weight`);
  const bias = n.bias ? get(w, `${n.name}.bias`) : null;
  const out = new Float64Array(n.outC * OH * OW);
  for (let o = 0; o < n.outC; o++) {
    const g = Math.floor(o / ocPerG);
    const obase = o * OH * OW;
    if (bias) out.fill(bias[o]!, obase, obase + OH * OW);
    for (let ci = 0; ci < icPerG; ci++) {
      const c = g * icPerG + ci;
      const ibase = c * H * W;
      if (k === 1 && s === 1 && pt === 0 && pl === 0) {
        // Pointwise fast path: one contiguous multiply-add over the whole plane.
        const wv = weight[o * icPerG + ci]!;
        for (let p = 0; p < OH * OW; p++) out[obase + p]! += wv * x[ibase + p]!;
        continue;
      }
      for (let kh = 0; kh < k; kh++) {
        for (let kw = 0; kw < k; kw++) {
          const wv = weight[((o * icPerG + ci) * k + kh) * k + kw]!;
          // Valid output columns: 0 <= ox*s - pl + kw < W.
          const ox0 = Math.max(0, Math.ceil((pl - kw) / s));
          const ox1 = Math.min(OW, Math.floor((W - 1 + pl - kw) / s) + 1);
          for (let oy = 0; oy < OH; oy++) {
            const iy = oy * s - pt + kh;
            if (iy < 0 || iy >= H) continue;
            const orow = obase + oy * OW;
            const irow = ibase + iy * W - pl + kw;
            for (let ox = ox0; ox < ox1; ox++) out[orow + ox]! += wv * x[irow + ox * s]!;
          }
        }
      }
    }
  }
  return out;
}

/** Row-major strides of a shape. */
function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1]! * shape[i + 1]!;
  return s;
}

/** Inputs joined along `axis`: as many outer blocks as dims before the axis, each input's slab in turn. */
function concat(xs: Float64Array[], shapes: (readonly number[])[], axis: number): Float64Array {
  const outer = numel(shapes[0]!.slice(0, axis));
  const out = new Float64Array(xs.reduce((t, x) => t + x.length, 0));
  let o = 0;
  for (let i = 0; i < outer; i++) {
    xs.forEach((x) => {
      const slab = x.length / outer;
      out.set(x.subarray(i * slab, (i + 1) * slab), o);
      o += slab;
    });
  }
  return out;
}

function transpose(x: Float64Array, inShape: readonly number[], perm: readonly number[]): Float64Array {
  const inStr = strides(inShape);
  const outShape = perm.map((p) => inShape[p]!);
  const out = new Float64Array(x.length);
  const idx = new Array<number>(outShape.length).fill(0);
  for (let o = 0; o < x.length; o++) {
    let src = 0;
    for (let d = 0; d < idx.length; d++) src += idx[d]! * inStr[perm[d]!]!;
    out[o] = x[src]!;
    for (let d = idx.length - 1; d >= 0; d--) {
      if (++idx[d]! < outShape[d]!) break;
      idx[d] = 0;
    }
  }
  return out;
}

function softmax(x: Float64Array, shape: readonly number[], axis: number): Float64Array {
  const out = new Float64Array(x.length);
  const stride = strides(shape)[axis]!;
  const len = shape[axis]!;
  for (let start = 0; start < x.length; start++) {
    if (Math.floor(start / stride) % len !== 0) continue; // first element of a softmax line
    let max = -Infinity;
    for (let i = 0; i < len; i++) max = Math.max(max, x[start + i * stride]!);
    let sum = 0;
    for (let i = 0; i < len; i++) sum += Math.exp(x[start + i * stride]! - max);
    for (let i = 0; i < len; i++) out[start + i * stride] = Math.exp(x[start + i * stride]! - max) / sum;
  }
  return out;
}

/** The first graph output (a classifier's logits [batch, classes], row-major) for a float32 NCHW batch, in float64. */
export function referenceForward(graph: Graph, weights: Weights, input: Float32Array, batch: number): Float64Array {
  return referenceOutputs(graph, weights, input, batch).get(graph.outputs[0]!.name)!;
}

/** Every named graph output, [batch, ...shape] row-major, computed in float64. */
export function referenceOutputs(graph: Graph, weights: Weights, input: Float32Array, batch: number): Map<string, Float64Array> {
  const inSize = numel(graph.inputShape);
  if (input.length !== batch * inSize) throw new Error(`reference forward: input has ${input.length} values, expected ${batch * inSize}`);
  const shapes = new Map<string, readonly number[]>([[graph.input, graph.inputShape]]);
  for (const n of graph.nodes) shapes.set(n.output, n.shape);
  const results = new Map(graph.outputs.map((o) => [o.name, new Float64Array(batch * numel(shapes.get(o.value)!))] as const));

  for (let b = 0; b < batch; b++) {
    const vals = new Map<string, Float64Array>();
    vals.set(graph.input, Float64Array.from(input.subarray(b * inSize, (b + 1) * inSize)));
    const val = (name: string): Float64Array => {
      const v = vals.get(name);
      if (!v) throw new Error(`reference forward: value ${name} not computed`);
      return v;
    };
    for (const n of graph.nodes) {
      let y: Float64Array;
      switch (n.op) {
        case 'conv':
          y = conv(n, val(n.inputs[0]!), shapes.get(n.inputs[0]!)!, weights);
          break;
        case 'bn': {
          const x = val(n.inputs[0]!);
          const hw = x.length / n.channels;
          const g = get(weights, `${n.name}.weight`);
          const beta = get(weights, `${n.name}.bias`);
          const mean = get(weights, `${n.name}.running_mean`);
          const vr = get(weights, `${n.name}.running_var`);
          y = new Float64Array(x.length);
          for (let c = 0; c < n.channels; c++) {
            const inv = 1 / Math.sqrt(vr[c]! + n.eps);
            for (let i = c * hw; i < (c + 1) * hw; i++) y[i] = (x[i]! - mean[c]!) * inv * g[c]! + beta[c]!;
          }
          break;
        }
        case 'act': {
          const x = val(n.inputs[0]!);
          y = new Float64Array(x.length);
          const hi = n.kind === 'relu6' ? 6 : Infinity;
          for (let i = 0; i < x.length; i++) y[i] = n.kind === 'sigmoid' ? 1 / (1 + Math.exp(-x[i]!)) : Math.min(Math.max(x[i]!, 0), hi);
          break;
        }
        case 'concat':
          y = concat(n.inputs.map(val), n.inputs.map((v) => shapes.get(v)!), n.axis);
          break;
        case 'reshape':
          y = val(n.inputs[0]!);
          break;
        case 'transpose':
          y = transpose(val(n.inputs[0]!), shapes.get(n.inputs[0]!)!, n.perm);
          break;
        case 'softmax':
          y = softmax(val(n.inputs[0]!), n.shape, n.axis);
          break;
        case 'add': {
          const a = val(n.inputs[0]);
          const c = val(n.inputs[1]);
          y = new Float64Array(a.length);
          for (let i = 0; i < a.length; i++) y[i] = a[i]! + c[i]!;
          break;
        }
        case 'avgpool':
        case 'maxpool': {
          const x = val(n.inputs[0]!);
          const C = n.shape[0]!;
          const hw = x.length / C;
          y = new Float64Array(C);
          for (let c = 0; c < C; c++) {
            const plane = x.subarray(c * hw, (c + 1) * hw);
            y[c] = n.op === 'maxpool' ? plane.reduce((m, v) => Math.max(m, v), -Infinity) : plane.reduce((s, v) => s + v, 0) / hw;
          }
          break;
        }
        case 'dropout':
          y = val(n.inputs[0]!);
          break;
        case 'linear': {
          const x = val(n.inputs[0]!);
          const w = get(weights, `${n.name}.weight`);
          const bias = get(weights, `${n.name}.bias`);
          y = new Float64Array(n.outF);
          for (let o = 0; o < n.outF; o++) {
            let s = bias[o]!;
            for (let i = 0; i < n.inF; i++) s += w[o * n.inF + i]! * x[i]!;
            y[o] = s;
          }
          break;
        }
      }
      vals.set(n.output, y);
    }
    for (const o of graph.outputs) {
      const r = results.get(o.name)!;
      const size = r.length / batch;
      r.set(val(o.value), b * size);
    }
  }
  return results;
}
