/**
 * Published pretrained MobileNet weights: official URLs, checksums where the publisher gives one, and what the
 * files hold. torchvision's checkpoints carry the first 8 hex digits of their sha256 in the file name (torch.hub
 * checks that prefix); keras.applications downloads its files without a checksum (get_file with no file_hash),
 * so those are checked to be HDF5 files and then by the importer, which names every missing or mis-shaped layer.
 * The TF Object Detection API model zoo publishes tarballs without checksums either: checked to be gzip, then the
 * frozen graph inside is imported, which names every missing or mis-shaped variable.
 */

/** `tf-od-tar`: a TF OD API model zoo .tar.gz whose `member` is the frozen graph. */
export type WeightsFormat = 'pth' | 'keras-h5' | 'tf-od-tar';
export type WeightsFamily = 'mobilenet_v2' | 'mobilenet_v1' | 'ssdlite';

export interface WeightsEntry {
  /** Catalogue name, as `mnv2 weights fetch NAME` and `--weights NAME` take it. */
  name: string;
  url: string;
  /** sha256 hex digits the file must start with, or null where none is published. */
  sha256: string | null;
  format: WeightsFormat;
  family: WeightsFamily;
  alpha: number;
  resolution: number;
  /** false: a `_no_top` feature extractor (no classifier). */
  top: boolean;
  /** Preprocessing preset the weights were trained with. */
  preset: 'torchvision' | 'keras';
  description: string;
  /** Archives: the path of the file to import inside it. */
  member?: string;
}

const TORCHVISION = 'https://download.pytorch.org/models/';
const KERAS = 'https://storage.googleapis.com/tensorflow/keras-applications/';
const NO_CHECKSUM = 'no checksum published (keras.applications downloads it unchecked); verified as an HDF5 Keras weight file';

function torchvision(tag: 'IMAGENET1K_V1' | 'IMAGENET1K_V2', hash: string, acc: string): WeightsEntry {
  return {
    name: `torchvision/${tag}`, url: `${TORCHVISION}mobilenet_v2-${hash}.pth`, sha256: hash, format: 'pth', family: 'mobilenet_v2',
    alpha: 1, resolution: 224, top: true, preset: 'torchvision',
    description: `torchvision mobilenet_v2 ${tag} (ImageNet-1k, ${acc}); sha256 prefix from the file name`,
  };
}

/** keras.applications.MobileNetV2: `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{α}_{rows}[_no_top].h5`. */
function kerasV2(alpha: number, rows: number, top: boolean): WeightsEntry {
  const a = Number.isInteger(alpha) ? alpha.toFixed(1) : String(alpha); // Python's str(float(alpha))
  return {
    name: `keras/mobilenet_v2_${a}_${rows}${top ? '' : '_no_top'}`,
    url: `${KERAS}mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_${a}_${rows}${top ? '' : '_no_top'}.h5`,
    sha256: null, format: 'keras-h5', family: 'mobilenet_v2', alpha, resolution: rows, top, preset: 'keras',
    description: `keras.applications MobileNetV2 α ${a} @ ${rows}${top ? ', ImageNet top' : ', no top'}; ${NO_CHECKSUM}`,
  };
}

/** keras.applications.MobileNet (V1): `mobilenet_{1_0|7_5|5_0|2_5}_{rows}_tf[_no_top].h5`. */
function kerasV1(alpha: number, rows: number, top: boolean): WeightsEntry {
  const text = { 1: '1_0', 0.75: '7_5', 0.5: '5_0', 0.25: '2_5' }[alpha as 1 | 0.75 | 0.5 | 0.25];
  const a = Number.isInteger(alpha) ? alpha.toFixed(1) : String(alpha);
  return {
    name: `keras/mobilenet_${a}_${rows}${top ? '' : '_no_top'}`,
    url: `${KERAS}mobilenet/mobilenet_${text}_${rows}_tf${top ? '' : '_no_top'}.h5`,
    sha256: null, format: 'keras-h5', family: 'mobilenet_v1', alpha, resolution: rows, top, preset: 'keras',
    description: `keras.applications MobileNet (V1) α ${a} @ ${rows}${top ? ', ImageNet top' : ', no top'}; ${NO_CHECKSUM}`,
  };
}

/** A TF OD API model zoo detector (research/object_detection/g3doc/tf1_detection_zoo.md): the tarball's frozen graph. */
function tfDetectionZoo(model: string, date: string, what: string): WeightsEntry {
  return {
    name: `tf-od/${model}`, url: `http://download.tensorflow.org/models/object_detection/${model}_${date}.tar.gz`, sha256: null,
    format: 'tf-od-tar', member: `${model}_${date}/frozen_inference_graph.pb`, family: 'ssdlite', alpha: 1, resolution: 300, top: true, preset: 'keras',
    description: `TF OD API model zoo ${model} (${what}); no checksum published (the zoo lists none); verified as a gzip tar whose frozen_inference_graph.pb imports`,
  };
}

const product = <T>(as: readonly number[], rs: readonly number[], f: (a: number, r: number, top: boolean) => T): T[] =>
  as.flatMap((a) => rs.flatMap((r) => [f(a, r, true), f(a, r, false)]));

export const WEIGHTS_CATALOG: readonly WeightsEntry[] = Object.freeze([
  torchvision('IMAGENET1K_V1', 'b0353104', 'acc@1 71.878, acc@5 90.286'),
  // torchvision's own eval of V2 resizes to 232 before the 224 crop; the 'torchvision' preset resizes to 256
  torchvision('IMAGENET1K_V2', '7ebf99e0', 'acc@1 72.154, acc@5 90.822'),
  ...product([0.35, 0.5, 0.75, 1, 1.3, 1.4], [96, 128, 160, 192, 224], kerasV2),
  ...product([0.25, 0.5, 0.75, 1], [128, 160, 192, 224], kerasV1),
  tfDetectionZoo('ssdlite_mobilenet_v2_coco', '2018_05_09', 'SSDLite MobileNetV2 @ 300, COCO 90 ids, the paper\'s Table 6 detector, mAP 22 in the zoo table'),
]);

/** The entry called `name`, or undefined. */
export function findWeights(name: string): WeightsEntry | undefined {
  return WEIGHTS_CATALOG.find((e) => e.name === name);
}
