/**
 * Stops a diverged run. The loss alone is not enough: once a weight is NaN the native engine's ReLUs turn it
 * into 0 and the loss can stay finite (ln(classes)) while the run "succeeds", so the updated weights are checked too.
 */
import { firstNonFinite } from '../util/finite.js';
import type { ParamRef } from './types.js';

/** After an optimizer step: throws when the step's loss or any updated parameter is NaN or ±Infinity. */
export function assertConverging(loss: number, params: readonly ParamRef[], epoch: number, step: number): void {
  const where = `at epoch ${epoch + 1}, step ${step + 1}: training diverged (try a lower --lr)`;
  if (!Number.isFinite(loss)) throw new Error(`loss is ${loss} ${where}`);
  for (const p of params) {
    const i = firstNonFinite(p.value);
    if (i >= 0) throw new Error(`parameter ${p.name} became ${p.value[i]} ${where}`);
  }
}
