/**
 * Numeric command-line values, checked up front for every command (before any file is read or any work is
 * done): a clear error names the flag, the allowed range and the value given. And deprecated flag spellings.
 */
import { Option, type Command } from 'commander';

/** The allowed values of a numeric flag: inclusive bounds `min`, `max`; `above` is an exclusive lower bound. */
export interface Range {
  min?: number;
  max?: number;
  above?: number;
}

/** Largest batch any command accepts: beyond it buffers outgrow what one process can allocate. */
export const MAX_BATCH = 4096;
/** Engine threads. */
export const THREADS: Range = { min: 1, max: 1024 };
/** Seeds are 32-bit. */
export const SEED: Range = { min: 0, max: 0xffffffff };
export const BATCH: Range = { min: 1, max: MAX_BATCH };
/** Classes to report (more than the model has reports them all). */
export const TOP: Range = { min: 1, max: 100_000 };
/** A count where 0 means "all" (limits, subsets). */
export const COUNT_OR_ALL: Range = { min: 0, max: Number.MAX_SAFE_INTEGER };

function describe(r: Range): string {
  const lo = r.above !== undefined ? `> ${r.above}` : r.min !== undefined ? `>= ${r.min}` : '';
  const hi = r.max !== undefined ? `<= ${r.max}` : '';
  if (r.min !== undefined && r.max !== undefined) return ` in [${r.min}, ${r.max}]`;
  return lo && hi ? ` ${lo} and ${hi}` : lo || hi ? ` ${lo || hi}` : '';
}

function parse(v: string | undefined, flag: string, r: Range, integer: boolean): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  const ok = v.trim() !== '' && (integer ? Number.isSafeInteger(n) : Number.isFinite(n));
  const inRange = (r.min === undefined || n >= r.min) && (r.above === undefined || n > r.above) && (r.max === undefined || n <= r.max);
  if (!ok || !inRange) throw new Error(`${flag} expects ${integer ? 'an integer' : 'a number'}${describe(r)}, got '${v}'`);
  return n;
}

/** A finite number in `range`, or undefined when the flag was not given. */
export function num(v: string | undefined, flag: string, range: Range = {}): number | undefined {
  return parse(v, flag, range, false);
}

/** An integer in `range`, or undefined when the flag was not given. */
export function int(v: string | undefined, flag: string, range: Range = {}): number | undefined {
  return parse(v, flag, range, true);
}

const camel = (flag: string): string => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/**
 * `--<old>` kept as a deprecated spelling of `--<name>` (same choices, hidden from help): it still works,
 * with a one-line notice on stderr; both given with different values is an error.
 */
export function deprecatedAlias(cmd: Command, old: string, name: string, choices: readonly string[]): Command {
  const [oldKey, key] = [camel(old), camel(name)];
  return cmd
    .addOption(new Option(`--${old} <name>`, `deprecated spelling of --${name}`).choices([...choices]).hideHelp())
    .hook('preAction', (c) => {
      const v = c.getOptionValue(oldKey) as string | undefined;
      if (v === undefined) return;
      const explicit = c.getOptionValueSource(key) === 'cli';
      if (explicit && c.getOptionValue(key) !== v) throw new Error(`--${old} ${v} and --${name} ${String(c.getOptionValue(key))} disagree; --${old} is the old spelling of --${name}`);
      console.error(`mnv2 ${c.name()}: --${old} is deprecated, use --${name} ${v}`);
      c.setOptionValue(key, v);
    });
}
