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

export const LABEL_SET_NAMES = ['imagenet', 'cifar10', 'fashion-mnist', 'imagenet-background'] as const;
export type LabelSetName = (typeof LABEL_SET_NAMES)[number];

const LABEL_SETS: Record<LabelSetName, readonly string[]> = {
  imagenet: IMAGENET_LABELS,
  cifar10: CIFAR10_LABELS,
  'fashion-mnist': FASHION_MNIST_LABELS,
  'imagenet-background': IMAGENET_BACKGROUND_LABELS,
};

/** The built-in label list for a dataset. Throws for an unknown name (when called from untyped input). */
export function labelsFor(name: LabelSetName): readonly string[] {
  const labels = Object.prototype.hasOwnProperty.call(LABEL_SETS, name) ? LABEL_SETS[name] : undefined;
  if (!labels) {
    throw new Error(`unknown label set '${String(name)}'; valid names: ${Object.keys(LABEL_SETS).join(', ')}`);
  }
  return labels;
}
