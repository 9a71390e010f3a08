/** Progress output of long work: bars on a terminal, a status line every 30 s otherwise. */
import cliProgress from 'cli-progress';

/** A progress bar on stderr; in a non-terminal a status line every 30 s. */
export function progressBar(enabled: boolean, format: string): cliProgress.SingleBar | null {
  if (!enabled) return null;
  const tty = Boolean(process.stderr.isTTY);
  return new cliProgress.SingleBar({
    format, stream: process.stderr, hideCursor: tty, clearOnComplete: false, etaBuffer: 50, fps: 5,
    noTTYOutput: !tty, notTTYSchedule: 30000, etaAsynchronousUpdate: true,
  }, cliProgress.Presets.shades_classic);
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  s = Math.round(s);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** Items per second since `t0` (performance.now()), for a bar's {speed}. */
export function speed(done: number, t0: number): string {
  return (done / ((performance.now() - t0) / 1000)).toFixed(1);
}
