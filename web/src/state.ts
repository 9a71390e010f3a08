import type { Detection } from '../../src/detect/ssdlite-output.js';

/**
 * State for tests and curious users (window.__mnv2): the last input tensor, logits and probabilities, or a
 * detector's last detections (pixels of the image as displayed).
 */
export interface PageState {
  ready: boolean;
  /** classify, or detect for an SSDLite model (from its metadata). */
  task: 'classify' | 'detect' | '';
  backend: string;
  error: string;
  runs: number;
  /** The file name of the last classified image, or 'drawing'. */
  source: string;
  lastInput: number[];
  lastLogits: number[];
  lastProbs: number[];
  lastDetections: Detection[];
}
