/** One loader in a child process: the fuzzer's parent kills it on a hang and counts its death as a crash. */
import { LOADERS } from './loaders.js';

export interface Job {
  loader: string;
  dir: string;
  target: string;
}

export interface Outcome {
  accepted: boolean;
  /** The error's name and message when the loader threw. */
  error?: string;
  message?: string;
}

process.on('message', (job: Job) => {
  const l = LOADERS.find((x) => x.name === job.loader);
  if (!l) throw new Error(`unknown loader ${job.loader}`);
  l.load(job.dir, job.target).then(
    () => process.send!({ accepted: true } satisfies Outcome),
    (e: unknown) => process.send!({ accepted: false, error: e instanceof Error ? e.name : typeof e, message: e instanceof Error ? e.message : String(e) } satisfies Outcome),
  );
});
process.send!('ready');
