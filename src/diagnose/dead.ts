/**
 * Dead kernels and dead channels of a model's depthwise and pointwise convs:
 *  - a dead kernel is a filter whose weight L2 norm is below `kernelFraction` (default 1e-3) of the median
 *    filter norm of its layer (weight decay drives unused filters towards zero; BN hides their scale);
 *  - a dead channel is one whose output after the conv's BN and activation is exactly zero on at least
 *    `zeroShare` (default 99 %) of its values over a sample of images. The activations come from ONNX Runtime
 *    running the model's export with each layer's activation as an extra graph output.
 * Convs with no activation after their BN (MobileNetV2's linear projections) have dead kernels but no dead channels.
 */
import * as ort from 'onnxruntime-node';
import { exportOnnx, ONNX_INPUT } from '../engine/onnx/export.js';
import { consumers, type ConvNode, type Graph, type GraphNode } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';

export interface DiagnoseOptions {
  /** A filter is dead below this fraction of its layer's median norm. */
  kernelFraction?: number;
  /** A channel is dead when at least this share of its values is zero. */
  zeroShare?: number;
}

export interface LayerDiagnosis {
  /** The conv's state-dict prefix. */
  layer: string;
  kind: 'depthwise' | 'pointwise';
  channels: number;
  /** Each filter's L2 norm over the layer's median. */
  relativeNorms: number[];
  deadKernels: number;
  /** The activation whose zeros are counted, or null when the conv's BN feeds no activation. */
  activation: string | null;
  /** Per channel, the share of exact zeros over the sample (null: no sample, or no activation). */
  zeroShares: number[] | null;
  deadChannels: number | null;
}

export interface Diagnosis {
  kernelFraction: number;
  zeroShare: number;
  /** Images the zero shares were measured on (0: kernels only). */
  images: number;
  layers: LayerDiagnosis[];
  totals: { layers: number; channels: number; deadKernels: number; measuredChannels: number; deadChannels: number };
}

/** A depthwise or pointwise conv and the activation after its BN. */
interface Inspected {
  conv: ConvNode;
  kind: 'depthwise' | 'pointwise';
  act: string | null;
}

function inspectedLayers(graph: Graph): Inspected[] {
  const byInput = consumers(graph);
  const only = (value: string): GraphNode | undefined => {
    const u = byInput.get(value) ?? [];
    return u.length === 1 ? u[0] : undefined;
  };
  const out: Inspected[] = [];
  for (const n of graph.nodes) {
    if (n.op !== 'conv') continue;
    const kind = n.groups === n.inC && n.groups > 1 ? 'depthwise' : n.k === 1 && n.groups === 1 ? 'pointwise' : undefined;
    if (!kind) continue;
    const bn = only(n.output);
    const act = bn?.op === 'bn' ? only(bn.output) : undefined;
    out.push({ conv: n, kind, act: act?.op === 'act' ? act.output : null });
  }
  return out;
}

function median(v: readonly number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Each output filter's L2 norm (float64 accumulation). */
export function filterNorms(conv: ConvNode, weights: StateDict): number[] {
  const w = weights.get(`${conv.name}.weight`);
  const per = (conv.inC / conv.groups) * conv.k * conv.k;
  if (!w || w.length !== conv.outC * per) throw new Error(`diagnose: ${conv.name}.weight missing or mis-sized`);
  return Array.from({ length: conv.outC }, (_, o) => {
    let s = 0;
    for (let i = o * per; i < (o + 1) * per; i++) s += w[i]! * w[i]!;
    return Math.sqrt(s);
  });
}

/**
 * Per measured layer (activation output name), per channel: the count of exact zeros over all images of
 * `batches`, from ONNX Runtime on the export with those activations as extra outputs.
 */
async function zeroCounts(graph: Graph, weights: StateDict, acts: string[], batches: AsyncIterable<{ input: Float32Array; size: number }>, threads: number): Promise<{ counts: Map<string, Float64Array>; images: number; values: Map<string, number> }> {
  const session = await ort.InferenceSession.create(exportOnnx(graph, weights, { extraOutputs: acts }), { intraOpNumThreads: threads, interOpNumThreads: 1 });
  const counts = new Map<string, Float64Array>();
  const values = new Map<string, number>();
  let images = 0;
  try {
    for await (const b of batches) {
      const out = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', b.input, [b.size, ...graph.inputShape]) }, acts);
      for (const name of acts) {
        const t = out[name]!;
        const [, c, h, w] = t.dims as [number, number, number, number];
        const data = t.data as Float32Array;
        const plane = h * w;
        const z = counts.get(name) ?? new Float64Array(c);
        for (let n = 0; n < b.size; n++) {
          for (let ch = 0; ch < c; ch++) {
            const o = (n * c + ch) * plane;
            let k = 0;
            for (let i = o; i < o + plane; i++) if (data[i] === 0) k++;
            z[ch]! += k;
          }
        }
        counts.set(name, z);
        values.set(name, plane);
      }
      images += b.size;
    }
  } finally {
    await session.release();
  }
  return { counts, images, values };
}

/**
 * Dead kernels of every depthwise and pointwise conv, and, given `batches` of model input (NCHW, already
 * normalised), dead channels after their activations.
 */
export async function diagnose(
  graph: Graph, weights: StateDict, opts: DiagnoseOptions & { batches?: AsyncIterable<{ input: Float32Array; size: number }>; threads?: number } = {},
): Promise<Diagnosis> {
  const kernelFraction = opts.kernelFraction ?? 1e-3;
  const zeroShare = opts.zeroShare ?? 0.99;
  if (!(kernelFraction > 0 && kernelFraction < 1)) throw new Error(`diagnose: the kernel fraction must be in (0, 1), got ${kernelFraction}`);
  if (!(zeroShare > 0 && zeroShare <= 1)) throw new Error(`diagnose: the zero share must be in (0, 1], got ${zeroShare}`);
  const inspected = inspectedLayers(graph);
  const acts = inspected.flatMap((l) => (l.act ? [l.act] : []));
  const z = opts.batches ? await zeroCounts(graph, weights, acts, opts.batches, opts.threads ?? 1) : undefined;
  if (z && z.images === 0) throw new Error('diagnose: the image sample is empty');

  const layers = inspected.map(({ conv, kind, act }): LayerDiagnosis => {
    const norms = filterNorms(conv, weights);
    const med = median(norms);
    const relativeNorms = norms.map((v) => (med > 0 ? v / med : 0));
    const counts = act ? z?.counts.get(act) : undefined;
    const zeroShares = counts ? Array.from(counts, (k) => k / (z!.images * z!.values.get(act!)!)) : null;
    return {
      layer: conv.name, kind, channels: conv.outC, relativeNorms,
      deadKernels: relativeNorms.filter((r) => r < kernelFraction).length,
      activation: act, zeroShares,
      deadChannels: zeroShares ? zeroShares.filter((s) => s >= zeroShare).length : null,
    };
  });
  const measured = layers.filter((l) => l.zeroShares);
  return {
    kernelFraction, zeroShare, images: z?.images ?? 0, layers,
    totals: {
      layers: layers.length,
      channels: layers.reduce((s, l) => s + l.channels, 0),
      deadKernels: layers.reduce((s, l) => s + l.deadKernels, 0),
      measuredChannels: measured.reduce((s, l) => s + l.channels, 0),
      deadChannels: measured.reduce((s, l) => s + l.deadChannels!, 0),
    },
  };
}
