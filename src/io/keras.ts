/**
 * Keras MobileNetV2 and MobileNet weight files (.h5, `model.save_weights` / keras.applications'
 * `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}[_no_top].h5` and
 * `mobilenet_{1_0|7_5|5_0|2_5}_{rows}_tf[_no_top].h5`), read with h5wasm.
 *
 * Layout: the root (or, in a whole-model file, the `model_weights` group) has the attribute `layer_names`; each
 * layer is a group with the attribute `weight_names` (`Conv1/kernel:0`, ...), and each weight is the dataset
 * `<layer>/<weight name>`. Attributes over 64 KB are split by Keras into `layer_names0`, `layer_names1`, ...
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Dataset, File, Group } from 'h5wasm/node';
import { kerasToModel, splitWeightName, type ImportedModel, type KerasImportOptions, type KerasTensor, type KerasWeights } from './keras-names.js';
import { fail, InputError } from '../util/errors.js';

const V2_FILE_NAME = /mobilenet_v2_weights_tf_dim_ordering_tf_kernels_(\d+(?:\.\d+)?)_(\d+)(_no_top)?\.h5$/;
/** MobileNet (V1) writes α as two digits: 1_0, 7_5, 5_0, 2_5. */
const V1_FILE_NAME = /mobilenet_(1_0|[1-9]_[0-9])_(\d+)_tf(_no_top)?\.h5$/;

/** α, resolution and top-ness from a keras.applications weight file name, if it is one. */
export function parseKerasFileName(file: string): { alpha: number; resolution: number; noTop: boolean } | undefined {
  const base = path.basename(file);
  const v2 = V2_FILE_NAME.exec(base);
  if (v2) return { alpha: Number(v2[1]), resolution: Number(v2[2]), noTop: Boolean(v2[3]) };
  const v1 = V1_FILE_NAME.exec(base);
  if (!v1) return undefined;
  const alpha = v1[1] === '1_0' ? 1 : Number(`0.${v1[1]!.replace('_', '')}`);
  return { alpha, resolution: Number(v1[2]), noTop: Boolean(v1[3]) };
}

/** Import a Keras MobileNetV2 or MobileNet .h5 weight file. α and resolution default to the file name's, then to the shapes and 224. */
export async function importKerasH5(file: string, opts: KerasImportOptions = {}): Promise<ImportedModel> {
  const named = parseKerasFileName(file);
  const layers = await readKerasH5(file);
  return kerasToModel(layers, file, { ...opts, alpha: opts.alpha ?? named?.alpha, resolution: opts.resolution ?? named?.resolution });
}

/** Every weight of a Keras .h5 weight file, by layer and weight kind, as float32. */
export async function readKerasH5(file: string): Promise<KerasWeights> {
  if (!existsSync(file) || !statSync(file).isFile()) fail(file, `no such file`);
  // Loaded here, not at start-up: its wasm instance reserves gigabytes of address space (an `ulimit -v` run of any
  // command would die in it) and only .h5 imports need it.
  const h5wasm = (await import('h5wasm/node')).default;
  const module = await h5wasm.ready;
  // HDF5 errors become exceptions carrying the library's message instead of a diagnostic dump on stderr.
  module.activate_throwing_error_handler();
  let f: File | undefined;
  try {
    try {
      f = new h5wasm.File(path.resolve(file), 'r');
    } catch (e) {
      fail(file, describeHdf5Error(e));
    }
    try {
      return readLayers(h5wasm, f, file);
    } catch (e) {
      // A damaged file fails inside HDF5 too (object headers, symbol tables): its error stack, named.
      if (e instanceof Error && e.message.startsWith(`${file}: `)) throw e;
      throw new InputError(file, describeHdf5Error(e));
    }
  } finally {
    f?.close();
    module.deactivate_throwing_error_handler();
  }
}

type H5 = typeof import('h5wasm/node').default;

/** The innermost message of an HDF5 error stack ("file signature not found", "truncated file: eof = ..."). */
function describeHdf5Error(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const lines = [...text.matchAll(/#\d+: .* in \w+\(\): (.*)/g)].map((m) => m[1]!);
  const last = lines.at(-1) ?? text.trim();
  if (last.includes('file signature not found')) return 'not an HDF5 file (Keras weight files are HDF5)';
  const t = /truncated file: eof = (\d+).*stored_eof = (\d+)/.exec(last);
  if (t) return `truncated HDF5 file: ${t[1]} bytes of ${t[2]}`;
  return `cannot read as HDF5 (${last})`;
}

function readLayers(h5wasm: H5, f: Group, file: string): KerasWeights {
  let root = f;
  if (!hasAttr(root, 'layer_names')) {
    const mw = f.get('model_weights');
    if (mw instanceof h5wasm.Group && hasAttr(mw, 'layer_names')) root = mw;
    else fail(file, `not a Keras weight file: no 'layer_names' attribute (top-level entries: ${f.keys().join(', ') || 'none'})`);
  }
  const out: KerasWeights = new Map();
  for (const layerName of stringList(root, 'layer_names', file)) {
    const g = root.get(layerName);
    if (!(g instanceof h5wasm.Group)) fail(file, `layer '${layerName}' is listed in layer_names but has no group`);
    for (const wname of hasAttr(g, 'weight_names') ? stringList(g, 'weight_names', file) : []) {
      const d = g.get(wname);
      if (!(d instanceof h5wasm.Dataset)) fail(file, `layer '${layerName}' lists weight '${wname}' but has no such dataset`);
      const [layer, kind] = splitWeightName(wname, layerName);
      const byKind = out.get(layer) ?? new Map<string, KerasTensor>();
      if (byKind.has(kind)) fail(file, `weight '${kind}' of layer '${layer}' appears twice`);
      byKind.set(kind, readTensor(d, `${layerName}/${wname}`, file));
      out.set(layer, byKind);
    }
  }
  return out;
}

function hasAttr(g: Group, name: string): boolean {
  return name in g.attrs || `${name}0` in g.attrs;
}

/** A string-list attribute, joined over Keras's chunks (`name0`, `name1`, ...). Empty lists are stored as empty float arrays. */
function stringList(g: Group, name: string, file: string): string[] {
  const attrs = g.attrs;
  const keys = name in attrs ? [name] : [];
  if (!keys.length) for (let i = 0; `${name}${i}` in attrs; i++) keys.push(`${name}${i}`);
  const out: string[] = [];
  for (const k of keys) {
    const v = attrs[k]!.value;
    const items = Array.isArray(v) ? v : ArrayBuffer.isView(v) ? Array.from(v as ArrayLike<number>) : [v];
    for (const s of items) {
      if (typeof s !== 'string') fail(file, `attribute ${g.path}@${k} should hold strings, got ${typeof s}`);
      out.push(s);
    }
  }
  return out;
}

function readTensor(d: Dataset, where: string, file: string): KerasTensor {
  const shape = d.shape ?? [];
  const v = d.value;
  if (!(v instanceof Float32Array || v instanceof Float64Array)) {
    fail(file, `dataset ${where} is ${d.dtype}, expected float32 weights`);
  }
  const data = v instanceof Float32Array ? v : Float32Array.from(v);
  if (data.length !== shape.reduce((a, b) => a * b, 1)) fail(file, `dataset ${where} has ${data.length} values for shape [${shape.join(', ')}]`);
  return { shape, data };
}
