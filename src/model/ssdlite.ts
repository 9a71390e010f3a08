/**
 * SSDLite + MobileNetV2 (Sandler et al. 2018, §6.2 and Table 6), as TF's Object Detection API builds
 * `ssdlite_mobilenet_v2_coco`: the MobileNetV2 backbone (this project's builder, unchanged), feature maps at
 * block 13's expand activation (stride 16) and the last conv (stride 32), four extra layers (1x1 to d/2,
 * 3x3/2 depthwise, 1x1 to d), and on every map a depthwise-separable box and class predictor.
 *
 * Parameter names: the backbone keeps torchvision's MobileNetV2 names (`features.N...`, so ImageNet weights
 * load into it as they are); extras and heads use torchvision's SSDLite names (`extra.i.j.{0,1}`,
 * `head.{regression,classification}_head.module_list.i.{0.0, 0.1, 1}`). TF scope ↔ name:
 *   Conv → features.0, expanded_conv[_N] → features.N+1, Conv_1 → features.18,
 *   layer_19_{1,2}_Conv2d_{i+2}_... → extra.i.{0 | 1 (depthwise), 2},
 *   BoxPredictor_i/{BoxEncoding,Class}Predictor[_depthwise] → head.{regression,classification}_head.module_list.i.{1 | 0}.
 *
 * Outputs, in TF's anchor order (feature map, then y, x, anchor; channel = anchor·K + k):
 * `boxes` [anchors, 4] box encodings (ty, tx, th, tw) and `logits` [anchors, classes + 1], column 0 background.
 */
import { GraphBuilder, type LayerStyle } from './builder.js';
import { checkSharedFields, invalidConfig } from './validate.js';
import { definedOnly, type BaseConfig, type LayerCost, type ModelFamily } from './family.js';
import type { Graph } from './graph.js';
import { imagenetFeatures } from './mobilenetv2.js';

export const SSDLITE = 'ssdlite';
export const BOXES = 'boxes';
export const DETECTION_LOGITS = 'logits';

/**
 * Whose SSD conventions the heads' outputs follow (box code order, sigmoid or softmax scores, NMS defaults):
 * the TF OD API's or torchvision's (src/detect/postprocess.ts). Training sets it from the recipe's loss.
 */
export type SsdStyle = 'tf' | 'torchvision';
export const SSD_STYLES: readonly SsdStyle[] = ['tf', 'torchvision'];

export interface SsdliteConfig extends BaseConfig, LayerStyle {
  family: typeof SSDLITE;
  ssdStyle: SsdStyle;
  /** Width multiplier α of the backbone and extras (TF's depth_multiplier). */
  alpha: number;
  /** Foreground classes; the class head has numClasses + 1 outputs (0 = background). */
  numClasses: number;
}

/** Output depths d of the four extra layers (the 1x1 before the depthwise has d/2). */
export const EXTRA_DEPTHS = [512, 256, 256, 128] as const;
/** Anchors per location on each feature map (TF's reduce_boxes_in_lowest_layer: 3 on the first). */
export const ANCHORS_PER_LOCATION = [3, 6, 6, 6, 6, 6] as const;
/** TF's min_depth of the extras. */
const MIN_DEPTH = 16;

const DEFAULTS: SsdliteConfig = {
  family: SSDLITE, alpha: 1, resolution: 300, inChannels: 3, numClasses: 90, ssdStyle: 'tf',
  bnEps: 1e-3, padding: 'keras', activation: 'relu6',
};

export function makeSsdliteConfig(overrides: Partial<SsdliteConfig> = {}): SsdliteConfig {
  const cfg: SsdliteConfig = { ...DEFAULTS, ...definedOnly(overrides), family: SSDLITE };
  checkSharedFields({ ...cfg, dropout: 0 });
  // Six feature maps down to stride 256 need at least 1x1 at the end: any size ≥ 129 works, 300 and 320 are usual.
  if (cfg.resolution < 129) invalidConfig(`ssdlite resolution must be at least 129, got ${cfg.resolution}`);
  if (!SSD_STYLES.includes(cfg.ssdStyle)) invalidConfig(`ssdlite ssdStyle must be ${SSD_STYLES.join(' or ')}, got ${String(cfg.ssdStyle)}`);
  return cfg;
}

/** 1x1 → d/2, 3x3/2 depthwise, 1x1 → d, each conv + BN + activation (torchvision's `_extra_block`). */
function extraLayer(b: GraphBuilder<SsdliteConfig>, i: number, x: string, d: number): string {
  const p = `extra.${i}`;
  const depth = (c: number): number => Math.max(Math.floor(c * b.g.config.alpha), MIN_DEPTH);
  b.beginRow(p, 'extra 1x1, dw 3x3/2, 1x1', x, { c: depth(d), n: 1, s: 2 });
  const mid = depth(d / 2);
  let y = b.convBnAct(`${p}.0.0`, `${p}.0.1`, x, mid, 1, 1);
  y = b.convBnAct(`${p}.1.0`, `${p}.1.1`, y, mid, 3, 2, mid);
  return b.convBnAct(`${p}.2.0`, `${p}.2.1`, y, depth(d), 1, 1);
}

/**
 * One SSDLite predictor tower on feature map i: 3x3 depthwise + BN + activation, 1x1 conv with bias to
 * anchors·k channels, then [anchors·k, H, W] → [H·W·anchors, k] (TF's `BoxPredictor_i/Reshape`).
 */
