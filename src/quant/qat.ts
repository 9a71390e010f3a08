/**
 * Quantization-aware training on the native engine, as torchvision's QAT does it (fused conv-BN modules, then
 * `freeze_bn_stats` for the last epochs), ending in the same QDQ ONNX model `mnv2 quantize` writes (quantize.ts)
 * with the trained ranges instead of calibrated ones:
 *
 *  - Weights: each conv's BN-folded weight w·γ/√(running var + ε) is fake-quantized per output channel exactly as
 *    the export quantizes it (symmetric int8, `quantizePerChannel`), and the conv reads it divided back by
 *    γ/√(var + ε) — torch's ConvBn QAT, conv(x, fq(w·s)) / s, with the division folded into the weight. The
 *    classifier's weight is fake-quantized per output feature. Done here in TypeScript on the plain arrays before
 *    every step; the per-channel scale covers the largest weight, so the straight-through gradient is the
 *    gradient itself.
 *  - Activations: every tensor the QDQ export quantizes (`planQdq` on this model's export: the input, each conv's
 *    output after its ReLU/ReLU6, residual sums, the pooled features) is fake-quantized per tensor to uint8 in the
 *    training program (native/mnv2.cc `fake_quant`), with a moving-average min/max observer (torch's
 *    MovingAverageMinMaxObserver, averaging constant 0.01) and a straight-through backward (zero outside the range).
 *  - BN: batch statistics at first; for the last `freezeBnEpochs` epochs the running statistics are frozen and
 *    used as constants, so the network trained is exactly the folded one the export writes.
 */
import onnxProto from 'onnx-proto';
import { NativeModel, offHeap, type QuantStep, type StepOptions } from '../engine/native/model.js';
import { TRAIN_IO, type TrainQuant } from '../engine/native/plan.js';
import { foldedToOnnx, type ExportOptions } from '../engine/onnx/export.js';
import { OrtModel } from '../engine/onnx/session.js';
import type { Dataset, InputConvention } from '../data/dataset.js';
import type { EvalResult } from '../train/metrics.js';
import { evaluateOnnx } from './calibrate.js';
import { foldBatchNorm } from '../model/fold.js';
import type { BatchNormNode, Graph } from '../model/graph.js';
import type { StateDict } from '../model/weights.js';
import type { Task, TaskLoss } from '../task/task.js';
import { fail } from '../util/errors.js';
import { buildQdqModel, planQdq, quantizePerChannel, type QdqPlan } from './quantize.js';
import { QAT_KEY, type QatRanges } from './qat-ranges.js';

const { onnx } = onnxProto;

/** torch.ao.quantization's MovingAverageMinMaxObserver default. */
export const OBSERVER_AVERAGING = 0.01;

/** The phase of a QAT step: fake quantization on, and whether BN statistics are frozen. */
export interface QatPhase {
  frozenBn: boolean;
}

let programIds = 0;

/** The tensors the QDQ export of `graph` quantizes, as graph values, with their ONNX names. */
export function qatValues(graph: Graph, weights: StateDict): { plan: QdqPlan; values: Map<string, string> } {
  const model = foldedToOnnx(foldBatchNorm(graph, weights), graph.config);
  const plan = planQdq(model);
  // ONNX names are the graph's value names, except the input and the pool's own output (its Flatten carries the value).
  const byOnnx = new Map<string, string>([['input', graph.input]]);
  for (const n of graph.nodes) byOnnx.set(n.op === 'avgpool' ? `${n.name}.gap` : n.output, n.output);
  const values = new Map<string, string>();
  for (const t of plan.calibrate) {
    const v = byOnnx.get(t);
    if (v === undefined) throw new Error(`qat: the export quantizes ${t}, which is no value of the graph`);
    values.set(v, t);
  }
  return { plan, values };
}

/**
 * A model trained quantization-aware: `step` runs the native training step on fake-quantized weights and
 * activations; the optimizer updates the float weights (`weights`, `params`) as usual.
 */
export class QatModel {
  readonly model: NativeModel;
  readonly weightBits: 7 | 8;
  private readonly values: Map<string, string>;
  private readonly plan: QdqPlan;
  /** Fake-quantized weights (under the weights' names) and observer states, read by the training program. */
  private readonly arrays = new Map<string, Float32Array>();
  private readonly id = programIds++;
  private readonly bnOf = new Map<string, BatchNormNode>();

  constructor(model: NativeModel, opts: { weightBits?: 7 | 8; ranges?: QatRanges } = {}) {
    this.model = model;
    this.weightBits = opts.ranges?.weightBits ?? opts.weightBits ?? 7;
    const g = model.graph;
    ({ plan: this.plan, values: this.values } = qatValues(g, model.weights));
    for (const n of g.nodes) {
      if (n.op === 'bn') {
        const conv = g.nodes.find((c) => c.output === n.inputs[0]);
        if (conv) this.bnOf.set(conv.name, n);
      }
      if (n.op === 'conv' || n.op === 'linear') this.arrays.set(`${n.name}.weight`, offHeap(model.weights.get(`${n.name}.weight`)!.length));
    }
    for (const [value, name] of this.values) {
      const s = offHeap(5);
      const r = opts.ranges?.ranges[name];
      s.set([r?.[0] ?? Infinity, r?.[1] ?? -Infinity, OBSERVER_AVERAGING, 0, 0]);
      this.arrays.set(TRAIN_IO.fakeQuant(value), s);
    }
  }

