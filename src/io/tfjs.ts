/**
 * TF.js layers models of a Keras MobileNetV2 or MobileNet (V1): `model.json` ({modelTopology, weightsManifest})
 * with its weight shards beside it, any single-Dense classifier head, MobileNet's 1x1 Conv2D `conv_preds`, or none. Weights decode as tfjs-core's io_utils
 * decodeWeights does: float32 as stored; `quantization: {dtype: 'uint8' | 'uint16', scale, min}` as
 * q * scale + min (double precision, one rounding to float32); `{dtype: 'float16'}` as IEEE half.
 * Shards of one manifest group are concatenated in order and the group's weights follow each other in it.
 * Shards are read from the model's folder only (no `..`, absolute paths or symlinks out of it), regular files only,
 * and never beyond the bytes the group's weights take.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { toFloat32 } from './safetensors.js';
import { readFileBounded, resolveInside } from '../util/read-file.js';
import { KERAS_FAMILIES, kerasToModel, splitWeightName, type ImportedModel, type KerasImportOptions, type KerasTensor, type KerasWeights } from './keras-names.js';
import { fail } from '../util/errors.js';

interface TopologyLayer {
  className: string;
  name: string;
  config: Record<string, unknown>;
}

/** What the topology says about the architecture. */
export interface TfjsTopologyInfo {
  /** From the Keras model name `mobilenetv2_{alpha:.2f}_{rows}` or `mobilenet_{alpha:.2f}_{rows}`. */
  alpha?: number;
  /** From the input layer's [null, H, W, 3] (absent when the input size is free). */
  resolution?: number;
  /** Rate of a Dropout layer before the head. */
  dropout?: number;
  /** Outputs of the layers that can be a classifier: Dense units, MobileNet's conv_preds filters. */
  dense: { name: string; units: number }[];
}

/** Import a TF.js layers model.json of a Keras MobileNetV2 or MobileNet. Options override what the topology says. */
export function importTfjs(file: string, opts: KerasImportOptions = {}): ImportedModel {
  const { topology: topo, layers } = readTfjsModel(file);
  const m = kerasToModel(layers, file, {
    ...opts,
    alpha: opts.alpha ?? topo.alpha,
    resolution: opts.resolution ?? topo.resolution,
    dropout: opts.dropout ?? topo.dropout,
  });
  const units = topo.dense.find((d) => d.name === m.headLayer)?.units;
  if (units !== undefined && units !== m.graph.config.numClasses) {
    fail(file, `modelTopology gives ${m.headLayer} ${units} units but its kernel has ${m.graph.config.numClasses} columns`);
  }
  return m;
}

/** tensorflowjs_converter's model.json of a MobileNetV2 is ~100 KB; anything this large is not one. */
const MAX_MODEL_JSON_BYTES = 64 << 20;

/** A model.json's topology facts and its weights (shards read beside it), not yet mapped to a model. */
export function readTfjsModel(file: string): { topology: TfjsTopologyInfo; layers: KerasWeights } {
  const json = readModelJson(file);
  return { topology: topologyInfo(json.modelTopology, file), layers: readTfjsWeights(json.weightsManifest, path.dirname(file), file) };
}

