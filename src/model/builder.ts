/** A small helper that appends nodes to a Graph while tracking shapes, parameters and summary rows. */
import type { BaseConfig } from './family.js';
import { LOGITS, numel, type ActivationKind, type EltwiseKind, type Graph, type GraphNode, type LayerRow, type Pads } from './graph.js';

export type PaddingMode = 'symmetric' | 'keras';

/** A hidden layer of a classifier head: Linear(units), its activation ('linear': none), then Dropout(dropout). */
export interface HeadLayer {
  units: number;
  activation: EltwiseKind | 'linear';
  /** Dropout rate after the activation (default 0). */
  dropout?: number;
}

/** How the builder's blocks are made: conv padding convention, BN epsilon, default activation. */
export interface LayerStyle {
  padding: PaddingMode;
  bnEps: number;
  activation: ActivationKind;
}

/** Output size and [before, after] padding of a k x k conv along one axis. */
export function convPadding(size: number, k: number, stride: number, mode: PaddingMode): [number, number] {
  const p = (k - 1) >> 1;
  if (mode === 'symmetric' || stride === 1) return [p, p];
  // TF 'same' (the stem) and Keras correct_pad + 'valid' (stride-2 depthwise) agree: extra padding goes after.
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + k - size, 0);
  return [total >> 1, total - (total >> 1)];
}

/** Builds the graph of a config that states its layer style (padding, BN eps, activation). */
export class GraphBuilder<C extends BaseConfig & LayerStyle> {
  readonly g: Graph<C>;
  private row: LayerRow | null = null;

  constructor(config: C) {
    const inputShape = [config.inChannels, config.resolution, config.resolution];
    this.g = { config, input: 'input', inputShape, outputs: [], nodes: [], params: [], buffers: [], layers: [] };
  }

  shapeOf(value: string): readonly number[] {
    if (value === this.g.input) return this.g.inputShape;
    const n = this.g.nodes.find((x) => x.output === value);
    if (!n) throw new Error(`graph builder: unknown value ${value}`);
    return n.shape;
  }

  /** Start a summary row; nodes added until the next beginRow belong to it. */
  beginRow(label: string, operator: string, input: string, tcns: { t?: number; c?: number; n?: number; s?: number } = {}): void {
    this.row = { label, operator, ...tcns, inShape: this.shapeOf(input), outShape: [], nodes: [] };
    this.g.layers.push(this.row);
  }

  private add<N extends GraphNode>(node: N): string {
    if (this.g.nodes.some((n) => n.name === node.name)) throw new Error(`graph builder: duplicate node name ${node.name}`);
    this.g.nodes.push(node);
    if (this.row) {
      this.row.nodes.push(node.name);
      this.row.outShape = node.shape;
    }
    return node.output;
  }

  conv(name: string, input: string, outC: number, k: number, stride: number, groups = 1, bias = false): string {
    const [inC, h, w] = this.shapeOf(input) as [number, number, number];
    const mode = this.g.config.padding;
    const [pt, pb] = convPadding(h, k, stride, mode);
    const [pl, pr] = convPadding(w, k, stride, mode);
    const pads: Pads = [pt, pl, pb, pr];
    const oh = Math.floor((h + pt + pb - k) / stride) + 1;
    const ow = Math.floor((w + pl + pr - k) / stride) + 1;
    this.g.params.push({ name: `${name}.weight`, shape: [outC, inC / groups, k, k], role: 'conv.weight' });
    if (bias) this.g.params.push({ name: `${name}.bias`, shape: [outC], role: 'conv.bias' });
    return this.add({ op: 'conv', name, output: name, inputs: [input], inC, outC, k, stride, pads, groups, bias, shape: [outC, oh, ow] });
  }

  bn(name: string, input: string): string {
    const shape = this.shapeOf(input);
    const c = shape[0]!;
    this.g.params.push({ name: `${name}.weight`, shape: [c], role: 'bn.weight' }, { name: `${name}.bias`, shape: [c], role: 'bn.bias' });
    this.g.buffers.push(
      { name: `${name}.running_mean`, shape: [c], role: 'bn.running_mean' },
      { name: `${name}.running_var`, shape: [c], role: 'bn.running_var' },
      { name: `${name}.num_batches_tracked`, shape: [], role: 'bn.num_batches_tracked' },
    );
    return this.add({ op: 'bn', name, output: name, inputs: [input], channels: c, eps: this.g.config.bnEps, shape });
  }

  act(name: string, input: string, kind: EltwiseKind = this.g.config.activation): string {
    return this.add({ op: 'act', name, output: name, inputs: [input], kind, shape: this.shapeOf(input) });
  }

  addValues(name: string, a: string, b: string): string {
    const sa = this.shapeOf(a);
    const sb = this.shapeOf(b);
    if (sa.join() !== sb.join()) throw new Error(`graph builder: add ${name} of shapes ${sa} and ${sb}`);
    return this.add({ op: 'add', name, output: name, inputs: [a, b], shape: sa });
  }

  /** Global average pool. The seed's avg_pool2d(4) on its 4x4 map is the same operation. */
  avgpool(name: string, input: string): string {
    const c = this.shapeOf(input)[0]!;
    return this.add({ op: 'avgpool', name, output: name, inputs: [input], shape: [c] });
  }

  dropout(name: string, input: string, p: number): string {
    return this.add({ op: 'dropout', name, output: name, inputs: [input], p, shape: this.shapeOf(input) });
  }

