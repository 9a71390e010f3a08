/** A small helper that appends nodes to a Graph while tracking shapes, parameters and summary rows. */
import type { BaseConfig } from './family.js';
import type { ActivationKind, Graph, GraphNode, LayerRow, Pads } from './graph.js';

export type PaddingMode = 'symmetric' | 'keras';

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
    this.g = { config, input: 'input', inputShape, output: 'input', nodes: [], params: [], buffers: [], layers: [] };
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
    this.g.nodes.push(node);
    this.g.output = node.output;
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
    return this.add({ op: 'conv', name, output: name, input, inC, outC, k, stride, pads, groups, bias, shape: [outC, oh, ow] });
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
    return this.add({ op: 'bn', name, output: name, input, channels: c, eps: this.g.config.bnEps, shape });
  }

  act(name: string, input: string, kind: ActivationKind = this.g.config.activation): string {
    return this.add({ op: 'act', name, output: name, input, kind, shape: this.shapeOf(input) });
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
    return this.add({ op: 'avgpool', name, output: name, input, shape: [c] });
  }

  dropout(name: string, input: string, p: number): string {
    return this.add({ op: 'dropout', name, output: name, input, p, shape: this.shapeOf(input) });
  }

  linear(name: string, input: string, outF: number): string {
    const inF = this.shapeOf(input)[0]!;
    this.g.params.push({ name: `${name}.weight`, shape: [outF, inF], role: 'linear.weight' }, { name: `${name}.bias`, shape: [outF], role: 'linear.bias' });
    return this.add({ op: 'linear', name, output: name, input, inF, outF, shape: [outF] });
  }

  /** conv -> BN -> activation (torchvision's Conv2dNormActivation); the activation node is named `${bnName}.act`. */
  convBnAct(convName: string, bnName: string, input: string, outC: number, k: number, stride: number, groups = 1, act = true): string {
    const y = this.bn(bnName, this.conv(convName, input, outC, k, stride, groups));
    return act ? this.act(`${bnName}.act`, y) : y;
  }
}
