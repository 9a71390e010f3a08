/**
 * A task turns a model's graph outputs into a loss and back into output gradients, and names the metric that
 * picks the best checkpoint. The engine knows no task: it runs a forward pass, hands the named outputs to the
 * task, and seeds its backward pass with the gradients the task wrote (classification now, detection next).
 */

export interface TaskLoss {
  /** Mean loss over the batch. */
  loss: number;
  /** Task-specific counts of the batch (classification: `correct`, the top-1 hits). */
  counts: Record<string, number>;
}

export interface Task<Target> {
  readonly name: string;
  /** Evaluation metric that selects the best checkpoint (higher is better), e.g. `val_top1`. */
  readonly bestKey: string;
  /** loss() reports `counts.correct`, the top-1 hits: the epoch's `train_acc` (classification; detection has none). */
  readonly countsCorrect?: boolean;
  /** Throws a clear error when `target` does not fit a batch of `batch` (checked before any work). */
  validate(target: Target, batch: number): void;
  /**
   * Loss of a batch given the graph outputs ([batch, ...shape] each, by output name); writes d loss / d output
   * into `grads` (same names and layouts).
   */
  loss(outputs: ReadonlyMap<string, Float32Array>, target: Target, batch: number, grads: ReadonlyMap<string, Float32Array>): TaskLoss;
}
