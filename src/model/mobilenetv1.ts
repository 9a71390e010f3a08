/**
 * MobileNetV1 (Howard et al. 2017) as a layer graph, line by line after Table 1: a full 3x3 conv, 13
 * depthwise-separable pairs (3x3 depthwise conv + BN + ReLU6, 1x1 pointwise conv + BN + ReLU6, no shortcuts),
 * global average pool, fully connected. State-dict keys in torchvision's style (tools/mobilenet_v1.py):
 * `features.0.{0,1}` the stem conv/BN, `features.N.0.{0,1}` pair N's depthwise conv/BN, `features.N.1.{0,1}` its
 * pointwise conv/BN, `classifier.1` the linear layer.
 *  - `mobilenetv1`: the ImageNet network (stride 32 in all).
 *  - `mobilenetv1-cifar`: the same layers for 32x32 input, with the strides the seed's CIFAR MobileNetV2
 *    changes set to 1 (the stem and the first stride-2 pair), so 32x32 ends at 4x4 like the seed's.
 */
import { GraphBuilder } from './builder.js';
import type { ModelConfig } from './config.js';
import type { Graph } from './graph.js';

/** One Table-1 pair after the stem: depthwise stride s, pointwise output channels c. */
export type PairSetting = readonly [s: number, c: number];

/**
 * Table 1's 13 depthwise-separable pairs. The table prints the last depthwise conv as s2, but its input and
 * output are both 7x7; it is stride 1, as in the paper's own 569M multiply-adds and every implementation.
 */
export const TABLE1_PAIRS: readonly PairSetting[] = [
  [1, 64],
  [2, 128],
  [1, 128],
  [2, 256],
  [1, 256],
  [2, 512],
  [1, 512], [1, 512], [1, 512], [1, 512], [1, 512],
  [2, 1024],
  [1, 1024],
];

export function mobilenetV1Graph(cfg: ModelConfig): Graph {
  const b = new GraphBuilder(cfg);
  const cifar = cfg.arch === 'mobilenetv1-cifar';
  // Width α: αM channels, truncated (the paper's αM, keras.applications.MobileNet's int(c * α)).
  const width = (c: number): number => Math.trunc(c * cfg.alpha);
  let inC = width(32);
  const stemStride = cifar ? 1 : 2;

  b.beginRow('features.0', 'conv2d 3x3', b.g.input, { c: inC, n: 1, s: stemStride });
  let x = b.convBnAct('features.0.0', 'features.0.1', b.g.input, inC, 3, stemStride);

  const firstS2 = TABLE1_PAIRS.findIndex(([s]) => s === 2);
  TABLE1_PAIRS.forEach(([s, c], i) => {
    const stride = cifar && i === firstS2 ? 1 : s;
    const outC = width(c);
    const p = `features.${i + 1}`;
    b.beginRow(p, 'conv dw 3x3 + conv 1x1', x, { c: outC, n: 1, s: stride });
    x = b.convBnAct(`${p}.0.0`, `${p}.0.1`, x, inC, 3, stride, inC);
    x = b.convBnAct(`${p}.1.0`, `${p}.1.1`, x, outC, 1, 1);
    inC = outC;
  });

  b.torchvisionHead(x);
  return b.g;
}
