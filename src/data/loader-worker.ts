/**
 * Worker side of BatchLoader: receives the dataset once (workerData, images in a SharedArrayBuffer), then computes
 * batches on request and transfers their buffers to the main thread. Flow control: the main thread grants
 * `credits` batches at the start of an epoch and one more per consumed batch.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Dataset } from './dataset.js';
import { epochOrder, makeBatch, type FromWorker, type ToWorker, type WorkerInit } from './loader.js';

const init = workerData as WorkerInit;
const ds: Dataset = { ...init.meta, images: init.images, labels: init.labels };
const plan = init.plan;
const port = parentPort;
if (!port) throw new Error('loader-worker must run in a worker thread');

interface EpochState {
  id: number;
  epoch: number;
  order: Int32Array;
  next: number;
  end: number;
  /** Batches allowed to be produced: next < limit. */
  limit: number;
}

let state: EpochState | null = null;
let scheduled = false;

function schedule(): void {
  if (!scheduled && state && state.next < Math.min(state.limit, state.end)) {
    scheduled = true;
    setImmediate(pump); // one batch per turn, so 'cancel' / 'credit' messages are handled in between
  }
}

function pump(): void {
  scheduled = false;
  const s = state;
  if (!s || s.next >= Math.min(s.limit, s.end)) return;
  const b = s.next++;
  try {
    const batch = makeBatch(ds, plan, s.order, s.epoch, b);
    const msg: FromWorker = { type: 'batch', id: s.id, index: b, input: batch.input, labels: batch.labels, indices: batch.indices };
    port!.postMessage(msg, [batch.input.buffer as ArrayBuffer, batch.labels.buffer as ArrayBuffer, batch.indices.buffer as ArrayBuffer]);
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    port!.postMessage({ type: 'error', id: s.id, message: err.message, stack: err.stack } satisfies FromWorker);
    state = null;
    return;
  }
  schedule();
}

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'epoch':
      try {
        state = { id: m.id, epoch: m.epoch, order: epochOrder(plan, m.epoch), next: m.start, end: m.end, limit: m.start + m.credits };
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        port.postMessage({ type: 'error', id: m.id, message: err.message, stack: err.stack } satisfies FromWorker);
        state = null;
        return;
      }
      schedule();
      break;
    case 'credit':
      if (state && state.id === m.id) {
        state.limit++;
        schedule();
      }
      break;
    case 'cancel':
      if (state && state.id === m.id) state = null;
      break;
  }
});
