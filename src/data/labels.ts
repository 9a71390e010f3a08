// Built-in class-label lists for the datasets the project knows about.
import { IMAGENET_CLASSES } from './imagenet-classes.js';

/** The 1000 ILSVRC-2012 classes in the torchvision/Keras index order (full WordNet synonym lists). */
export const IMAGENET_LABELS: readonly string[] = IMAGENET_CLASSES;

/** CIFAR-10 classes in dataset index order. */
export const CIFAR10_LABELS: readonly string[] = Object.freeze([
  'airplane',
  'automobile',
  'bird',
  'cat',
  'deer',
  'dog',
  'frog',
  'horse',
  'ship',
  'truck',
]);

/** Fashion-MNIST classes in dataset index order. */
export const FASHION_MNIST_LABELS: readonly string[] = Object.freeze([
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
]);

/** TF-slim's 1001 ImageNet classes: background at index 0, then the 1000 above. */
export const IMAGENET_BACKGROUND_LABELS: readonly string[] = Object.freeze(['background', ...IMAGENET_CLASSES]);

/**
 * COCO as the TF Object Detection API labels it (mscoco_label_map.pbtxt): index i is category id i + 1, ids 1..90;
 * the 10 ids COCO never used (12, 26, 29, 30, 45, 66, 68, 69, 71, 83) are 'N/A', as in torchvision's COCO_V1 meta.
 * A detector's class head has background at column 0, then these 90.
 */
export const COCO_LABELS: readonly string[] = Object.freeze([
  'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
  'fire hydrant', 'N/A', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep',
  'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'N/A', 'backpack', 'umbrella', 'N/A', 'N/A',
  'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove',
  'skateboard', 'surfboard', 'tennis racket', 'bottle', 'N/A', 'wine glass', 'cup', 'fork', 'knife', 'spoon',
  'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut',
  'cake', 'chair', 'couch', 'potted plant', 'bed', 'N/A', 'dining table', 'N/A', 'N/A', 'toilet',
  'N/A', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone', 'microwave', 'oven', 'toaster',
  'sink', 'refrigerator', 'N/A', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush',
]);

export const LABEL_SET_NAMES = ['imagenet', 'cifar10', 'fashion-mnist', 'imagenet-background', 'coco'] as const;
export type LabelSetName = (typeof LABEL_SET_NAMES)[number];

const LABEL_SETS: Record<LabelSetName, readonly string[]> = {
  imagenet: IMAGENET_LABELS,
  cifar10: CIFAR10_LABELS,
  'fashion-mnist': FASHION_MNIST_LABELS,
  'imagenet-background': IMAGENET_BACKGROUND_LABELS,
  coco: COCO_LABELS,
};

/** The built-in label list for a dataset. Throws for an unknown name (when called from untyped input). */
export function labelsFor(name: LabelSetName): readonly string[] {
  const labels = Object.prototype.hasOwnProperty.call(LABEL_SETS, name) ? LABEL_SETS[name] : undefined;
  if (!labels) {
    throw new Error(`unknown label set '${String(name)}'; valid names: ${Object.keys(LABEL_SETS).join(', ')}`);
  }
  return labels;
}
