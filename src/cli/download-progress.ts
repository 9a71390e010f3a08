/** A progress bar per file and phase (download, verify, extract) for the downloaders' onProgress callbacks. */
import type { FetchProgress } from '../data/fetch.js';
import { progressBar } from '../train/progress.js';

export function downloadProgress(enabled: boolean): { onProgress: (p: FetchProgress) => void; stop: () => void } {
  const st: { pb: ReturnType<typeof progressBar>; key: string } = { pb: null, key: '' };
  const stop = (): void => {
    st.pb?.stop();
    st.pb = null;
  };
  const onProgress = (p: FetchProgress): void => {
    if (!enabled) return;
    const key = `${p.phase}:${p.file}`;
    if (key !== st.key) {
      st.pb?.stop();
      st.key = key;
      st.pb = progressBar(true, `${p.phase.padEnd(8)} ${p.file} |{bar}| {percentage}% | {done} | ETA {eta_formatted}`);
      st.pb?.start(p.total ?? 0, 0, { done: '0 MB' });
    }
    const pb = st.pb;
    if (p.total !== null && pb && pb.getTotal() !== p.total) pb.setTotal(p.total);
    pb?.update(p.done, { done: `${(p.done / 1e6).toFixed(1)}${p.total ? `/${(p.total / 1e6).toFixed(1)}` : ''} MB` });
  };
  return { onProgress, stop };
}
