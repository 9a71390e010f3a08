/** Contracts between the training loop, the optimizers and the schedules. */

/** A named parameter with its gradient; `decay` is false for parameters excluded from weight decay. */
export interface ParamRef {
  name: string;
  value: Float32Array;
  grad: Float32Array;
  decay: boolean;
}

export interface Optimizer {
  /** Apply one update in place with learning rate `lr`. */
  step(params: readonly ParamRef[], lr: number): void;
  /** Optimizer state (momentum buffers, ...) by key, for checkpoints. */
  stateDict(): Map<string, Float32Array>;
  loadStateDict(state: ReadonlyMap<string, Float32Array>, source: string): void;
}

/** Learning rate for an (epoch, step-within-epoch) position. */
export type Schedule = (epoch: number, stepInEpoch: number, stepsPerEpoch: number) => number;
