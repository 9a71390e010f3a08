/**
 * The seed's claims as experiments (issue 8 §3), defined as data: the model variants, the training budget, and
 * which variants and measurements each experiment compares. Every step is an `mnv2` command, so a report can
 * list the exact commands and anyone can rerun one by hand.
 *
 * Budget (the full suite must fit in about 3 hours on 2 cores; measured on the 2-vCPU AVX2 EPYC: about 80 minutes):
 * width α 0.5, 2 epochs over a fixed 24,576-image subset of Fashion-MNIST's training split, the
 * `fashion-mnist` recipe otherwise (SGD lr 0.1, cosine per step, crop + flip); one engine thread per job, two
 * jobs at a time. `--quick` shrinks every number so the whole suite runs in minutes (the tests run it).
 */

/** One model of the comparisons: an architecture and the paper's ablation switches. */
export interface Variant {
  id: string;
  /** Short name for tables and charts. */
  label: string;
  description: string;
  arch: 'seed-cifar' | 'mobilenetv1-cifar';
  flags: readonly string[];
}

export const VARIANTS = {
  // seed-cifar's own activation is the seed's ReLU: the paper's ReLU6 is asked for explicitly.
  v2: { id: 'v2', label: 'V2 (paper)', description: "the seed's CIFAR MobileNetV2 with the paper's choices: ReLU6, linear bottlenecks, shortcuts between bottlenecks", arch: 'seed-cifar', flags: ['--activation', 'relu6'] },
  'v2-nonlinear': { id: 'v2-nonlinear', label: 'V2, ReLU6 bottleneck', description: 'V2 (paper) with ReLU6 after the project conv too (non-linear bottleneck)', arch: 'seed-cifar', flags: ['--activation', 'relu6', '--nonlinear-bottleneck'] },
  'v2-expansion': { id: 'v2-expansion', label: 'V2, expansion shortcuts', description: 'V2 (paper) with the shortcuts between the expanded layers instead (src/model/config.ts says exactly which)', arch: 'seed-cifar', flags: ['--activation', 'relu6', '--shortcut', 'expansion'] },
  'v2-none': { id: 'v2-none', label: 'V2, no shortcuts', description: 'V2 (paper) without shortcuts', arch: 'seed-cifar', flags: ['--activation', 'relu6', '--shortcut', 'none'] },
  'v2-relu': { id: 'v2-relu', label: 'V2, ReLU', description: 'V2 (paper) with ReLU instead of ReLU6 (the seed code\'s choice)', arch: 'seed-cifar', flags: ['--activation', 'relu'] },
  v1: { id: 'v1', label: 'V1 (ReLU6)', description: 'MobileNetV1 (13 depthwise-separable pairs, BN + ReLU6 after both convs), CIFAR strides like the seed\'s V2', arch: 'mobilenetv1-cifar', flags: ['--activation', 'relu6'] },
  'v1-relu': { id: 'v1-relu', label: 'V1, ReLU', description: 'V1 with ReLU instead of ReLU6', arch: 'mobilenetv1-cifar', flags: ['--activation', 'relu'] },
} as const satisfies Record<string, Variant>;
export type VariantId = keyof typeof VARIANTS;

/** What is measured on each trained model. */
export type Measure =
  | 'fp32' // top-1 of the float32 model on the whole test split (native engine)
  | 'fp16' // top-1 of its float16 ONNX export (ONNX Runtime)
  | 'ptq' // top-1 of `mnv2 quantize` (post-training int8, ONNX Runtime)
  | 'qat' // top-1 of the int8 model of a QAT fine-tune of it (ONNX Runtime)
  | 'dead' // `mnv2 diagnose` of the float model (and of the QAT fine-tune when 'qat' is measured too)
  | 'cost' // parameters, multiply-adds, peak activation memory (`mnv2 summary`)
  | 'speed'; // training img/s (from the run) and inference img/s (`mnv2 bench`)

