/** Validation of the config fields the MobileNet families share (each family adds its own checks). */
import type { HeadLayer, LayerStyle } from './builder.js';
import { ACTIVATIONS } from './graph.js';
import type { BaseConfig } from './family.js';
import { failFor } from '../util/errors.js';

/** Throws `invalid model config: ...` naming the field. */
export const invalidConfig = failFor('invalid model config');

/** Width, input and output sizes, layer style and dropout. */
export function checkSharedFields(cfg: BaseConfig & LayerStyle & { alpha: number; dropout: number; head?: readonly HeadLayer[] }): void {
  const bad = invalidConfig;
  if (!(cfg.alpha > 0) || !Number.isFinite(cfg.alpha)) bad(`alpha must be a positive number, got ${cfg.alpha}`);
  if (!Number.isInteger(cfg.resolution) || cfg.resolution <= 0) bad(`resolution must be a positive integer, got ${cfg.resolution}`);
  if (!Number.isInteger(cfg.inChannels) || cfg.inChannels <= 0) bad(`inChannels must be a positive integer, got ${cfg.inChannels}`);
  if (!Number.isInteger(cfg.numClasses) || cfg.numClasses <= 0) bad(`numClasses must be a positive integer, got ${cfg.numClasses}`);
  if (!ACTIVATIONS.includes(cfg.activation)) bad(`activation must be ${ACTIVATIONS.join(' or ')}, got ${cfg.activation}`);
  if (!(cfg.bnEps > 0)) bad(`bnEps must be positive, got ${cfg.bnEps}`);
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) bad(`dropout must be in [0, 1), got ${cfg.dropout}`);
  if (cfg.padding !== 'symmetric' && cfg.padding !== 'keras') bad(`padding must be symmetric or keras, got ${cfg.padding}`);
  if (cfg.head !== undefined) checkHead(cfg.head);
}

const HEAD_ACTIVATIONS = ['relu', 'relu6', 'sigmoid', 'linear'];

/** Hidden layers of a classifier head: positive integer units, a known activation, a dropout rate in [0, 1). */
function checkHead(head: readonly HeadLayer[]): void {
  if (!Array.isArray(head)) invalidConfig(`head must be an array of {units, activation, dropout}, got ${JSON.stringify(head)}`);
  head.forEach((h, i) => {
    if (typeof h !== 'object' || h === null) invalidConfig(`head[${i}] must be an object {units, activation, dropout}`);
    if (!Number.isInteger(h.units) || h.units <= 0) invalidConfig(`head[${i}].units must be a positive integer, got ${h.units}`);
    if (!HEAD_ACTIVATIONS.includes(h.activation)) invalidConfig(`head[${i}].activation must be one of ${HEAD_ACTIVATIONS.join(', ')}, got ${h.activation}`);
    const p = h.dropout ?? 0;
    if (!(p >= 0 && p < 1)) invalidConfig(`head[${i}].dropout must be in [0, 1), got ${h.dropout}`);
  });
}
