/**
 * A model family: one architecture with its own config schema, builder, parameter names and default
 * preprocessing (torchvision's `mobilenet_v2`, `mobilenet_v3_large`, ... are families in this sense).
 * Engines, I/O and training see only the fields every config shares ({@link BaseConfig}); the rest belongs
 * to the family, which is looked up by `config.family` (src/model/registry.ts).
 */
import type { Graph } from './graph.js';

/** What every family's config holds: the engines need the input and output sizes, nothing else. */
export interface BaseConfig {
  /** Family name, as registered (`mobilenetv2`, ...). */
  family: string;
  /** Input height = width. */
  resolution: number;
  inChannels: number;
  numClasses: number;
}

/** One summary row's cost: the layer label (`features.3`, `head.0`, ...), its parameters and multiply-adds. */
export interface LayerCost {
  layer: string;
  params: number;
  macs: number;
}

/** A state dict without metadata, as far as detection needs it: tensor names and shapes. */
export type TensorShapes = ReadonlyMap<string, { shape: readonly number[] }>;

export interface ModelFamily<C extends BaseConfig = BaseConfig> {
  readonly name: string;
  /**
   * Named configs, selectable by `--arch` (mobilenetv2: `imagenet`, `seed-cifar`); the first is the default.
   * Each name is unique across all families.
   */
  readonly variants: readonly string[];
  /** A complete, validated config: the variant's defaults (or the first variant's), then `overrides`. */
  makeConfig(variant: string | undefined, overrides?: Partial<C>): C;
  /** A config read back from a file (fields the file lacks take their defaults); throws on invalid ones. */
  parseConfig(raw: Record<string, unknown>): C;
  build(config: C): Graph<C>;
  /** Preprocessing preset the family's models expect unless their file says otherwise. */
  defaultPreprocess(config: C): string;
  /** Label set of a config, when it is a standard one (ImageNet-1k, CIFAR-10). */
  defaultLabels(config: C): string | undefined;
  /** One line: family, variant and the main hyperparameters (summaries, error messages, ONNX doc strings). */
  describe(config: C): string;
  /**
   * For a state dict without metadata (e.g. converted from a .pth): the variant whose parameter names
   * these are, else undefined. `classifier` is the weight whose first dimension is the class count.
   */
  detect(tensors: TensorShapes): { variant: string; classifier: string } | undefined;
  /** Lines printed under `mnv2 summary`'s table (per-part totals, the paper's numbers beside them). */
  summaryNotes?(config: C, rows: readonly LayerCost[]): string[];
  /** The max activation memory MobileNetV2's Table 3 gives for this config (fp16, '200K'), when it gives one. */
  paperMemory?(config: C): string | undefined;
  /** Hyperparameters that change parameter shapes and that the names alone do not tell (width α). */
  fitShapes?(variant: string, base: Partial<C>, tensors: TensorShapes): Partial<C>;
}

/** Drop undefined fields, so `{ ...defaults, ...overrides }` keeps the defaults for what a caller left out. */
export function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The one width multiplier among `alphas` whose graph has exactly the tensors' parameter shapes, else undefined. */
export function fitAlpha(alphas: readonly number[], graphFor: (alpha: number) => Graph, tensors: TensorShapes): number | undefined {
  const fits = alphas.filter((alpha) => graphFor(alpha).params.every((p) => tensors.get(p.name)?.shape.join() === p.shape.join()));
  return fits.length === 1 ? fits[0] : undefined;
}
