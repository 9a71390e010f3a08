/** `mnv2 weights list | fetch NAME` (main.ts resolves `--weights NAME` for every command that takes a weights file). */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { WEIGHTS_CATALOG } from '../weights/catalog.js';
import { downloadPath, fetchWeights, resolveWeights, weightsCacheDir } from '../weights/cache.js';

export function registerWeightsCommands(program: Command): void {
  const w = program.command('weights').description(`pretrained weights: official URLs, checksums, a per-user cache (${weightsCacheDir()})`);
  w.command('list')
    .description('the catalogue: name, what it is, and whether it is cached')
    .option('--json', 'print JSON')
    .action((o: { json?: boolean }) => {
      const rows = WEIGHTS_CATALOG.map((e) => ({ ...e, cached: existsSync(downloadPath(e.name)) }));
      if (o.json) {
        console.log(JSON.stringify(rows, null, 2));
        return;
      }
      const width = Math.max(...rows.map((r) => r.name.length));
      for (const r of rows) console.log(`${r.name.padEnd(width)}  ${r.cached ? 'cached' : '      '}  ${r.description}`);
    });
  w.command('fetch')
    .description('download weights into the cache (resumable, checksum-verified; model zoo archives also imported); prints the file')
    .argument('<name>', 'catalogue name (mnv2 weights list)')
    .option('--base-url <url>', 'download from this folder URL instead of the official one')
    .option('--no-progress', 'no progress bar')
    .action(async (name: string, o: { baseUrl?: string; progress: boolean }) => {
      const { downloadProgress } = await import('./download-progress.js'); // a progress-bar library
      const bar = downloadProgress(o.progress);
      try {
        const r = await fetchWeights(name, { baseUrl: o.baseUrl, onProgress: bar.onProgress });
        bar.stop();
        console.error(`${r.status === 'downloaded' ? 'downloaded' : 'already cached'}: ${r.entry.description}`);
        // an archive is verified by importing what it holds: at once, so that a bad download shows here
        if (r.entry.format === 'tf-od-tar') console.error(`imported ${r.entry.member} into ${await resolveWeights(name, { baseUrl: o.baseUrl })}; use it as --weights ${name}`);
        console.log(r.file);
      } finally {
        bar.stop();
      }
    });
}
