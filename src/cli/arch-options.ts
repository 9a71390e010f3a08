/** --arch, --alpha, --resolution, --classes and the ablation switches: the model-definition flags, with no engine or file code behind them. */
import { Option, type Command } from 'commander';
import type { BaseConfig } from '../model/family.js';
import { archConfig, archNames } from '../model/registry.js';
import { SHORTCUTS, type Ablation, type ActivationKind, type ShortcutKind } from '../model/config.js';
import { ACTIVATIONS } from '../model/graph.js';
import { int, num, type Range } from './args.js';

export interface ArchOpts {
  arch?: string;
  alpha?: string;
  resolution?: string;
  classes?: string;
}

/** The model-definition flags every command that builds a model takes. */
export function archOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--arch <arch>', 'architecture: a model family or one of its variants').choices(archNames()))
    .option('--alpha <alpha>', 'width multiplier')
    .option('--resolution <px>', 'input resolution (imagenet: a multiple of 32)')
    .option('--classes <n>', 'number of classes');
}

export interface AblationOpts {
  shortcut?: ShortcutKind;
  activation?: ActivationKind;
  nonlinearBottleneck?: boolean;
}

/** --shortcut, --activation and --nonlinear-bottleneck: the paper's ablation switches (Figure 6). */
export function ablationOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--shortcut <kind>', 'MobileNetV2 shortcuts: between bottlenecks (the paper\'s), between expansion layers, or none').choices([...SHORTCUTS]))
    .addOption(new Option('--activation <kind>', 'MobileNetV2/V1 activation (default: the variant\'s, relu6 as the paper, relu for seed-cifar as the seed\'s code)').choices([...ACTIVATIONS]))
    .option('--nonlinear-bottleneck', 'MobileNetV2: the activation after the project conv too (Figure 6a\'s non-linear bottleneck)');
}

export function ablationFlags(o: AblationOpts): Ablation {
  return { shortcut: o.shortcut, activation: o.activation, linearBottleneck: o.nonlinearBottleneck ? false : undefined };
}

export const ALPHA: Range = { above: 0, max: 10 };
export const RESOLUTION: Range = { min: 1, max: 4096 };
export const CLASSES: Range = { min: 1, max: 1_000_000 };

/** --alpha, --resolution, --classes, range-checked. */
export function archNumbers(o: ArchOpts): { alpha?: number; resolution?: number; numClasses?: number } {
  return { alpha: num(o.alpha, '--alpha', ALPHA), resolution: int(o.resolution, '--resolution', RESOLUTION), numClasses: int(o.classes, '--classes', CLASSES) };
}

export function configFrom(o: ArchOpts, fallback = 'imagenet'): BaseConfig {
  return archConfig(o.arch ?? fallback, archNumbers(o));
}
