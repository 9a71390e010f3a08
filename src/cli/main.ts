#!/usr/bin/env node
/** `mnv2`: a thin shell over the library. Each command lives in its own module and registers itself here. */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { registerModelCommands } from './model-commands.js';
import { registerBenchCommand } from './bench-command.js';
import { registerTrainCommands } from './train-commands.js';
import { registerQuantizeCommand } from './quantize-command.js';
import { registerImportCommands } from './import-commands.js';
import { registerServeCommands } from './serve-command.js';
import { registerKnnCommand } from './knn-command.js';
import { registerWeightsCommands } from './weights-command.js';
import { registerDetectDataCommands } from './detect-data-commands.js';
import { registerDetectCommand } from './detect-command.js';
import { registerDiagnoseCommand } from './diagnose-command.js';

const program = new Command();
program
  .name('mnv2')
  .description('MobileNetV2 in TypeScript: define, train, evaluate, export and run MobileNetV2')
  .version((JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version)
  .showHelpAfterError()
  // options after a command name are that command's: `detect photo.jpg --json` vs `detect coco-eval --json`
  .enablePositionalOptions();

registerModelCommands(program);
registerBenchCommand(program);
registerTrainCommands(program);
registerQuantizeCommand(program);
registerImportCommands(program);
registerServeCommands(program);
registerKnnCommand(program);
registerWeightsCommands(program);
registerDetectDataCommands(program); // after registerTrainCommands: adds to its `data` group
registerDetectCommand(program);
registerDiagnoseCommand(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(`mnv2: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
