/**
 * The metadata a model file carries, one schema for safetensors `__metadata__` and ONNX `metadata_props`
 * alike (both are string -> string maps): what the model is (family, config), how to feed it (preprocessing
 * preset), what its outputs mean (a label set and/or class names), and where it came from.
 *
 * Schema 1 (`mnv2.schema` = '1') names the family; files written before it hold `mnv2.config` with an `arch`
 * and no family, and sometimes only the config (ONNX exports): they read as schema 0, family mobilenetv2.
 * Schema 2 adds the config's `head` (hidden layers of a classifier head); a file is written with the lowest
 * schema that describes it, so models with a single-linear head stay readable by schema-1 readers, and a
 * schema-1 reader refuses a multi-layer head instead of building the wrong model.
 */
import { definedOnly, type BaseConfig } from '../model/family.js';
import { configFromJSON, familyOf } from '../model/registry.js';
import { labelsFor, type LabelSetName } from '../data/labels.js';
import { fail } from '../util/errors.js';

export const SCHEMA_KEY = 'mnv2.schema';
export const SCHEMA_VERSION = 2;
export const FAMILY_KEY = 'mnv2.family';
/** The family's config as JSON: the file alone rebuilds its model. */
export const CONFIG_KEY = 'mnv2.config';
/** Preprocessing preset name (src/data/preprocess.ts). */
export const PREPROCESS_KEY = 'mnv2.preprocess';
/** A standard label set's name (src/data/labels.ts). */
export const LABELS_KEY = 'mnv2.labels';
/** Class names as a JSON array (image folders: the folder names). */
export const CLASSES_KEY = 'mnv2.classes';
/** Provenance: the file the weights were imported from. */
export const SOURCE_KEY = 'mnv2.source';
/** An imported detector's TFLite_Detection_PostProcess options (JSON: box coder scales, NMS IoU). */
export const POSTPROCESS_KEY = 'mnv2.postprocess';

export interface ModelInfo {
  config: BaseConfig;
  preprocess?: string;
  labels?: string;
  classes?: readonly string[];
  source?: string;
  /** Schema the file was written with (0: before `mnv2.schema`). */
  schema: number;
}

/** What a writer supplies; the schema version follows from the config (see schemaFor). */
export type ModelInfoInput = Omit<ModelInfo, 'schema'>;

/** The metadata entries of a model; the same for safetensors and ONNX. */
export function encodeModelInfo(info: ModelInfoInput): Record<string, string> {
  const out: Record<string, string> = {
    [SCHEMA_KEY]: String(schemaFor(info.config)),
    [FAMILY_KEY]: info.config.family,
    [CONFIG_KEY]: JSON.stringify(info.config),
  };
  if (info.preprocess !== undefined) out[PREPROCESS_KEY] = info.preprocess;
  if (info.labels !== undefined) out[LABELS_KEY] = info.labels;
  if (info.classes !== undefined) out[CLASSES_KEY] = JSON.stringify(info.classes);
  if (info.source !== undefined) out[SOURCE_KEY] = info.source;
  return out;
}

/** The lowest schema that describes a config: 2 for a classifier head with hidden layers, else 1. */
function schemaFor(config: BaseConfig): number {
  const head = (config as BaseConfig & { head?: readonly unknown[] }).head;
  return head !== undefined && head.length > 0 ? 2 : 1;
}

/** The descriptive entries of `meta` (preprocess, labels, classes, source) without the config. */
export function carriedInfo(meta: Readonly<Record<string, string>>, source: string): Omit<ModelInfoInput, 'config'> {
  const out: Omit<ModelInfoInput, 'config'> = {};
  if (meta[PREPROCESS_KEY] !== undefined) out.preprocess = meta[PREPROCESS_KEY];
  if (meta[LABELS_KEY] !== undefined) out.labels = meta[LABELS_KEY];
  if (meta[SOURCE_KEY] !== undefined) out.source = meta[SOURCE_KEY];
  const classes = meta[CLASSES_KEY];
  if (classes !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(classes);
    } catch (e) {
      fail(source, `${CLASSES_KEY} metadata is not valid JSON (${(e as Error).message})`);
    }
    if (!Array.isArray(parsed) || !parsed.every((c) => typeof c === 'string')) fail(source, `${CLASSES_KEY} metadata must be a JSON array of strings`);
    out.classes = parsed as string[];
  }
  return out;
}

/** The model described by a file's metadata, or undefined when it has no config (e.g. a plain PyTorch state dict). */
export function decodeModelInfo(meta: Readonly<Record<string, string>>, source: string): ModelInfo | undefined {
  const json = meta[CONFIG_KEY];
  if (json === undefined) return undefined;
  const rawSchema = meta[SCHEMA_KEY];
  const schema = rawSchema === undefined ? 0 : Number(rawSchema);
  if (!Number.isInteger(schema) || schema < 0 || schema > SCHEMA_VERSION) {
    fail(source, `unsupported ${SCHEMA_KEY} '${rawSchema}' (this version reads up to ${SCHEMA_VERSION}); a newer mobilenetv2-ts wrote it`);
  }
  const config = configFromJSON(json, source);
  const family = meta[FAMILY_KEY];
  if (family !== undefined && family !== config.family) fail(source, `${FAMILY_KEY} '${family}' disagrees with the config's family '${config.family}'`);
  const info: ModelInfo = { config, schema, ...carriedInfo(meta, source) };
  if (info.classes && info.classes.length !== config.numClasses) {
    fail(source, `${CLASSES_KEY} has ${info.classes.length} names, the model has ${config.numClasses} classes`);
  }
  return info;
}

/** The preprocessing preset of a model: its file's, else its family's default. */
export function preprocessOf(info: Pick<ModelInfo, 'config' | 'preprocess'>): string {
  return info.preprocess ?? familyOf(info.config).defaultPreprocess(info.config);
}

/** The label set of a model: its file's, else its family's default for the config (if it is a standard one). */
export function labelSetOf(info: Pick<ModelInfo, 'config' | 'labels'>): string | undefined {
  return info.labels ?? familyOf(info.config).defaultLabels(info.config);
}

/** Names of a model's outputs: its file's class names, else its label set's (when it has one). */
export function classNamesOf(info: Pick<ModelInfo, 'config' | 'labels' | 'classes'>): readonly string[] | undefined {
  if (info.classes) return info.classes;
  const set = labelSetOf(info);
  return set === undefined ? undefined : labelsFor(set as LabelSetName);
}

/** Everything but the config: what a writer passes on when it stores the same model again (export, retrain). */
export function descriptiveInfo(info: ModelInfoInput | ModelInfo): Omit<ModelInfoInput, 'config'> {
  const { preprocess, labels, classes, source } = info;
  return definedOnly({ preprocess, labels, classes, source });
}

/**
 * What an export of a model file stores beside its config: the descriptive info and the entries of the file's
 * metadata that change how its outputs are read (a detector's post-processing options), so the ONNX file alone
 * decodes as the model file does.
 */
export function exportMetadataOf(m: { info: ModelInfoInput | ModelInfo; metadata?: Readonly<Record<string, string>> }): {
  info: Omit<ModelInfoInput, 'config'>;
  metadata: Record<string, string>;
} {
  const post = m.metadata?.[POSTPROCESS_KEY];
  return { info: descriptiveInfo(m.info), metadata: post !== undefined ? { [POSTPROCESS_KEY]: post } : {} };
}
