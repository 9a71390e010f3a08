/**
 * Garments on a canvas: each image drawn at a random size and position on a black square frame, the way
 * fashion-detect places Fashion-MNIST garments (`mnv2 data make fashion-detect`: 0.75–2× on a 96-px canvas) and
 * the way a detector sees them once that canvas is resized to its input. A classifier trained so
 * (`--augment canvas`) learns garments at the detector's scale and position spread, for use as its backbone.
 *
 * Training draws a new placement (and a flip) per image and batch; evaluation draws one fixed placement per image
 * from its index, so the validation and test numbers do not change between epochs.
 */
import { Rng } from '../util/rng.js';
import { resizeBilinearHwc } from './augment.js';
import { normalizationTables, type Dataset, type InputConvention } from './dataset.js';

/** Side of the drawn image in input pixels, uniform in [minSize, maxSize]. */
export interface CanvasSpec {
  readonly minSize: number;
  readonly maxSize: number;
}

/** Where fashion-detect puts garments: 0.75–2× their 28 px on a 96-px canvas (`mnv2 data make fashion-detect`'s defaults). */
export const FASHION_DETECT_PLACEMENT: CanvasPlacement = Object.freeze({ canvas: 96, minScale: 0.75, maxScale: 2 });
/** An image's side is drawn at minScale..maxScale times its own on a canvas of `canvas` pixels. */
export interface CanvasPlacement {
  readonly canvas: number;
  readonly minScale: number;
  readonly maxScale: number;
}

/** The sides a `side`-pixel image is drawn at on a `resolution`-pixel frame: the placement's, scaled by resolution / canvas. */
export function canvasSizes(side: number, resolution: number, place: CanvasPlacement = FASHION_DETECT_PLACEMENT): CanvasSpec {
  const k = (side * resolution) / place.canvas;
  return { minSize: Math.round(k * place.minScale), maxSize: Math.min(resolution, Math.round(k * place.maxScale)) };
}

/** The convention that draws `ds`'s images on a `resolution`-pixel frame at the placement's sizes. */
export function canvasConvention(
  base: InputConvention, ds: Pick<Dataset, 'name' | 'height' | 'width'>, resolution: number, place: CanvasPlacement = FASHION_DETECT_PLACEMENT,
): InputConvention {
  if (ds.height !== ds.width || (resolution - ds.height) % 2 !== 0 || resolution <= ds.height) {
    throw new Error(`--augment canvas: ${ds.name}'s ${ds.height}×${ds.width} images need a square frame larger by an even number of pixels; --resolution ${resolution} is not`);
  }
  return { ...base, pad: (resolution - ds.height) / 2, canvas: canvasSizes(ds.height, resolution, place) };
}

/** Where one image goes: its side, top-left corner in the frame, and a horizontal flip. */
interface Placement {
  size: number;
  top: number;
  left: number;
  flip: boolean;
}

function drawPlacement(rng: Rng, spec: CanvasSpec, frame: number, flip: boolean): Placement {
  const size = spec.minSize + rng.int(spec.maxSize - spec.minSize + 1);
  return { size, top: rng.int(frame - size + 1), left: rng.int(frame - size + 1), flip: flip && rng.uniform() < 0.5 };
}

/** A fixed placement per image index (evaluation). */
function indexPlacement(idx: number, spec: CanvasSpec, frame: number): Placement {
  return drawPlacement(new Rng((Math.imul(idx, 0x9e3779b1) ^ 0xca1a5) >>> 0), spec, frame, false);
}

/**
 * Writes images `indices` of a 1-channel dataset drawn on the frame of `conv` (which has `canvas`) as a normalized
 * NCHW batch into `out`, replicated to conv.channels. With `rng`: random placements and flips (training);
 * without: each image's fixed placement. Returns the filled view.
 */
export function canvasBatch(ds: Dataset, indices: ArrayLike<number>, out: Float32Array, conv: InputConvention, rng?: Rng): Float32Array {
  const spec = conv.canvas;
  if (!spec) throw new Error('canvasBatch: the input convention has no canvas');
  if (ds.channels !== 1) throw new Error(`--augment canvas: ${ds.name} has ${ds.channels} channels; canvases are drawn from greyscale garments`);
  const frame = ds.height + 2 * conv.pad;
  const plane = frame * frame;
  const need = indices.length * conv.channels * plane;
  if (out.length < need) throw new Error(`canvasBatch: output has ${out.length} values, batch needs ${need}`);
  const tables = normalizationTables(conv);
  if (tables.some((t) => t !== tables[0])) throw new Error('--augment canvas: the garment is replicated to every channel, so they need one mean and std');
  const lut = tables[0]!;
  const src = { top: 0, left: 0, height: ds.height, width: ds.width };
  const per = ds.height * ds.width;
  for (let n = 0; n < indices.length; n++) {
    const idx = indices[n]!;
    if (!(idx >= 0 && idx < ds.count)) throw new RangeError(`canvasBatch: index ${idx} out of range [0, ${ds.count})`);
    const p = rng ? drawPlacement(rng, spec, frame, true) : indexPlacement(idx, spec, frame);
    const g = resizeBilinearHwc(ds.images.subarray(idx * per, (idx + 1) * per), ds.height, ds.width, 1, src, p.size, p.size, p.flip);
    const base = n * conv.channels * plane;
    out.fill(lut[0]!, base, base + plane);
    for (let y = 0; y < p.size; y++) {
      const row = base + (p.top + y) * frame + p.left;
      for (let x = 0; x < p.size; x++) out[row + x] = lut[g[y * p.size + x]!]!;
    }
    for (let c = 1; c < conv.channels; c++) out.copyWithin(base + c * plane, base, base + plane);
  }
  return out.subarray(0, need);
}
