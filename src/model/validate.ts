/** Validation of the config fields the MobileNet families share (each family adds its own checks). */
import type { LayerStyle } from './builder.js';
import type { BaseConfig } from './family.js';
import { failFor } from '../util/errors.js';

/** Throws `invalid model config: ...` naming the field. */
export const invalidConfig = failFor('invalid model config');

/** Width, input and output sizes, layer style and dropout. */
export function checkSharedFields(cfg: BaseConfig & LayerStyle & { alpha: number; dropout: number }): void {
  const bad = invalidConfig;
  if (!(cfg.alpha > 0) || !Number.isFinite(cfg.alpha)) bad(`alpha must be a positive number, got ${cfg.alpha}`);
  if (!Number.isInteger(cfg.resolution) || cfg.resolution <= 0) bad(`resolution must be a positive integer, got ${cfg.resolution}`);
  if (!Number.isInteger(cfg.inChannels) || cfg.inChannels <= 0) bad(`inChannels must be a positive integer, got ${cfg.inChannels}`);
  if (!Number.isInteger(cfg.numClasses) || cfg.numClasses <= 0) bad(`numClasses must be a positive integer, got ${cfg.numClasses}`);
  if (cfg.activation !== 'relu' && cfg.activation !== 'relu6') bad(`activation must be relu or relu6, got ${cfg.activation}`);
  if (!(cfg.bnEps > 0)) bad(`bnEps must be positive, got ${cfg.bnEps}`);
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) bad(`dropout must be in [0, 1), got ${cfg.dropout}`);
  if (cfg.padding !== 'symmetric' && cfg.padding !== 'keras') bad(`padding must be symmetric or keras, got ${cfg.padding}`);
}
