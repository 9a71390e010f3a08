/**
 * Which module registers which top-level command. `mnv2 NAME ...` imports only the modules that add to NAME
 * (each module's imports cost start-up time); help, `help NAME`, no command or an unknown one load them all, so
 * commander lists and suggests every command as before. test/cli-startup.test.ts checks the table against what
 * each module registers.
 */
import type { Command } from 'commander';

export interface CommandModule {
  /** Top-level commands the module creates or adds subcommands to. */
  names: readonly string[];
  load: () => Promise<(program: Command) => void>;
}

/** In registration order: a module that adds to a group (`export`, `data`, `detect`) comes after the one creating it. */
export const COMMAND_MODULES: readonly CommandModule[] = [
  { names: ['summary'], load: async () => (await import('./summary-command.js')).registerSummaryCommand },
  { names: ['infer', 'export', 'predict'], load: async () => (await import('./model-commands.js')).registerModelCommands },
  { names: ['bench'], load: async () => (await import('./bench-command.js')).registerBenchCommand },
  { names: ['train', 'eval', 'plot', 'data'], load: async () => (await import('./train-commands.js')).registerTrainCommands },
  { names: ['quantize'], load: async () => (await import('./quantize-command.js')).registerQuantizeCommand },
  { names: ['import'], load: async () => (await import('./import-commands.js')).registerImportCommands },
  { names: ['serve', 'export'], load: async () => (await import('./serve-command.js')).registerServeCommands },
  { names: ['knn'], load: async () => (await import('./knn-command.js')).registerKnnCommand },
  { names: ['weights'], load: async () => (await import('./weights-command.js')).registerWeightsCommands },
  { names: ['data', 'detect'], load: async () => (await import('./detect-data-commands.js')).registerDetectDataCommands },
  { names: ['detect'], load: async () => (await import('./detect-command.js')).registerDetectCommand },
  { names: ['diagnose'], load: async () => (await import('./diagnose-command.js')).registerDiagnoseCommand },
  { names: ['experiment'], load: async () => (await import('./experiment-command.js')).registerExperimentCommand },
];

/**
 * The modules `argv` (after node and the script) needs: those adding to its command, the first word that is not
 * an option (the program's own options, -V and -h, take no value), and every module adding to a command those
 * add to, so each group they touch is built whole (`serve` adds `export triton` to model-commands' `export`);
 * every module when no module knows the word.
 */
export function modulesFor(argv: readonly string[]): readonly CommandModule[] {
  const word = argv.find((a) => !a.startsWith('-'));
  const names = new Set(word === undefined ? [] : [word]);
  let some: CommandModule[] = [];
  for (let grew = true; grew;) {
    some = COMMAND_MODULES.filter((m) => m.names.some((n) => names.has(n)));
    const before = names.size;
    for (const m of some) for (const n of m.names) names.add(n);
    grew = names.size > before;
  }
  return some.length ? some : COMMAND_MODULES;
}

/** Registers the modules `argv` needs, in table order. */
export async function registerCommands(program: Command, argv: readonly string[]): Promise<void> {
  const registrars = await Promise.all(modulesFor(argv).map((m) => m.load()));
  for (const register of registrars) register(program);
}
