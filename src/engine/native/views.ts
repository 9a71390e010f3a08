/**
 * Layout nodes (transpose, reshape, concat) as the native engine runs them: not as ops of their own but as
 * strided windows ("views") onto the plain graph-output arrays. Each output's contiguous view is pulled back
 * through the layout nodes to the values real ops compute (concat: a slice at an offset, transpose: permuted
 * strides, reshape: split or merged strides); each such value is then one reorder from the engine's activation
 * layout into its window, and its gradient the reverse reorder. An SSD head's [A·k, H, W] → [H, W, A·k] →
 * [H·W·A, k] → concat over feature maps costs one reorder per head and no copy for the concat.
 */
import type { ConcatNode, GraphOutput, ReshapeNode, TransposeNode } from '../../model/graph.js';
import { consumers } from '../../model/graph.js';

/** Element (i0, i1, ...) of the window is element offset + Σ i_k·strides[k] of plain buffer `buffer`. */
export interface View {
  buffer: number;
  offset: number;
  dims: number[];
  strides: number[];
}

export type LayoutNode = ConcatNode | ReshapeNode | TransposeNode;

interface AnyNode {
  op: string;
  name: string;
  inputs: readonly string[];
  output: string;
  shape: readonly number[];
}

export const isLayout = (n: AnyNode): n is LayoutNode => n.op === 'transpose' || n.op === 'reshape' || n.op === 'concat';

/** Row-major strides of dims. */
export function contiguous(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) s[i] = s[i + 1]! * dims[i + 1]!;
  return s;
}

/** The fields the addon's reorder takes for a view (`srcView` / `dstView`). */
export function viewSpec(v: View): { offset: number; dims: number[]; strides: number[] } {
  return { offset: v.offset, dims: v.dims, strides: v.strides };
}

/**
 * Strides of `dims` over the same elements as (`from`, `strides`) in row-major order, or undefined when the
 * window is not contiguous where the reshape would merge dims (PyTorch's view rule).
 */
export function reshapeStrides(from: readonly number[], strides: readonly number[], dims: readonly number[]): number[] | undefined {
  const out = new Array<number>(dims.length).fill(1);
  let d = dims.length - 1;
  let base = strides[from.length - 1]!;
  let chunk = 1;
  let made = 1;
  for (let t = from.length - 1; t >= 0; t--) {
    chunk *= from[t]!;
    // A chunk of old dims ends where the next one up is not laid out right above it.
    if (t === 0 || (from[t - 1] !== 1 && strides[t - 1] !== chunk * base)) {
      while (d >= 0 && (made < chunk || dims[d] === 1)) {
        out[d] = made * base;
        made *= dims[d]!;
        d--;
      }
      if (made !== chunk) return undefined;
      if (t > 0) {
        base = strides[t - 1]!;
        chunk = 1;
        made = 1;
      }
    }
  }
  return d === -1 ? out : undefined;
}

/**
 * Where each value a real op computes must be copied so that the graph outputs come out right, given each
 * output's plain [N, ...shape] buffer. Throws, naming the node, when a layout node feeds anything but layout
 * nodes and graph outputs (the native engine has no standalone transpose/reshape/concat).
 */
export function outputViews(
  graph: { input: string; outputs: readonly GraphOutput[]; nodes: readonly AnyNode[] },
  batch: number,
  outputBuffer: (o: GraphOutput) => number,
  shapeOf: (value: string) => readonly number[],
  what: string,
): Map<string, View[]> {
  const users = consumers(graph);
  const byOutput = new Map(graph.nodes.map((n) => [n.output, n] as const));
  for (const n of graph.nodes) {
    if (!isLayout(n)) continue;
    const reader = (users.get(n.output) ?? []).find((u) => !isLayout(u));
    if (reader) {
      throw new Error(`${what}: the native engine runs ${n.op} nodes only on the way to a graph output; ${n.op} ${n.name} feeds ${reader.op} ${reader.name} (use --engine ort)`);
    }
  }
  const views = new Map<string, View[]>();
  const pull = (value: string, v: View): void => {
    const n = byOutput.get(value);
    if (!n || !isLayout(n)) {
      views.set(value, [...(views.get(value) ?? []), v]);
      return;
    }
    if (n.op === 'transpose') {
      // Output dim i is input dim perm[i]: the input's dim perm[i] steps by the output's stride i.
      const dims = [batch, ...shapeOf(n.inputs[0]!)];
      const strides = [v.strides[0]!, ...new Array<number>(n.perm.length).fill(0)];
      n.perm.forEach((p, i) => (strides[p + 1] = v.strides[i + 1]!));
      pull(n.inputs[0]!, { ...v, dims, strides });
    } else if (n.op === 'reshape') {
      const dims = [batch, ...shapeOf(n.inputs[0]!)];
      const strides = reshapeStrides(v.dims, v.strides, dims);
      if (!strides) throw new Error(`${what}: reshape ${n.name} of a strided window to [${dims.join(', ')}] needs a copy the native engine does not make (use --engine ort)`);
      pull(n.inputs[0]!, { ...v, dims, strides });
    } else {
      let offset = v.offset;
      for (const x of n.inputs) {
        const dims = [batch, ...shapeOf(x)];
        pull(x, { ...v, offset, dims });
        offset += dims[n.axis + 1]! * v.strides[n.axis + 1]!;
      }
    }
  };
  for (const o of graph.outputs) {
    const dims = [batch, ...shapeOf(o.value)];
    pull(o.value, { buffer: outputBuffer(o), offset: 0, dims, strides: contiguous(dims) });
  }
  return views;
}

/** A view padded with unit dims to `rank` (a pooled [N, C] value lives in an [N, C, 1, 1] buffer). */
export function padView(v: View, rank: number): View {
  const dims = [...v.dims];
  const strides = [...v.strides];
  while (dims.length < rank) {
    dims.push(1);
    strides.push(1);
  }
  return { ...v, dims, strides };
}
