/** What the benchmarks read from a child process's output (the peers print one JSON line last). */

/** Last stdout line that parses as a JSON object. */
export function lastJson(stdout: string): Record<string, unknown> | undefined {
  const lines = stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('{'));
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      const v: unknown = JSON.parse(lines[i]!);
      if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
    } catch { /* not JSON */ }
  }
  return undefined;
}

/** The first line that looks like an error message, else the last n lines; whitespace collapsed. */
export function lastLines(s: string, n: number): string {
  const lines = s.trim().split('\n').map((l) => l.replace(/\s+/g, ' ').trim()).filter(Boolean);
  const err = lines.find((l) => /\berror\b|exception|traceback/i.test(l) && !/^\s*at /.test(l));
  if (err && /^traceback/i.test(err)) return lines.slice(-n).join(' / '); // Python: the last line names it
  return err ?? lines.slice(-n).join(' / ');
}
