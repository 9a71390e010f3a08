/**
 * MobileNetV2 (Sandler et al., CVPR 2018) as a layer graph, line by line after Table 2.
 *  - `imagenet`: torchvision's mobilenet_v2 (state-dict keys `features.N...`, `classifier.1`).
 *  - `seed-cifar`: the seed document's CIFAR-10 model (kuangliu/pytorch-cifar; keys `conv1`, `layers.N...`).
 */
import { GraphBuilder, type LayerStyle } from './builder.js';
import { ARCHS, IMAGENET_SETTINGS, MOBILENETV2, SEED_SETTINGS, makeConfig, parseModelConfig, type Arch, type ModelConfig } from './config.js';
import { fitAlpha, type BaseConfig, type ModelFamily } from './family.js';
import { LOGITS, type Graph } from './graph.js';

/** torchvision's _make_divisible: round to the nearest multiple of `divisor`, never below 90% of v. */
export function makeDivisible(v: number, divisor = 8, minValue = divisor): number {
  let newV = Math.max(minValue, Math.floor((v + divisor / 2) / divisor) * divisor);
  if (newV < 0.9 * v) newV += divisor;
  return newV;
}

/** Python's round() (banker's rounding), as torchvision's int(round(inp * t)). */
function pyRound(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export function buildGraph(config: ModelConfig): Graph<ModelConfig> {
  return config.arch === 'imagenet' ? imagenet(config) : seedCifar(config);
}

/** Convenience: a graph from an arch name and overrides. */
export function mobilenetV2(arch: Arch = 'imagenet', overrides: Partial<ModelConfig> = {}): Graph<ModelConfig> {
  return buildGraph(makeConfig(arch, overrides));
}

export function isMobileNetV2(graph: Graph): graph is Graph<ModelConfig> {
  return graph.config.family === MOBILENETV2;
}

const CLASSIFIER: Record<Arch, string> = { imagenet: 'classifier.1.weight', 'seed-cifar': 'linear.weight' };
/** Width multipliers of the published models, tried in turn on a file without metadata. */
const STANDARD_ALPHAS = [0.35, 0.5, 0.75, 1, 1.3, 1.4];

export const mobilenetV2Family: ModelFamily<ModelConfig> = {
  name: MOBILENETV2,
  variants: ARCHS,
  makeConfig: (variant, overrides) => makeConfig((variant ?? 'imagenet') as Arch, overrides),
  parseConfig: parseModelConfig,
  build: buildGraph,
  defaultPreprocess: (c) => (c.arch === 'imagenet' ? 'torchvision' : 'seed-cifar'),
  defaultLabels: (c) => {
    if (c.arch === 'imagenet' && c.numClasses === 1000) return 'imagenet';
    if (c.arch === 'seed-cifar' && c.numClasses === 10) return 'cifar10';
    return undefined;
  },
  describe: (c) => `MobileNetV2 ${c.arch}, alpha ${c.alpha}, ${c.resolution}x${c.resolution}x${c.inChannels}, ${c.numClasses} classes, ${c.activation}${c.shortcut === 'bottleneck' ? '' : `, shortcuts: ${c.shortcut}`}`,
  detect(tensors) {
    let arch: Arch | undefined;
    // features.1.0.0 is MobileNetV1's first depthwise conv; torchvision's V2 block 1 is features.1.conv.
    if (tensors.has('features.0.0.weight') && !tensors.has('features.1.0.0.weight')) arch = 'imagenet';
    else if (tensors.has('conv1.weight') && tensors.has('layers.0.conv1.weight')) arch = 'seed-cifar';
    return arch && { variant: arch, classifier: CLASSIFIER[arch] };
  },
  // Table 3 is the paper's network: α 1 at 224 with its shortcuts (the 'expansion' ablation materialises more).
  paperMemory: (c) => (c.arch === 'imagenet' && c.alpha === 1 && c.resolution === 224 && c.shortcut === 'bottleneck' ? '200K' : undefined),
  fitShapes: (variant, base, tensors) => ({ alpha: fitAlpha(STANDARD_ALPHAS, (alpha) => mobilenetV2(variant as Arch, { ...base, alpha }), tensors) }),
};

/** What the backbone needs of a config: width α and the two ablation switches. */
export type FeatureOptions = Pick<ModelConfig, 'alpha' | 'linearBottleneck' | 'shortcut'>;

/**
 * The 'expansion' shortcut (see ShortcutKind): `prev`, the previous block's expanded tensor, added to this
 * block's expanded tensor `y` when their shapes are equal.
 */
function expansionShortcut<C extends BaseConfig & LayerStyle>(b: GraphBuilder<C>, name: string, prev: string | undefined, y: string): string {
  return prev !== undefined && b.shapeOf(prev).join() === b.shapeOf(y).join() ? b.addValues(name, prev, y) : y;
}

/** The features of torchvision's MobileNetV2 (stem, Table 2's blocks, 1x1 conv to 1280·max(1, α)) on `input`. */
export interface Features {
  /** The last conv's activation (`features.18`, 1280 channels at α ≤ 1). */
  out: string;
  /** expand[i]: the activation after block `features.i`'s expand conv (undefined for t = 1 blocks and the convs). */
  expand: (string | undefined)[];
}

/** Builds `features.0` .. `features.18` (state-dict names as torchvision's), one summary row per Table-2 layer. */
export function imagenetFeatures<C extends BaseConfig & LayerStyle>(b: GraphBuilder<C>, input: string, opts: FeatureOptions): Features {
  const { alpha } = opts;
  let inC = makeDivisible(32 * alpha);
  const lastC = makeDivisible(1280 * Math.max(1, alpha));
  const expand: (string | undefined)[] = [];
  let prevExpanded: string | undefined;

  b.beginRow('features.0', 'conv2d 3x3', input, { c: inC, n: 1, s: 2 });
  let x = b.convBnAct('features.0.0', 'features.0.1', input, inC, 3, 2);

  let idx = 1;
  for (const [t, c, n, s] of IMAGENET_SETTINGS) {
    const outC = makeDivisible(c * alpha);
    for (let i = 0; i < n; i++) {
      const stride = i === 0 ? s : 1;
      const p = `features.${idx}.conv`;
      const hidden = pyRound(inC * t);
      b.beginRow(`features.${idx}`, 'bottleneck', x, { t, c: outC, n, s: stride });
      let y = x;
      let j = 0; // torchvision numbers the Sequential's children
      if (t !== 1) {
        y = b.convBnAct(`${p}.${j}.0`, `${p}.${j}.1`, y, hidden, 1, 1);
        if (opts.shortcut === 'expansion') y = expansionShortcut(b, `features.${idx}.expand_add`, prevExpanded, y);
        prevExpanded = expand[idx] = y;
        j++;
      }
      y = b.convBnAct(`${p}.${j}.0`, `${p}.${j}.1`, y, hidden, 3, stride, hidden);
      y = b.bn(`${p}.${j + 2}`, b.conv(`${p}.${j + 1}`, y, outC, 1, 1));
      if (!opts.linearBottleneck) y = b.act(`${p}.${j + 2}.act`, y);
      if (opts.shortcut === 'bottleneck' && stride === 1 && inC === outC) y = b.addValues(`features.${idx}.add`, x, y);
      x = y;
      inC = outC;
      idx++;
    }
  }

  b.beginRow(`features.${idx}`, 'conv2d 1x1', x, { c: lastC, n: 1, s: 1 });
  x = b.convBnAct(`features.${idx}.0`, `features.${idx}.1`, x, lastC, 1, 1);
  return { out: x, expand };
}

function imagenet(cfg: ModelConfig): Graph<ModelConfig> {
  const b = new GraphBuilder(cfg);
  b.torchvisionHead(imagenetFeatures(b, b.g.input, cfg).out, cfg.dropout, cfg.head);
  return b.g;
}

function seedCifar(cfg: ModelConfig): Graph<ModelConfig> {
  const b = new GraphBuilder(cfg);
  const ch = (c: number): number => (cfg.alpha === 1 ? c : makeDivisible(c * cfg.alpha));
  let inC = ch(32);
  const lastC = cfg.alpha > 1 ? makeDivisible(1280 * cfg.alpha) : 1280;

  b.beginRow('conv1', 'conv2d 3x3', b.g.input, { c: inC, n: 1, s: 1 });
  let x = b.convBnAct('conv1', 'bn1', b.g.input, inC, 3, 1);

  let idx = 0;
  let prevExpanded: string | undefined;
  for (const [t, c, n, s] of SEED_SETTINGS) {
    const outC = ch(c);
    for (let i = 0; i < n; i++) {
      const stride = i === 0 ? s : 1;
      const p = `layers.${idx}`;
      const planes = t * inC;
      b.beginRow(p, 'bottleneck', x, { t, c: outC, n, s: stride });
      // The seed keeps the expand conv even for t = 1.
      let y = b.convBnAct(`${p}.conv1`, `${p}.bn1`, x, planes, 1, 1);
      if (cfg.shortcut === 'expansion') y = prevExpanded = expansionShortcut(b, `${p}.expand_add`, prevExpanded, y);
      y = b.convBnAct(`${p}.conv2`, `${p}.bn2`, y, planes, 3, stride, planes);
      y = b.bn(`${p}.bn3`, b.conv(`${p}.conv3`, y, outC, 1, 1));
      if (!cfg.linearBottleneck) y = b.act(`${p}.bn3.act`, y);
      if (cfg.shortcut === 'bottleneck' && stride === 1) {
        // A 1x1 conv + BN projection when the channel count changes (not in the paper).
        const sc = inC === outC ? x : b.bn(`${p}.shortcut.1`, b.conv(`${p}.shortcut.0`, x, outC, 1, 1));
        y = b.addValues(`${p}.add`, y, sc);
      }
      x = y;
      inC = outC;
      idx++;
    }
  }

  b.beginRow('conv2', 'conv2d 1x1', x, { c: lastC, n: 1, s: 1 });
  x = b.convBnAct('conv2', 'bn2', x, lastC, 1, 1);
  b.beginRow('pool', 'avgpool 4x4', x, { n: 1 });
  x = b.avgpool('pool', x);
  b.beginRow('linear', 'linear', x, { c: cfg.numClasses });
  if (cfg.dropout > 0) x = b.dropout('dropout', x, cfg.dropout);
  b.output(LOGITS, b.linear('linear', x, cfg.numClasses));
  return b.g;
}
