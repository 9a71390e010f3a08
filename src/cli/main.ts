#!/usr/bin/env node
/** `mnv2`: a thin shell over the library. Each command lives in its own module and registers itself (commands.ts). */
import { existsSync, readFileSync } from 'node:fs';
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

// --weights NAME (not an existing file) → the catalogue's model file, downloaded and imported once. Here, not in
// the weights module: commands load only their own modules (commands.ts), and every one taking --weights needs it.
program.hook('preAction', async (_root, action) => {
  const value = action.getOptionValue('weights') as unknown;
  if (typeof value !== 'string' || existsSync(value)) return;
  const [{ findWeights }, { resolveWeights }] = await Promise.all([import('../weights/catalog.js'), import('../weights/cache.js')]);
  if (findWeights(value)) action.setOptionValue('weights', await resolveWeights(value));
});

await registerCommands(program, process.argv.slice(2));

program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(`mnv2: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