function readModelJson(file: string): { modelTopology: unknown; weightsManifest: unknown } {
  const text = readFileBounded(file, { maxBytes: MAX_MODEL_JSON_BYTES, limitWhat: 'a model.json may have' }).toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(file, `not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(json)) fail(file, `not a TF.js model.json (expected a JSON object)`);
  const topo = json['modelTopology'];
  if (json['format'] === 'graph-model' || (isObject(topo) && 'node' in topo)) {
    fail(file, `a TF.js graph model; only layers models (format 'layers-model', a Keras model converted with tensorflowjs_converter) can be imported`);
  }
  if (!isObject(topo)) fail(file, `not a TF.js layers model: no modelTopology object`);
  if (!Array.isArray(json['weightsManifest'])) fail(file, `not a TF.js layers model: no weightsManifest array`);
  return { modelTopology: topo, weightsManifest: json['weightsManifest'] };
}

/** α, input size, dropout and heads from a Keras/TF.js topology; also checks that stride-2 layers pad as Keras does. */
export function topologyInfo(modelTopology: unknown, file: string): TfjsTopologyInfo {
  // tensorflowjs_converter nests the Keras model config under model_config; tfjs's own save does not.
  const root = isObject(modelTopology) && isObject(modelTopology['model_config']) ? modelTopology['model_config'] : modelTopology;
  const layers: TopologyLayer[] = [];
  const models: string[] = [];
  flatten(root, layers, models);
  if (layers.length === 0) fail(file, `modelTopology has no layers`);

  const info: TfjsTopologyInfo = { dense: [] };
  for (const name of models) {
    const m = /^mobilenet(?:v2)?_(\d+\.\d+)_\w+$/.exec(name);
    if (m) info.alpha = Number(m[1]);
  }
  const shape = layers.map((l) => l.config['batch_input_shape'] ?? l.config['batch_shape']).find(Array.isArray) as unknown[] | undefined;
  if (shape && typeof shape[1] === 'number' && typeof shape[2] === 'number') {
    if (shape.length !== 4 || shape[1] !== shape[2] || shape[3] !== 3) {
      fail(file, `input shape [${shape.join(', ')}] is not a square RGB image (MobileNet takes [batch, n, n, 3])`);
    }
    info.resolution = shape[1];
  }
  for (const l of layers) {
    if (l.className === 'Dropout' && typeof l.config['rate'] === 'number') info.dropout = l.config['rate'];
    if (l.className === 'Dense' && typeof l.config['units'] === 'number') info.dense.push({ name: l.name, units: l.config['units'] });
    if (l.name === 'conv_preds' && typeof l.config['filters'] === 'number') info.dense.push({ name: l.name, units: l.config['filters'] });
  }
  checkStride2Padding(layers, file);
  return info;
}

function flatten(node: unknown, out: TopologyLayer[], models: string[]): void {
  if (!isObject(node)) return;
  const config = node['config'];
  // Sequential configs were once a bare list of layers.
  const children = Array.isArray(config) ? config : isObject(config) && Array.isArray(config['layers']) ? config['layers'] : undefined;
  if (children) {
    if (isObject(config) && typeof config['name'] === 'string') models.push(config['name']);
    for (const c of children) flatten(c, out, models);
    return;
  }
  if (typeof node['class_name'] !== 'string' || !isObject(config)) return;
  const name = typeof config['name'] === 'string' ? config['name'] : typeof node['name'] === 'string' ? node['name'] : '';
  out.push({ className: node['class_name'], name, config });
}

/**
 * Keras pads stride-2 convs (0 before, 1 after) on even sizes: TF 'same', or ZeroPadding2D(((0, 1), (0, 1))) then
 * 'valid' (correct_pad in MobileNetV2, conv_pad_N in MobileNet). The import reproduces exactly that, so anything
 * else would silently change the outputs.
 */
function checkStride2Padding(layers: TopologyLayer[], file: string): void {
  const byName = new Map(layers.map((l) => [l.name, l]));
  for (const l of layers) {
    const strides = String(l.config['strides']);
    const padName = KERAS_FAMILIES.map((f) => f.padLayer(l.name)).find((p) => p !== undefined);
    if (!padName || (strides !== '2' && strides !== '2,2') || l.config['padding'] === 'same') continue;
    const pad = byName.get(padName)?.config['padding'];
    if (JSON.stringify(normalizePad(pad)) !== '[[0,1],[0,1]]') {
      throw new Error(
        `${file}: stride-2 layer ${l.name} uses padding '${String(l.config['padding'])}' ${pad === undefined ? `with no ${padName} layer` : `after ${padName} ${JSON.stringify(pad)}`}; ` +
          "Keras MobileNet and MobileNetV2 pad 0 before and 1 after (TF 'same'), which is what the import reproduces",
      );
    }
  }
}

/** ZeroPadding2D's padding (n | [h, w] | [[top, bottom], [left, right]]) as [[top, bottom], [left, right]]. */
function normalizePad(p: unknown): unknown {
  if (typeof p === 'number') return [[p, p], [p, p]];
  if (Array.isArray(p) && p.length === 2 && p.every((x) => typeof x === 'number')) return [[p[0], p[0]], [p[1], p[1]]];
  return p;
}

interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype?: unknown; scale?: unknown; min?: unknown };
}

const BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 };

/** Every float32 weight of a weightsManifest, by Keras layer and weight kind, with the shards read from `dir`. */
export function readTfjsWeights(manifest: unknown, dir: string, file: string): KerasWeights {
  if (!Array.isArray(manifest)) fail(file, `weightsManifest must be an array of {paths, weights} groups`);
  const out: KerasWeights = new Map();
  manifest.forEach((group: unknown, gi) => {
    const paths = isObject(group) ? group['paths'] : undefined;
    const specs = isObject(group) ? group['weights'] : undefined;
    if (!Array.isArray(paths) || !paths.every((p) => typeof p === 'string') || !Array.isArray(specs)) {
      fail(file, `weightsManifest[${gi}] must have 'paths' (strings) and 'weights' (an array)`);
    }
    const checked = specs.map((raw) => {
      const spec = checkSpec(raw, file, gi);
      const q = spec.quantization;
      const bytes = BYTES[q ? String(q.dtype) : spec.dtype];
      if (bytes === undefined) fail(file, `weight ${spec.name} has unsupported ${q ? 'quantization ' : ''}dtype '${String(q ? q.dtype : spec.dtype)}'`);
      const n = spec.shape.reduce((a, b) => a * b, 1);
      return { spec, n, bytes: n * bytes };
    });
    const data = readShards(paths as string[], dir, file, checked.reduce((a, c) => a + c.bytes, 0));
    let offset = 0;
    for (const { spec, n, bytes } of checked) {
      const end = offset + bytes;
      if (end > data.length) {
        throw new Error(
          `${file}: weight shards truncated: ${spec.name} needs bytes ${offset}-${end} of group ${gi} (${paths.join(', ')}), which hold ${data.length} bytes`,
        );
      }
      if (spec.dtype === 'float32') {
        const [layer, kind] = splitWeightName(spec.name);
        const byKind = out.get(layer) ?? new Map<string, KerasTensor>();
        if (byKind.has(kind)) fail(file, `weight ${spec.name} appears twice`);
        byKind.set(kind, { shape: spec.shape, data: decodeWeight(data.subarray(offset, end), spec, n, file) });
        out.set(layer, byKind);
      }
      offset = end;
    }
  });
  return out;
}

/** The shards of one group, concatenated: inside `dir`, regular files, `need` bytes at most in all. */
function readShards(paths: string[], dir: string, file: string, need: number): Buffer {
  const shards = paths.map((p) => {
    const shard = resolveInside(dir, p, `${file}: weight shard`);
    if (!existsSync(shard)) fail(file, `weight shard ${p} not found (looked for ${shard})`);
    return shard;
  });
  let left = need;
  return Buffer.concat(
    shards.map((shard, i) => {
      const buf = readFileBounded(shard, { maxBytes: left, limitWhat: `the manifest's weights take${i > 0 ? ' after the shards before it' : ''}` });
      left -= buf.length;
      return buf;
    }),
  );
}

