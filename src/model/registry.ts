/**
 * The model families the project knows, by name. A family is added by writing its module (config, builder,
 * {@link ModelFamily} object) and listing it here; everything that reads or builds models goes through this.
 */
import { mobilenetV1Family } from './mobilenetv1.js';
import { mobilenetV2Family } from './mobilenetv2.js';
import { ssdliteFamily } from './ssdlite.js';
import type { BaseConfig, ModelFamily, TensorShapes } from './family.js';
import type { Graph } from './graph.js';
import { fail } from '../util/errors.js';

const FAMILIES: readonly ModelFamily[] = [mobilenetV2Family, mobilenetV1Family, ssdliteFamily];

export function families(): readonly ModelFamily[] {
  return FAMILIES;
}

export function getFamily(name: string): ModelFamily {
  const f = FAMILIES.find((x) => x.name === name);
  if (!f) throw new Error(`unknown model family '${name}' (known: ${FAMILIES.map((x) => x.name).join(', ')})`);
  return f;
}

export function familyOf(config: BaseConfig): ModelFamily {
  return getFamily(config.family);
}

/** The layer graph of any family's config. */
export function buildModel(config: BaseConfig): Graph {
  return familyOf(config).build(config);
}

/** Every `--arch` spelling: family names (their default variant) and variant names. */
export function archNames(): string[] {
  return FAMILIES.flatMap((f) => [f.name, ...f.variants.filter((v) => v !== f.name)]);
}

/** `--arch NAME`: a family (its first variant) or a variant of one. */
export function resolveArch(name: string): { family: ModelFamily; variant: string } {
  for (const family of FAMILIES) {
    if (family.name === name) return { family, variant: family.variants[0]! };
    if (family.variants.includes(name)) return { family, variant: name };
  }
  throw new Error(`unknown arch '${name}' (expected one of ${archNames().join(', ')})`);
}

/** A validated config from an `--arch` name and overrides. */
export function archConfig(arch: string, overrides: Record<string, unknown> = {}): BaseConfig {
  const { family, variant } = resolveArch(arch);
  return family.makeConfig(variant, overrides);
}

/**
 * A config from a plain object (file metadata, or an existing config with changes such as another class
 * count). Files written before the registry have no `family`: they are MobileNetV2 configs.
 */
export function parseConfig(raw: unknown, source: string): BaseConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(source, `model config metadata is not an object`);
  const r = raw as Record<string, unknown>;
  const name = r['family'] ?? mobilenetV2Family.name;
  try {
    return getFamily(String(name)).parseConfig(r);
  } catch (e) {
    fail(source, `${(e as Error).message}`);
  }
}

/** {@link parseConfig} on JSON text. */
export function configFromJSON(json: string, source: string): BaseConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (e) {
    fail(source, `model config metadata is not valid JSON (${(e as Error).message})`);
  }
  return parseConfig(raw, source);
}

/** The family and variant whose parameter names a state dict without metadata uses. */
export function detectFamily(tensors: TensorShapes): { family: ModelFamily; variant: string; classifier: string } | undefined {
  for (const family of FAMILIES) {
    const d = family.detect(tensors);
    if (d) return { family, ...d };
  }
  return undefined;
}

/** The same family's config with some fields changed (another class count, no dropout), validated. */
export function reconfigure<C extends BaseConfig>(config: C, changes: Partial<C> & Record<string, unknown>): C {
  return familyOf(config).parseConfig({ ...config, ...changes }) as C;
}
