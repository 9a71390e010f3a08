/** Library entry point. */
export * from './model/config.js';
export * from './model/graph.js';
export type { BaseConfig, ModelFamily } from './model/family.js';
export { families, getFamily, familyOf, buildModel, archNames, archConfig, configFromJSON, reconfigure } from './model/registry.js';
export { mobilenetV2, buildGraph, makeDivisible, mobilenetV2Family } from './model/mobilenetv2.js';
export { mobilenetV1, makeV1Config, mobilenetV1Family, TABLE1_PAIRS, type MobileNetV1Config } from './model/mobilenetv1.js';
export { summarize, formatSummary, type Summary, type SummaryRow } from './model/summary.js';
export { initWeights, checkStateDict, type StateDict } from './model/weights.js';
export { NativeModel, type NativeOptions, type StepOptions, type StepResult } from './engine/native/model.js';
export { setThreads } from './engine/native/binding.js';
export { createClassifier, topK, type Classifier, type EngineName } from './engine/classifier.js';
export { exportOnnx, readOnnxConfig, readOnnxInfo } from './engine/onnx/export.js';
export { encodeModelInfo, decodeModelInfo, type ModelInfo } from './io/metadata.js';
export { OrtModel } from './engine/onnx/session.js';
export { loadWeights, loadModelFile, saveWeights, type LoadedWeights, type ArchHint } from './io/weights.js';
export { readSafetensors, writeSafetensors, parseSafetensors, toFloat32 } from './io/safetensors.js';
export { loadImage, loadImages, preset } from './data/preprocess.js';
export { labelsFor, IMAGENET_LABELS, CIFAR10_LABELS, FASHION_MNIST_LABELS } from './data/labels.js';