  linear(name: string, input: string, outF: number): string {
    const inF = this.shapeOf(input)[0]!;
    this.g.params.push({ name: `${name}.weight`, shape: [outF, inF], role: 'linear.weight' }, { name: `${name}.bias`, shape: [outF], role: 'linear.bias' });
    return this.add({ op: 'linear', name, output: name, inputs: [input], inF, outF, shape: [outF] });
  }

  /** Values joined along per-image axis `axis`; every other dim must agree. */
  concat(name: string, inputs: readonly string[], axis: number): string {
    if (inputs.length < 1) throw new Error(`graph builder: concat ${name} needs at least one input`);
    const shapes = inputs.map((v) => this.shapeOf(v));
    const rank = shapes[0]!.length;
    if (!Number.isInteger(axis) || axis < 0 || axis >= rank) throw new Error(`graph builder: concat ${name} axis ${axis} outside [0, ${rank})`);
    for (const [i, s] of shapes.entries()) {
      if (s.length !== rank || s.some((d, j) => j !== axis && d !== shapes[0]![j])) {
        throw new Error(`graph builder: concat ${name}: input ${inputs[i]} has shape [${s.join(', ')}], input ${inputs[0]} [${shapes[0]!.join(', ')}] (only axis ${axis} may differ)`);
      }
    }
    const shape = shapes[0]!.map((d, j) => (j === axis ? shapes.reduce((t, s) => t + s[j]!, 0) : d));
    return this.add({ op: 'concat', name, output: name, inputs: [...inputs], axis, shape });
  }

  /** The same values in per-image shape `shape`; one dim may be -1 (inferred). */
  reshape(name: string, input: string, shape: readonly number[]): string {
    const n = numel(this.shapeOf(input));
    const known = shape.filter((d) => d !== -1);
    if (shape.length - known.length > 1 || known.some((d) => !Number.isInteger(d) || d < 1)) {
      throw new Error(`graph builder: reshape ${name} to [${shape.join(', ')}]: dims must be positive integers, at most one -1`);
    }
    const rest = n / numel(known);
    const out = shape.map((d) => (d === -1 ? rest : d));
    if (!Number.isInteger(rest) || numel(out) !== n) throw new Error(`graph builder: reshape ${name}: [${this.shapeOf(input).join(', ')}] (${n} values) cannot be [${shape.join(', ')}]`);
    return this.add({ op: 'reshape', name, output: name, inputs: [input], shape: out });
  }

  flatten(name: string, input: string): string {
    return this.reshape(name, input, [-1]);
  }

  /** Per-image axes permuted: output dim i is input dim perm[i]. */
  transpose(name: string, input: string, perm: readonly number[]): string {
    const s = this.shapeOf(input);
    if (perm.length !== s.length || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
      throw new Error(`graph builder: transpose ${name}: [${perm.join(', ')}] is not a permutation of the ${s.length} axes of [${s.join(', ')}]`);
    }
    return this.add({ op: 'transpose', name, output: name, inputs: [input], perm: [...perm], shape: perm.map((p) => s[p]!) });
  }

  softmax(name: string, input: string, axis: number): string {
    const s = this.shapeOf(input);
    if (!Number.isInteger(axis) || axis < 0 || axis >= s.length) throw new Error(`graph builder: softmax ${name} axis ${axis} outside [0, ${s.length})`);
    return this.add({ op: 'softmax', name, output: name, inputs: [input], axis, shape: s });
  }

  /** Declare `value` a graph output named `name`. */
  output(name: string, value: string): void {
    this.shapeOf(value);
    if (this.g.outputs.some((o) => o.name === name)) throw new Error(`graph builder: duplicate output name ${name}`);
    this.g.outputs.push({ name, value });
  }

  /**
   * torchvision's classifier as an nn.Sequential: global average pool, dropout `classifier.0` (when p > 0), then
   * per hidden layer a linear, its activation and a dropout (`classifier.1`, `.2`, `.3`, ...), and the final linear
   * to the classes (`classifier.1` without hidden layers), the logits output.
   */
  torchvisionHead(input: string, dropout: number, hidden: readonly HeadLayer[] = []): void {
    const { numClasses } = this.g.config;
    this.beginRow('pool', 'avgpool', input, { n: 1 });
    let x = this.avgpool('pool', input);
    this.beginRow('classifier', hidden.length ? `mlp ${[...hidden.map((h) => h.units), numClasses].join('-')}` : 'dropout + linear', x, { c: numClasses });
    if (dropout > 0) x = this.dropout('classifier.0', x, dropout);
    let i = 1;
    for (const h of hidden) {
      x = this.linear(`classifier.${i}`, x, h.units);
      if (h.activation !== 'linear') x = this.act(`classifier.${i + 1}`, x, h.activation);
      if ((h.dropout ?? 0) > 0) x = this.dropout(`classifier.${i + 2}`, x, h.dropout!);
      i += 3;
    }
    this.output(LOGITS, this.linear(`classifier.${i}`, x, numClasses));
  }

  /** conv -> BN -> activation (torchvision's Conv2dNormActivation); the activation node is named `${bnName}.act`. */
  convBnAct(convName: string, bnName: string, input: string, outC: number, k: number, stride: number, groups = 1, act = true): string {
    const y = this.bn(bnName, this.conv(convName, input, outC, k, stride, groups));
    return act ? this.act(`${bnName}.act`, y) : y;
  }
}
