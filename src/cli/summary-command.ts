/** `mnv2 summary`: the model definition only (start-up: it loads no engine, image or file code). */
import type { Command } from 'commander';
import { archConfig, buildModel, resolveArch } from '../model/registry.js';
import { ablationOverrides } from '../model/config.js';
import { formatSummary, summarize } from '../model/summary.js';
import { ablationFlags, ablationOptions, archNumbers, archOptions, type AblationOpts, type ArchOpts } from './arch-options.js';

export function registerSummaryCommand(program: Command): void {
  ablationOptions(archOptions(program.command('summary').description('per-layer table: input, operator, t, c, n, s, output, params, MACs; peak activation memory')))
    .option('--json', 'print JSON')
    .action((o: ArchOpts & AblationOpts & { json?: boolean }) => {
      const arch = o.arch ?? 'imagenet';
      const s = summarize(buildModel(archConfig(arch, { ...archNumbers(o), ...ablationOverrides(resolveArch(arch).family.name, arch, ablationFlags(o)) })));
      console.log(o.json ? JSON.stringify(s, null, 2) : formatSummary(s));
    });
}
