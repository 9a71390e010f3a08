/**
 * bench/RESULTS.md is written by several benchmark scripts: `npm run bench` owns the main report, and each
 * other script (quantization, serving, ...) owns one section between `<!-- NAME:begin -->` and
 * `<!-- NAME:end -->` markers. Each writer replaces only what it owns and keeps the rest.
 */
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../src/util/atomic-write.js';

const SECTION = /<!-- ([\w-]+):begin -->[\s\S]*?<!-- \1:end -->\n?/g;

/** The marked sections of a report, in order, each with its markers. */
export function sectionsOf(text: string): string[] {
  return [...text.matchAll(SECTION)].map((m) => m[0].endsWith('\n') ? m[0] : `${m[0]}\n`);
}

/** Replace (or append) section `name` of `file` with `markdown`, leaving everything else as it was. */
export function writeSection(file: string, name: string, markdown: string): void {
  if (!/^[\w-]+$/.test(name)) throw new Error(`section name must be letters, digits, _ or -, got '${name}'`);
  const block = `<!-- ${name}:begin -->\n${markdown.trimEnd()}\n<!-- ${name}:end -->\n`;
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const re = new RegExp(`<!-- ${name}:begin -->[\\s\\S]*?<!-- ${name}:end -->\\n?`);
  writeFileAtomic(file, re.test(old) ? old.replace(re, () => block) : `${old.trimEnd()}${old ? '\n\n' : ''}${block}`);
}

/** Write the main report `markdown` to `file`, keeping the marked sections other scripts wrote there. */
export function writeMainReport(file: string, markdown: string): void {
  const kept = existsSync(file) ? sectionsOf(readFileSync(file, 'utf8')) : [];
  writeFileAtomic(file, [markdown.trimEnd(), ...kept.map((s) => s.trimEnd())].join('\n\n') + '\n');
}