export interface Experiment {
  name: ExperimentName;
  title: string;
  /** The claim under test, in the seed's or the paper's words. */
  claim: string;
  variants: readonly VariantId[];
  measures: readonly Measure[];
}

export const EXPERIMENT_NAMES = ['bottleneck', 'shortcut', 'v1-vs-v2', 'dead-kernels', 'low-precision'] as const;
export type ExperimentName = (typeof EXPERIMENT_NAMES)[number];

export const EXPERIMENTS: Record<ExperimentName, Experiment> = {
  bottleneck: {
    name: 'bottleneck', title: 'Linear vs non-linear bottlenecks (paper Figure 6a)',
    claim: 'Linear bottlenecks beat ReLU6 in the bottleneck: a non-linearity in the low-dimensional layer destroys information.',
    variants: ['v2', 'v2-nonlinear'], measures: ['fp32'],
  },
  shortcut: {
    name: 'shortcut', title: 'Where the shortcuts go (paper Figure 6b)',
    claim: 'Shortcuts between the bottlenecks beat shortcuts between the expanded layers, and both beat no shortcuts.',
    variants: ['v2', 'v2-expansion', 'v2-none'], measures: ['fp32'],
  },
  'v1-vs-v2': {
    name: 'v1-vs-v2', title: 'MobileNetV1 vs MobileNetV2 (paper Table 3 and §5.1)',
    claim: 'V2 is smaller, cheaper and needs less activation memory than V1 at similar or better accuracy.',
    variants: ['v1', 'v2'], measures: ['cost', 'fp32', 'speed'],
  },
  'dead-kernels': {
    name: 'dead-kernels', title: 'Dead kernels: V1 vs V2, ReLU vs ReLU6, float vs int8',
    claim: "The seed: many of V1's depthwise kernels come out empty after training (ReLU zeroes them and their gradient), worse with low-precision training.",
    variants: ['v1', 'v1-relu', 'v2', 'v2-relu'], measures: ['dead', 'qat'],
  },
  'low-precision': {
    name: 'low-precision', title: 'Low precision: fp32, fp16, int8 PTQ and QAT for ReLU vs ReLU6',
    claim: 'ReLU6 keeps the network robust in low-precision arithmetic (the reason MobileNets bound the activation at 6).',
    variants: ['v2', 'v2-relu', 'v1', 'v1-relu'], measures: ['fp32', 'fp16', 'ptq', 'qat'],
  },
};

export interface Budget {
  alpha: number;
  trainLimit: number;
  epochs: number;
  /** Per-epoch validation subset (curves only: every number reported is of the final model on the whole test split). */
  evalLimit: number;
  /** QAT fine-tune of a trained model: images, epochs and learning rate. */
  qatLimit: number;
  qatEpochs: number;
  qatLr: number;
  /** Test images for the reported top-1 (0: all 10,000). */
  testLimit: number;
  calibImages: number;
  /** Sample of `mnv2 diagnose`'s dead-channel count. */
  diagnoseLimit: number;
  seeds: readonly number[];
  /** Inference speed: `mnv2 bench` batch and steps. */
  benchBatch: number;
  benchSteps: number;
}

export const FULL_BUDGET: Budget = {
  alpha: 0.5, trainLimit: 24_576, epochs: 2, evalLimit: 2000,
  qatLimit: 8192, qatEpochs: 1, qatLr: 0.001,
  testLimit: 0, calibImages: 512, diagnoseLimit: 1000, seeds: [1, 2], benchBatch: 128, benchSteps: 20,
};

export const QUICK_BUDGET: Budget = {
  alpha: 0.25, trainLimit: 256, epochs: 1, evalLimit: 128,
  qatLimit: 128, qatEpochs: 1, qatLr: 0.001,
  testLimit: 500, calibImages: 32, diagnoseLimit: 64, seeds: [1, 2], benchBatch: 16, benchSteps: 2,
};