function predictor(b: GraphBuilder<SsdliteConfig>, head: string, i: number, x: string, anchors: number, k: number): string {
  const p = `head.${head}.module_list.${i}`;
  const c = b.shapeOf(x)[0]!;
  const y = b.convBnAct(`${p}.0.0`, `${p}.0.1`, x, c, 3, 1, c);
  const z = b.conv(`${p}.1`, y, anchors * k, 1, 1, 1, true);
  return b.reshape(`${p}.reshape`, b.transpose(`${p}.hwc`, z, [1, 2, 0]), [-1, k]);
}

export function buildSsdlite(cfg: SsdliteConfig): Graph<SsdliteConfig> {
  const b = new GraphBuilder(cfg);
  const features = imagenetFeatures(b, b.g.input, { alpha: cfg.alpha, linearBottleneck: true, shortcut: 'bottleneck' });
  // TF's `layer_15/expansion_output`: expanded_conv_13 (= features.14) after its expand conv's ReLU6, stride 16.
  const maps = [features.expand[14]!, features.out];
  for (const [i, d] of EXTRA_DEPTHS.entries()) maps.push(extraLayer(b, i, maps[maps.length - 1]!, d));

  const boxes: string[] = [];
  const logits: string[] = [];
  for (const [i, x] of maps.entries()) {
    const a = ANCHORS_PER_LOCATION[i]!;
    b.beginRow(`head.${i}`, 'dw 3x3 + 1x1 (box, class)', x, { c: a * (4 + cfg.numClasses + 1) });
    boxes.push(predictor(b, 'regression_head', i, x, a, 4));
    logits.push(predictor(b, 'classification_head', i, x, a, cfg.numClasses + 1));
  }
  b.beginRow('outputs', 'concat', maps[0]!, {});
  b.output(BOXES, b.concat('head.boxes', boxes, 0));
  b.output(DETECTION_LOGITS, b.concat('head.logits', logits, 0));
  return b.g;
}

/** Feature map sizes (H = W) of a config, in output order: what the anchor generator needs. */
export function featureMapSizes(graph: Graph<SsdliteConfig>): number[] {
  return ANCHORS_PER_LOCATION.map((_, i) => graph.nodes.find((n) => n.name === `head.regression_head.module_list.${i}.1`)!.shape[1]!);
}

/**
 * Backbone / extras / heads totals beside the paper: Table 5 gives the SSDLite "head" (here extras + box
 * predictors) at 80 classes, Table 6 the whole detector at 320×320 with 80 classes. Parameters count conv
 * weights, BN γ/β and predictor biases, as the TF variables do.
 */
function paperNotes(c: SsdliteConfig, rows: readonly LayerCost[]): string[] {
  const part = (prefix: string): [number, number] =>
    rows.filter((r) => r.layer.startsWith(prefix)).reduce<[number, number]>(([p, m], r) => [p + r.params, m + r.macs], [0, 0]);
  const [bb, ex, hd] = [part('features.'), part('extra.'), part('head.')];
  const M = (v: number): string => `${(v / 1e6).toFixed(2)}M`;
  const B = (v: number): string => `${(v / 1e9).toFixed(3)}B`;
  const same = c.numClasses === 80 && c.resolution === 320 && c.alpha === 1;
  return [
    `backbone (features.*)   ${M(bb[0])} params  ${B(bb[1])} MAdds`,
    `extras (extra.*)        ${M(ex[0])} params  ${B(ex[1])} MAdds`,
    `box predictors (head.*) ${M(hd[0])} params  ${B(hd[1])} MAdds`,
    `paper Table 5, SSDLite head (extras + predictors, 80 classes): 2.1M params, 0.35B MAdds; here ${M(ex[0] + hd[0])}, ${B(ex[1] + hd[1])}`,
    `paper Table 6, MNet V2 + SSDLite at 320x320, 80 classes: 4.3M params, 0.8B MAdds; here ${M(bb[0] + ex[0] + hd[0])}, ${B(bb[1] + ex[1] + hd[1])}`,
    same
      ? 'this is the paper\'s configuration: the parameters match both tables; the whole-model MAdds match Table 6, while the head\'s are about half of' +
        ' Table 5\'s 0.35B, which the paper does not break down'
      : `the paper's numbers are for alpha 1, 80 classes at 320x320 (mnv2 summary --arch ssdlite --classes 80 --resolution 320); each class adds` +
        ' Σ anchors × channels of the class predictors, and MAdds grow with the input area',
  ];
}

export const ssdliteFamily: ModelFamily<SsdliteConfig> = {
  name: SSDLITE,
  variants: [SSDLITE],
  makeConfig: (_variant, overrides) => makeSsdliteConfig(overrides),
  parseConfig: (raw) => {
    if (raw['family'] !== SSDLITE) throw new Error(`model config of family '${String(raw['family'])}' is not an ${SSDLITE} config`);
    return makeSsdliteConfig(raw as Partial<SsdliteConfig>);
  },
  build: buildSsdlite,
  // [-1, 1] as Keras; `mnv2 detect` resizes to the input size without a crop, as the TF OD API does
  defaultPreprocess: () => 'keras',
  defaultLabels: () => undefined,
  describe: (c) => `SSDLite MobileNetV2, alpha ${c.alpha}, ${c.resolution}x${c.resolution}x${c.inChannels}, ${c.numClasses} classes + background`,
  // The class head's width is anchors·(classes + 1), not a class count: SSDLite files carry their config as metadata.
  detect: () => undefined,
  summaryNotes: paperNotes,
};
