#!/usr/bin/env node
/** `mnv2`: a thin shell over the library. Each command lives in its own module and registers itself (commands.ts). */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { registerCommands } from './commands.js';

const program = new Command();
program
  .name('mnv2')
  .description('MobileNetV2 in TypeScript: define, train, evaluate, export and run MobileNetV2')
  .version((JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version)
  .showHelpAfterError()
  // options after a command name are that command's: `detect photo.jpg --json` vs `detect coco-eval --json`
  .enablePositionalOptions();

await registerCommands(program, process.argv.slice(2));

program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(`mnv2: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
