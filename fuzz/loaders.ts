/**
 * Every loader of the repository as a fuzz target: a small valid input made in code (the seed) and how to load it.
 * Adding a loader is one entry here. `target` is the seed file the fuzzer mutates; the other files stay as made.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
// Project modules are imported where used: each loader's child process loads only its own.
const io = {
  safetensors: () => import('../src/io/safetensors.js'),
  onnx: () => import('../src/engine/onnx/export.js'),
  model: async () => ({ ...(await import('../src/model/mobilenetv2.js')), ...(await import('../src/model/weights.js')) }),
  keras: () => import('../src/io/keras.js'),
  tfjs: () => import('../src/io/tfjs.js'),
  tflite: () => import('../src/io/tflite.js'),
  tfGraph: async () => ({ ...(await import('../src/io/tf-graph.js')), ...(await import('../src/io/tf-graph-ssdlite.js')) }),
  pth: () => import('../src/io/pth.js'),
  idx: () => import('../src/data/idx.js'),
  cifar: () => import('../src/data/cifar.js'),
  preprocess: () => import('../src/data/preprocess.js'),
  detect: () => import('../src/detect/dataset.js'),
  sharp: async () => (await import('sharp')).default,
};

export interface Seed {
  /** File name (may contain folders) -> bytes. */
  files: Record<string, Uint8Array>;
  /** The file that is mutated. */
  target: string;
}

export interface FuzzLoader {
  name: string;
  seed(scratch: string): Promise<Seed>;
  /** Loads the files written under `dir`. */
  load(dir: string, target: string): Promise<unknown>;
}

const text = (s: string): Uint8Array => Buffer.from(s, 'utf8');
const png = async (w: number, h: number): Promise<Buffer> => (await io.sharp())({ create: { width: w, height: h, channels: 3, background: { r: 90, g: 20, b: 200 } } }).png().toBuffer();

function idx(magic: number, dims: number[], data: Uint8Array): Buffer {
  const h = Buffer.alloc(4 + 4 * dims.length);
  h.writeUInt32BE(magic, 0);
  dims.forEach((d, i) => h.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([h, data]);
}
const pattern = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 37 + 11) & 255);

/** A float32 tensor of a small conv layer, as a Keras/TF.js weight. */
const kernel = pattern(3 * 3 * 3 * 4 * 4);