function checkSpec(raw: unknown, file: string, gi: number): WeightSpec {
  const s = isObject(raw) ? raw : {};
  const shape = s['shape'];
  if (typeof s['name'] !== 'string' || typeof s['dtype'] !== 'string' || !Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    fail(file, `weightsManifest[${gi}] has a malformed weight entry ${JSON.stringify(raw)?.slice(0, 200)}`);
  }
  const q = s['quantization'];
  if (q !== undefined && !isObject(q)) fail(file, `weight ${s['name']} has a malformed quantization entry`);
  if (q && q['dtype'] !== 'float16' && (typeof q['scale'] !== 'number' || typeof q['min'] !== 'number')) {
    fail(file, `weight ${s['name']} is ${String(q['dtype'])}-quantized without numeric scale and min`);
  }
  return { name: s['name'], shape: shape as number[], dtype: s['dtype'], quantization: q };
}

function decodeWeight(bytes: Uint8Array, spec: WeightSpec, n: number, file: string): Float32Array {
  const q = spec.quantization;
  if (!q) return toFloat32({ dtype: 'F32', shape: [n], bytes }, spec.name, file);
  if (q.dtype === 'float16') return toFloat32({ dtype: 'F16', shape: [n], bytes }, spec.name, file);
  const { scale, min } = q as { scale: number; min: number }; // checked by checkSpec
  const out = new Float32Array(n);
  if (q.dtype === 'uint8') {
    for (let i = 0; i < n; i++) out[i] = bytes[i]! * scale + min;
  } else {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) out[i] = dv.getUint16(2 * i, true) * scale + min;
  }
  return out;
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}