  /** The graph values fake-quantized in training. */
  get fakeQuantized(): string[] {
    return [...this.values.keys()];
  }

  /** Observer state [min, max, averaging constant, scale, zero point] of a fake-quantized value. */
  observer(value: string): Float32Array {
    const s = this.arrays.get(TRAIN_IO.fakeQuant(value));
    if (!s) throw new Error(`qat: ${value} is not fake-quantized`);
    return s;
  }

  /** Observers on (moving-average ranges) or frozen (the ranges stay as they are, as torch's disable_observer). */
  setObserving(on: boolean): void {
    for (const v of this.values.keys()) this.observer(v)[2] = on ? OBSERVER_AVERAGING : 0;
  }

  /** The fake-quantized weights the training program reads, from the current float weights and BN statistics. */
  private quantizeWeights(): void {
    const qmax = 2 ** (this.weightBits - 1) - 1;
    const w = this.model.weights;
    for (const n of foldBatchNorm(this.model.graph, w).nodes) {
      if (n.op !== 'conv' && n.op !== 'linear') continue;
      const out = n.op === 'conv' ? n.outC : n.outF;
      const dims = n.op === 'conv' ? [n.outC, n.inC / n.groups, n.k, n.k] : [n.outF, n.inF];
      const { q, scale } = quantizePerChannel(n.weight, dims, 0, qmax);
      const dst = this.arrays.get(`${n.name}.weight`)!;
      const per = dst.length / out;
      const bn = n.op === 'conv' && n.bnName ? this.bnOf.get(n.name) : undefined;
      const gamma = bn && w.get(`${bn.name}.weight`)!;
      const variance = bn && w.get(`${bn.name}.running_var`)!;
      for (let o = 0; o < out; o++) {
        // The BN scale the folded weight carries (as foldConvBn computes it), divided back out: BN applies it.
        const s = bn ? gamma![o]! / Math.sqrt(variance![o]! + bn.eps) : 1;
        for (let i = o * per; i < (o + 1) * per; i++) dst[i] = (q[i]! * scale[o]!) / s;
      }
    }
  }

  /** One training step (see NativeModel.step) with fake quantization; `phase.frozenBn` freezes BN statistics. */
  step<T>(input: Float32Array, batch: number, task: Task<T>, target: T, opts: StepOptions, phase: QatPhase): TaskLoss & { outputs: ReadonlyMap<string, Float32Array> } {
    this.quantizeWeights();
    const spec: TrainQuant = { fakeQuant: this.fakeQuantized, frozenBn: phase.frozenBn };
    const quant: QuantStep = { key: `qat${this.id}:${phase.frozenBn ? 'frozen' : 'bn'}`, spec, arrays: this.arrays };
    return this.model.step(input, batch, task, target, { ...opts, quant });
  }

  /** Whether every observer has seen a batch (the ranges exist). */
  get observed(): boolean {
    return [...this.values.keys()].every((v) => this.observer(v)[0]! <= this.observer(v)[1]!);
  }

  /** The observers' ranges by ONNX tensor name. */
  ranges(): QatRanges {
    const ranges: Record<string, [number, number]> = {};
    for (const [value, name] of this.values) {
      const s = this.observer(value);
      if (!(s[0]! <= s[1]!)) throw new Error(`qat: no range observed for ${name} yet (train at least one step)`);
      ranges[name] = [s[0]!, s[1]!];
    }
    return { weightBits: this.weightBits, ranges };
  }

  /** The QDQ ONNX model of the current weights with the trained ranges (what `mnv2 quantize` writes, uncalibrated). */
  exportQdq(exportOpts: ExportOptions = {}): Uint8Array {
    return qatOnnx(this.model.graph, this.model.weights, this.ranges(), exportOpts, this.plan);
  }

  /** Top-1 (etc.) of the int8 model, the QDQ export run by ONNX Runtime, on a dataset. */
  async evaluateInt8(ds: Dataset, conv: InputConvention, threads?: number): Promise<EvalResult> {
    const m = await OrtModel.create(this.exportQdq(), { threads });
    try {
      return await evaluateOnnx(m, ds, conv);
    } finally {
      await m.release();
    }
  }
}

/** The QDQ ONNX model of weights trained with QAT, from the ranges it recorded. */
export function qatOnnx(graph: Graph, weights: StateDict, r: QatRanges, exportOpts: ExportOptions = {}, known?: QdqPlan, source = QAT_KEY): Uint8Array {
  const model = foldedToOnnx(foldBatchNorm(graph, weights), graph.config, exportOpts);
  const plan = known ?? planQdq(model);
  const ranges = new Map<string, [number, number]>();
  for (const t of plan.calibrate) {
    const v = r.ranges[t];
    if (!v) fail(source, `${QAT_KEY} has no trained range for ${t}`);
    // The quantized range always holds 0 (activationParams, as the fake quantization computes it).
    ranges.set(t, [Math.min(0, v[0]), Math.max(0, v[1])]);
  }
  const info = { method: 'qat', weights: `int8 symmetric per-channel, ${r.weightBits}-bit`, activations: 'uint8 asymmetric per-tensor, trained ranges' };
  const q = buildQdqModel(model, plan, ranges, { weightQmax: 2 ** (r.weightBits - 1) - 1, info });
  return onnx.ModelProto.encode(onnx.ModelProto.create(q)).finish();
}