export const LOADERS: readonly FuzzLoader[] = [
  {
    name: 'safetensors',
    seed: async () => ({
      target: 'w.safetensors',
      files: { 'w.safetensors': (await io.safetensors()).serializeSafetensors({ a: { dtype: 'F32', shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) }, b: { dtype: 'I64', shape: [], data: BigInt64Array.of(7n) } }, { 'mnv2.config': '{"arch":"seed-cifar"}' }) },
    }),
    load: async (dir, t) => (await io.safetensors()).readSafetensors(join(dir, t)),
  },
  {
    name: 'onnx',
    seed: async () => {
      const { mobilenetV2, initWeights } = await io.model();
      const g = mobilenetV2('imagenet', { alpha: 0.35, resolution: 32, numClasses: 2 });
      return { target: 'm.onnx', files: { 'm.onnx': (await io.onnx()).exportOnnx(g, initWeights(g, 0)) } };
    },
    load: async (dir, t) => {
      const { decodeOnnx, readOnnxInfo } = await io.onnx();
      const bytes = readFileSync(join(dir, t));
      return [decodeOnnx(bytes, t), readOnnxInfo(bytes, join(dir, t))];
    },
  },
  {
    name: 'keras-h5',
    seed: async (scratch) => {
      const file = join(scratch, 'seed.h5');
      await (await import('../test/helpers/keras-h5.js')).writeKerasH5(file, [{ name: 'Conv1', weights: [{ name: 'Conv1/kernel:0', shape: [3, 3, 3, 4], data: new Float32Array(kernel.buffer, 0, 108) }] }, { name: 'out_relu', weights: [] }]);
      return { target: 'w.h5', files: { 'w.h5': readFileSync(file) } };
    },
    load: async (dir, t) => (await io.keras()).readKerasH5(join(dir, t)),
  },
  ...(['model.json', 'group1-shard1of1.bin'] as const).map((target): FuzzLoader => ({
    name: `tfjs (${target === 'model.json' ? 'model.json' : 'shard'})`,
    seed: async () => ({
      target,
      files: {
        'model.json': text(JSON.stringify({
          format: 'layers-model',
          modelTopology: { class_name: 'Functional', config: { name: 'mobilenetv2_0.35_96', layers: [{ class_name: 'InputLayer', config: { name: 'input_1', batch_input_shape: [null, 96, 96, 3] } }, { class_name: 'Conv2D', config: { name: 'Conv1', strides: [2, 2], padding: 'same' } }] } },
          weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: [{ name: 'Conv1/kernel', shape: [3, 3, 3, 4], dtype: 'float32' }, { name: 'bn_Conv1/gamma', shape: [4], dtype: 'float32', quantization: { dtype: 'uint8', scale: 0.1, min: -1 } }] }],
        })),
        'group1-shard1of1.bin': new Uint8Array([...kernel.subarray(0, 432), 1, 2, 3, 4]),
      },
    }),
    load: async (dir) => (await io.tfjs()).readTfjsModel(join(dir, 'model.json')),
  })),
  {
    name: 'tflite',
    seed: async () => ({
      target: 'm.tflite',
      files: {
        'm.tflite': (await import('../test/helpers/tflite-builder.js')).buildTflite({
          tensors: [
            { name: 'input', shape: [1, 8, 8, 3], type: 3, quant: { scale: [1 / 128], zeroPoint: [128] } },
            { name: 'w', shape: [4, 3, 3, 3], type: 9, data: kernel.subarray(0, 108), quant: { scale: [0.01, 0.02, 0.03, 0.04], zeroPoint: [0, 0, 0, 0], axis: 0 } },
            { name: 'out', shape: [1, 4, 4, 4], type: 3, quant: { scale: [0.1], zeroPoint: [0] } },
          ],
          ops: [{ builtin: 3, inputs: [0, 1, -1], outputs: [2], options: { type: 1, ints: [0, 2, 2, 0] } }],
          inputs: [0],
          outputs: [2],
        }),
      },
    }),
    load: async (dir, t) => (await io.tflite()).readTflite(join(dir, t)),
  },
  {
    name: 'tf-graph',
    seed: async () => {
      const { GraphDefType } = await io.tfGraph();
      const f32 = (shape: number[], tensor: object) => ({ dtype: { type: 1 }, value: { tensor: { dtype: 1, tensorShape: { dim: shape.map((size) => ({ size })) }, ...tensor } } });
      const node = [
        { name: 'image_tensor', op: 'Placeholder', attr: { dtype: { type: 1 }, shape: { shape: { dim: [-1, -1, -1, 3].map((size) => ({ size })) } } } },
        { name: 'Preprocessor/size', op: 'Const', attr: { dtype: { type: 3 }, value: { tensor: { dtype: 3, tensorShape: { dim: [{ size: 2 }] }, intVal: [8, 8] } } } },
        { name: 'Preprocessor/ResizeBilinear', op: 'ResizeBilinear', input: ['image_tensor', 'Preprocessor/size'] },
        { name: 'Conv/weights', op: 'Const', attr: f32([3, 3, 3, 4], { tensorContent: kernel.subarray(0, 432) }) },
        { name: 'Conv/weights/read', op: 'Identity', input: ['Conv/weights'] },
        { name: 'Conv/Conv2D', op: 'Conv2D', input: ['Preprocessor/ResizeBilinear', 'Conv/weights/read'], attr: { padding: { s: text('SAME') }, strides: { list: { i: [1, 2, 2, 1] } } } },
        { name: 'Conv/BatchNorm/gamma', op: 'Const', attr: f32([4], { floatVal: [1] }) },
        { name: 'Conv/BatchNorm/beta', op: 'Const', attr: { dtype: { type: 19 }, value: { tensor: { dtype: 19, tensorShape: { dim: [{ size: 4 }] }, halfVal: [15360, 14336, 0, 48128] } } } },
      ];
      return { target: 'g.pb', files: { 'g.pb': GraphDefType.encode(GraphDefType.fromObject({ node })).finish() } };
    },
    load: async (dir, t) => {
      const { readTfGraph, constValue, resolutionOf, stringAttr, intsAttr } = await io.tfGraph();
      const file = join(dir, t);
      const g = readTfGraph(file);
      const fail = (m: string): never => { throw new Error(`${file}: ${m}`); };
      return [g.nodes.map((n) => (n.op === 'Const' ? constValue(n, file) : [stringAttr(n, 'padding'), intsAttr(n, 'strides', fail)])), resolutionOf(g, file)];
    },
  },
  {
    name: 'pth',
    seed: async () => ({ target: 'w.pth', files: { 'w.pth': readFileSync(fileURLToPath(new URL('../../test/fixtures/pth/dtypes.pth', import.meta.url))) } }),
    load: async (dir, t) => (await io.pth()).readPth(join(dir, t)),
  },
  {
    name: 'idx images (gzip)',
    seed: async () => ({ target: 'i.gz', files: { 'i.gz': gzipSync(idx(0x803, [3, 4, 5], pattern(60))) } }),
    load: async (dir, t) => (await io.idx()).readIdxImages(join(dir, t), { maxCount: 100 }),
  },
  {
    name: 'idx labels',
    seed: async () => ({ target: 'l', files: { l: idx(0x801, [5], Uint8Array.of(0, 1, 2, 9, 3)) } }),
    load: async (dir, t) => (await io.idx()).readIdxLabels(join(dir, t), 10),
  },
  {
    name: 'cifar batch',
    seed: async () => ({ target: 'b.bin', files: { 'b.bin': Uint8Array.from(pattern(2 * 3073), (v, i) => (i % 3073 === 0 ? v % 10 : v)) } }),
    load: async (dir, t) => (await io.cifar()).readCifarBatch(join(dir, t)),
  },
  ...(['png', 'jpeg'] as const).map((fmt): FuzzLoader => ({
    name: `image (${fmt})`,
    seed: async () => {
      const img = (await io.sharp())({ create: { width: 24, height: 16, channels: 3, background: { r: 10, g: 200, b: 30 } } });
      return { target: `x.${fmt}`, files: { [`x.${fmt}`]: await (fmt === 'png' ? img.png() : img.jpeg()).toBuffer() } };
    },
    load: async (dir, t) => {
      const { loadImage, preset } = await io.preprocess();
      return loadImage(join(dir, t), preset('seed-cifar'), { maxPixels: 1 << 22 });
    },
  })),
  {
    name: 'coco',
    seed: async () => ({
      target: 'coco.json',
      files: {
        'a.png': await png(40, 30),
        'coco.json': text(JSON.stringify({
          images: [{ id: 1, file_name: 'a.png', width: 40, height: 30 }],
          categories: [{ id: 7, name: 'dog' }],
          annotations: [{ id: 1, image_id: 1, category_id: 7, bbox: [1, 2, 10, 20], area: 150, iscrowd: 0 }],
        })),
      },
    }),
    load: async (dir, t) => (await io.detect()).loadCocoDetection(join(dir, t), dir, { checkImages: true }),
  },
  {
    name: 'voc',
    seed: async () => ({
      target: 'Annotations/000001.xml',
      files: {
        'JPEGImages/000001.jpg': await png(40, 30),
        'ImageSets/Main/train.txt': text('000001\n'),
        'Annotations/000001.xml': text('<annotation><filename>000001.jpg</filename><size><width>40</width><height>30</height><depth>3</depth></size>' +
          '<object><name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>'),
      },
    }),
    load: async (dir) => (await io.detect()).loadVocDetection(dir, 'train'),
  },
  {
    name: 'yolo',
    seed: async () => ({ target: 'labels/p.txt', files: { 'images/p.png': await png(40, 20), 'labels/p.txt': text('1 0.5 0.5 0.5 0.5\n0 0.25 0.5 0.1 0.2\n') } }),
    load: async (dir) => (await io.detect()).loadYoloDetection(join(dir, 'images'), join(dir, 'labels'), ['a', 'b']),
  },
];
