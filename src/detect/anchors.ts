/**
 * SSD anchors exactly as the TF Object Detection API makes them for ssdlite_mobilenet_v2_coco:
 * `anchor_generators/multiple_grid_anchor_generator.py` (`create_ssd_anchors`, `MultipleGridAnchorGenerator`,
 * `grid_anchor_generator.tile_anchors`). Layer k of `numLayers` has scale s_k = min + (max − min)·k/(numLayers − 1)
 * (1.0 appended for the interpolation); each location gets one box per (scale, aspect ratio) spec with
 * h = s/√ar, w = s·√ar (times the base size, scaled by min(H, W)/H and min(H, W)/W for non-square inputs),
 * centered at ((y + 0.5)/H_k, (x + 0.5)/W_k). Order: layer, y, x, spec. Normalized, not clipped.
 */
import { centerToCorners } from './boxes.js';

export interface SsdAnchorConfig {
  numLayers: number;
  minScale: number;
  maxScale: number;
  aspectRatios: readonly number[];
  /** Aspect ratio of the extra box at scale √(s_k·s_{k+1}); 0 disables it. */
  interpolatedScaleAspectRatio: number;
  /** Layer 0 gets only (0.1, 1), (s_0, 2), (s_0, 0.5). */
  reduceBoxesInLowestLayer: boolean;
}

/** ssdlite_mobilenet_v2_coco.config's `ssd_anchor_generator` (0.3333, not 1/3, as written in the config). */
export const SSDLITE_ANCHORS: Readonly<SsdAnchorConfig> = Object.freeze({
  numLayers: 6,
  minScale: 0.2,
  maxScale: 0.95,
  aspectRatios: Object.freeze([1.0, 2.0, 0.5, 3.0, 0.3333]),
  interpolatedScaleAspectRatio: 1.0,
  reduceBoxesInLowestLayer: true,
});

/** One anchor shape: scale and aspect ratio (w/h). */
export interface BoxSpec {
  scale: number;
  aspectRatio: number;
}

/** The (scale, aspect ratio) specs of each layer (create_ssd_anchors' box_specs_list). */
export function boxSpecs(cfg: SsdAnchorConfig = SSDLITE_ANCHORS): BoxSpec[][] {
  const { numLayers, minScale, maxScale } = cfg;
  if (!Number.isInteger(numLayers) || numLayers < 2) throw new Error(`numLayers must be an integer ≥ 2, got ${numLayers}`);
  const scales = Array.from({ length: numLayers }, (_, k) => minScale + ((maxScale - minScale) * k) / (numLayers - 1));
  scales.push(1.0);
  return scales.slice(0, numLayers).map((s, k) => {
    if (k === 0 && cfg.reduceBoxesInLowestLayer) {
      return [{ scale: 0.1, aspectRatio: 1.0 }, { scale: s, aspectRatio: 2.0 }, { scale: s, aspectRatio: 0.5 }];
    }
    const specs = cfg.aspectRatios.map((aspectRatio) => ({ scale: s, aspectRatio }));
    if (cfg.interpolatedScaleAspectRatio > 0) {
      specs.push({ scale: Math.sqrt(s * scales[k + 1]!), aspectRatio: cfg.interpolatedScaleAspectRatio });
    }
    return specs;
  });
}

/** 'SAME' convolution output size of stride s. */
const sameOut = (n: number, s: number): number => Math.ceil(n / s);

/**
 * SSDLite-MobileNetV2's feature-map sizes for an input of `size` pixels: the backbone taps at stride 16
 * (expanded_conv_13/expand) and 32 (Conv_1), then stride-2 extra layers; 'SAME' padding rounds up.
 * 300 → 19, 10, 5, 3, 2, 1; 320 → 20, 10, 5, 3, 2, 1.
 */
export function ssdliteFeatureMapSizes(size: number, numLayers = SSDLITE_ANCHORS.numLayers): number[] {
  if (!Number.isInteger(size) || size < 1) throw new Error(`input size must be a positive integer, got ${size}`);
  let n = size;
  for (let i = 0; i < 4; i++) n = sameOut(n, 2);
  const out: number[] = [];
  for (let k = 0; k < numLayers; k++) {
    out.push(n);
    n = sameOut(n, 2);
  }
  return out;
}

export interface Anchors {
  /** Number of anchors. */
  count: number;
  /** [count, 4] as TFLite_Detection_PostProcess takes them: [ycenter, xcenter, h, w], normalized. */
  center: Float32Array;
  /** [count, 4] corner form [x1, y1, x2, y2], normalized (src/detect's box convention). */
  corners: Float32Array;
  /** Anchors per location of each layer (3, 6, 6, 6, 6, 6 for SSDLite). */
  perLocation: number[];
}

/**
 * The anchors for an input of height × width pixels (SSDLite-MobileNetV2's feature maps), or for explicit
 * feature-map shapes [[H_0, W_0], ...].
 */
export function ssdAnchors(
  input: { height: number; width: number } | { featureMaps: [number, number][] },
  cfg: SsdAnchorConfig = SSDLITE_ANCHORS,
): Anchors {
  const specs = boxSpecs(cfg);
  let maps: [number, number][];
  let imH = 1;
  let imW = 1;
  if ('featureMaps' in input) {
    maps = input.featureMaps;
  } else {
    imH = input.height;
    imW = input.width;
    const hs = ssdliteFeatureMapSizes(imH, cfg.numLayers);
    const ws = ssdliteFeatureMapSizes(imW, cfg.numLayers);
    maps = hs.map((h, k) => [h, ws[k]!]);
  }
  if (maps.length !== specs.length) throw new Error(`${maps.length} feature maps for ${specs.length} anchor layers`);
  // MultipleGridAnchorGenerator: base_anchor_size [1, 1] times min(H, W)/H and min(H, W)/W.
  const baseH = Math.min(imH, imW) / imH;
  const baseW = Math.min(imH, imW) / imW;
  const count = maps.reduce((a, [h, w], k) => a + h * w * specs[k]!.length, 0);
  const center = new Float32Array(4 * count);
  let p = 0;
  maps.forEach(([gh, gw], k) => {
    for (let y = 0; y < gh; y++) {
      for (let x = 0; x < gw; x++) {
        for (const { scale, aspectRatio } of specs[k]!) {
          const r = Math.sqrt(aspectRatio);
          center.set([(y + 0.5) / gh, (x + 0.5) / gw, (scale / r) * baseH, scale * r * baseW], p);
          p += 4;
        }
      }
    }
  });
  return { count, center, corners: centerToCorners(center, true), perLocation: specs.map((s) => s.length) };
}
