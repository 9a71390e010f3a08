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

/** Logits [batch, classes] (row-major) for a float32 NCHW batch, computed in float64. */
export function referenceForward(graph: Graph, weights: Weights, input: Float32Array, batch: number): Float64Array {
  const inSize = numel(graph.inputShape);
  if (input.length !== batch * inSize) throw new Error(`reference forward: input has ${input.length} values, expected ${batch * inSize}`);
  const outSize = numel(graph.nodes.find((n) => n.output === graph.output)!.shape);
  const result = new Float64Array(batch * outSize);
  const shapes = new Map<string, readonly number[]>([[graph.input, graph.inputShape]]);
  for (const n of graph.nodes) shapes.set(n.output, n.shape);

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
          y = conv(n, val(n.input), shapes.get(n.input)!, weights);
          break;
        case 'bn': {
          const x = val(n.input);
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
          const x = val(n.input);
          y = new Float64Array(x.length);
          const hi = n.kind === 'relu6' ? 6 : Infinity;
          for (let i = 0; i < x.length; i++) y[i] = Math.min(Math.max(x[i]!, 0), hi);
          break;
        }
        case 'add': {
          const a = val(n.inputs[0]);
          const c = val(n.inputs[1]);
          y = new Float64Array(a.length);
          for (let i = 0; i < a.length; i++) y[i] = a[i]! + c[i]!;
          break;
        }
        case 'avgpool': {
          const x = val(n.input);
          const C = n.shape[0]!;
          const hw = x.length / C;
          y = new Float64Array(C);
          for (let c = 0; c < C; c++) {
            let s = 0;
            for (let i = c * hw; i < (c + 1) * hw; i++) s += x[i]!;
            y[c] = s / hw;
          }
          break;
        }
        case 'dropout':
          y = val(n.input);
          break;
        case 'linear': {
          const x = val(n.input);
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
    result.set(val(graph.output), b * outSize);
  }
  return result;
}
