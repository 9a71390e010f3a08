/** Keras .h5 weight files written with h5wasm, as keras.applications ships them (tests of the Keras importer and the weights catalogue). */
import h5wasm, { type Group } from 'h5wasm/node';
import type { tfl } from './keras-model.js';

export interface LayerData {
  name: string;
  weights: { name: string; shape: number[]; data: Float32Array }[];
}

/** Every layer of the model in order (weightless ones too, as Keras lists them) with its weights. */
export function layerData(model: tfl.LayersModel): LayerData[] {
  return model.layers.map((l) => ({
    name: l.name,
    weights: l.weights.map((w) => ({ name: `${w.originalName}:0`, shape: [...w.shape] as number[], data: w.read().dataSync() as Float32Array })),
  }));
}

/** The Keras weight-file layout (keras/saving/hdf5_format.py save_weights_to_hdf5_group), byte strings as h5py writes them; with `modelConfig`, a whole-model file's topology attribute. */
export async function writeKerasH5(file: string, layers: LayerData[], modelConfig?: string): Promise<void> {
  await h5wasm.ready;
  const f = new h5wasm.File(file, 'w');
  const fixed = (names: string[]) => `S${Math.max(1, ...names.map((n) => n.length))}`;
  const names = layers.map((l) => l.name);
  f.create_attribute('layer_names', names, null, fixed(names));
  // A whole-model file (model.save) also has the topology, as a JSON string attribute.
  if (modelConfig !== undefined) f.create_attribute('model_config', modelConfig, null, fixed([modelConfig]));
  f.create_attribute('backend', 'tensorflow');
  f.create_attribute('keras_version', '2.2.4');
  for (const l of layers) {
    const g = f.create_group(l.name);
    const wn = l.weights.map((w) => w.name);
    // Keras stores an empty weight list as np.asarray([]): a float64 array of length 0.
    if (wn.length) g.create_attribute('weight_names', wn, null, fixed(wn));
    else g.create_attribute('weight_names', new Float64Array(0), [0], '<d');
    for (const w of l.weights) {
      // h5py makes the intermediate groups of `Conv1/kernel:0`; h5wasm needs them made.
      const parts = w.name.split('/');
      let parent = g;
      for (const p of parts.slice(0, -1)) parent = (parent.get(p) as Group | null) ?? parent.create_group(p);
      parent.create_dataset({ name: parts.at(-1)!, data: w.data, shape: w.shape, dtype: '<f' });
    }
  }
  f.close();
}
