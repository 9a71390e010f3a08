/** `mnv2 summary`: the model definition only (start-up: it loads no engine, image or file code). */
import type { Command } from 'commander';
import { archConfig, buildModel, resolveArch } from '../model/registry.js';
import { shortcutOverride, type ShortcutKind } from '../model/config.js';
import { formatSummary, summarize } from '../model/summary.js';
import { archNumbers, archOptions, shortcutOption, type ArchOpts } from './arch-options.js';

export function registerSummaryCommand(program: Command): void {
  archOptions(program.command('summary').description('per-layer table: input, operator, t, c, n, s, output, params, MACs'))
    .addOption(shortcutOption())
    .option('--json', 'print JSON')
    .action((o: ArchOpts & { json?: boolean; shortcut?: ShortcutKind }) => {
      const arch = o.arch ?? 'imagenet';
      const s = summarize(buildModel(archConfig(arch, { ...archNumbers(o), ...shortcutOverride(resolveArch(arch).family.name, arch, o.shortcut) })));
      console.log(o.json ? JSON.stringify(s, null, 2) : formatSummary(s));
    });
}
