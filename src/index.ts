/** Library entry point. */
export * from './model/config.js';
export * from './model/graph.js';
export { mobilenetV2, buildGraph, makeDivisible } from './model/mobilenetv2.js';
export { summarize, formatSummary, type Summary, type SummaryRow } from './model/summary.js';
export { initWeights, checkStateDict, type StateDict } from './model/weights.js';
export { NativeModel, type NativeOptions, type StepOptions, type StepResult } from './engine/native/model.js';
export { setThreads } from './engine/native/binding.js';
export { createClassifier, topK, type Classifier, type EngineName } from './engine/classifier.js';
export { exportOnnx, readOnnxConfig } from './engine/onnx/export.js';
export { OrtModel } from './engine/onnx/session.js';
export { loadWeights, saveWeights, type LoadedWeights, type ArchHint } from './io/weights.js';
export { readSafetensors, writeSafetensors, parseSafetensors, toFloat32 } from './io/safetensors.js';
export { loadImage, loadImages, preset } from './data/preprocess.js';
export { labelsFor, IMAGENET_LABELS, CIFAR10_LABELS, FASHION_MNIST_LABELS } from './data/labels.js';
export { load, resolveWeights, weightsHome, type LoadOptions, type Model, type Classification } from './api/load.js';
export { imageTensor, type ImageInput, type RawImage } from './api/image-input.js';
export { inputSpec, BUNDLED_MODEL, type InputSpec, type SpecOptions } from './api/spec.js';
