/** State for tests and curious users (window.__mnv2): the last input tensor, logits and probabilities. */
export interface PageState {
  ready: boolean;
  backend: string;
  error: string;
  runs: number;
  /** The file name of the last classified image, or 'drawing'. */
  source: string;
  lastInput: number[];
  lastLogits: number[];
  lastProbs: number[];
}
