/**
 * Peak activation memory (src/model/memory.ts) as MobileNetV2 §5.1 / Table 3 count it, against hand counts, and
 * `mnv2 summary`'s lines. Table 3 (facts file §1.8, fp16): MobileNetV1 800K, MobileNetV2 200K at 224×224.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { memoryReport, type ActivationMemory } from '../src/model/memory.js';
import { mobilenetV2 } from '../src/model/mobilenetv2.js';
import { mobilenetV1 } from '../src/model/mobilenetv1.js';
import { buildSsdlite, makeSsdliteConfig } from '../src/model/ssdlite.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** [size, channels, elements] per resolution, in graph order. */
const table = (m: ActivationMemory): [string, number | null, number][] => m.perResolution.map((p) => [p.size, p.channels, p.elements]);
const shapes = (ts: readonly { shape: number[] }[]): number[][] => ts.map((t) => t.shape);

describe('peak activation memory (§5.1, Table 3)', () => {
  it('MobileNetV2 α 1 @ 224: 401,408 elements plain (the 32-channel stem), 200,704 with the stem fused as the paper does', () => {
    const m = memoryReport(mobilenetV2('imagenet'));
    // Block outputs only: 16 @ 112², 24 @ 56², 32 @ 28², 96 @ 14² (> 64), the last 1×1 conv's 1280 @ 7², the pooled
    // 1280 (> 1000 logits). 112²: the stem's 32 × 12,544 = 401,408, more than block 1's 16 × 12,544 = 200,704.
    assert.deepEqual(table(m), [
      ['224x224', 3, 150_528], ['112x112', 32, 401_408], ['56x56', 24, 75_264], ['28x28', 32, 25_088],
      ['14x14', 96, 18_816], ['7x7', 1280, 62_720], ['1x1', 1280, 1280],
    ]);
    assert.deepEqual([m.peak.value, m.peak.shape, m.peak.elements, m.peak.bytes], ['features.0.1.act', [32, 112, 112], 401_408, 802_816]);
    // Block 1 (t = 1): reads the stem's 401,408, writes 200,704.
    assert.deepEqual([m.largestOperation.layers, shapes(m.largestOperation.inputs), shapes(m.largestOperation.outputs), m.largestOperation.elements],
      [['features.1'], [[32, 112, 112]], [[16, 112, 112]], 602_112]);

    // The paper's convention: stem + block 1 are one operation, 3 × 224² = 150,528 in, 200,704 out.
    const f = m.stemFused!;
    assert.deepEqual(table(f)[1], ['112x112', 16, 200_704]);
    assert.deepEqual([f.peak.shape, f.peak.elements, f.peak.bytes], [[16, 112, 112], 200_704, 401_408]);
    assert.deepEqual([f.largestOperation.layers, f.largestOperation.elements], [['features.0', 'features.1'], 351_232]);
  });

  it('MobileNetV1 α 1 @ 224: 802,816 elements (64 × 112²; Table 3: 800K); no stem convention', () => {
    const m = memoryReport(mobilenetV1('mobilenetv1'));
    // Every depthwise and pointwise output is materialised: the largest per resolution are 64, 128, ..., 1024 channels.
    assert.deepEqual(table(m), [
      ['224x224', 3, 150_528], ['112x112', 64, 802_816], ['56x56', 128, 401_408], ['28x28', 256, 200_704],
      ['14x14', 512, 100_352], ['7x7', 1024, 50_176], ['1x1', 1024, 1024],
    ]);
    assert.deepEqual([m.peak.value, m.peak.elements, m.peak.bytes], ['features.1.1.1.act', 802_816, 1_605_632]);
    // Pair 1's pointwise conv: 32 × 112² in + 64 × 112² out = 96 × 12,544.
    assert.deepEqual([m.largestOperation.layers, shapes(m.largestOperation.inputs), m.largestOperation.elements], [['features.1'], [[32, 112, 112]], 1_204_224]);
    assert.equal(m.stemFused, null);
  });

  it('seed-cifar α 0.5 @ 32: the last 1×1 conv, 1280 × 4² = 20,480, is the peak', () => {
    const m = memoryReport(mobilenetV2('seed-cifar', { alpha: 0.5 }));
    // Widths makeDivisible(c / 2): stem 16, blocks 8, 16, 16, 32, 48, 80, 160; last conv 1280; strides 1 1 1 2 2 1 2 1.
    // 32²: stem 16 (and stage 2's 16) × 1024 = 16,384; 16²: 16 × 256; 8²: 48 × 64; 4²: 1280 × 16; pooled 1280.
    assert.deepEqual(table(m), [['32x32', 16, 16_384], ['16x16', 16, 4096], ['8x8', 48, 3072], ['4x4', 1280, 20_480], ['1x1', 1280, 1280]]);
    assert.deepEqual([m.peak.value, m.peak.elements], ['bn2.act', 20_480]);
    // layers.2 (16 → 16 at 32², identity shortcut): 16,384 in + 16,384 out; the last conv is 160 × 16 + 20,480 = 23,040.
    assert.deepEqual([m.largestOperation.layers, m.largestOperation.elements], [['layers.2'], 32_768]);
    // The seed's t = 1 block keeps its expand conv: the stem's output is that block's input, not an inner tensor.
    assert.equal(m.stemFused, null);
  });

  it('mobilenetv1-cifar α 0.5 @ 32: 64 × 32² = 65,536', () => {
    const m = memoryReport(mobilenetV1('mobilenetv1-cifar', { alpha: 0.5 }));
    // Widths int(c / 2): 16, 32, 64, 64, 128, 128, 256 ×6, 512 ×2; the stem and pair 2 stay at stride 1.
    assert.deepEqual(table(m), [['32x32', 64, 65_536], ['16x16', 128, 32_768], ['8x8', 256, 16_384], ['4x4', 512, 8192], ['1x1', 512, 512]]);
    assert.deepEqual([m.peak.value, m.peak.elements], ['features.2.1.1.act', 65_536]);
    // Pair 3's depthwise conv: 64 × 32² in and out.
    assert.deepEqual([m.largestOperation.layers, shapes(m.largestOperation.inputs), m.largestOperation.elements], [['features.3'], [[64, 32, 32]], 131_072]);
  });

  it("the 'expansion' shortcut ablation materialises the expanded tensors it adds across blocks", () => {
    const m = memoryReport(mobilenetV2('imagenet', { shortcut: 'expansion' }));
    // Block 3's expanded tensor (6 × 24 = 144 channels at 56²) is added to block 4's: 144 × 3136 = 451,584 > the stem's 401,408.
    assert.deepEqual([m.peak.value, m.peak.shape, m.peak.elements], ['features.3.conv.0.1.act', [144, 56, 56], 451_584]);
  });

  it('SSDLite @ 300: the block-14 expand output it reads as a feature map is materialised; the concatenated outputs are not spatial', () => {
    const m = memoryReport(buildSsdlite(makeSsdliteConfig()));
    const bySize = new Map(m.perResolution.map((p) => [p.size, p]));
    assert.deepEqual([m.peak.shape, m.peak.elements], [[32, 150, 150], 720_000]);
    assert.equal(m.stemFused!.peak.elements, 16 * 150 * 150);
    assert.deepEqual([bySize.get('19x19')!.value, bySize.get('19x19')!.elements], ['features.14.conv.0.1.act', 576 * 19 * 19]);
    // 1917 anchors × 91 class scores.
    assert.deepEqual([bySize.get('other')!.shape, bySize.get('other')!.channels], [[1917, 91], null]);
  });
});

describe('mnv2 summary: peak activation memory', () => {
  const summary = (...args: string[]): string => execFileSync(process.execPath, [CLI, 'summary', ...args], { encoding: 'utf8' });

  it('prints the plain count beside Table 3 and the paper convention', () => {
    const out = summary();
    assert.match(out, /\npeak activation memory: 401,408 elements, 802,816 bytes fp16 \(112x112x32 features\.0\.1\.act\); paper Table 3: 200K; the paper fuses the stem into the first t = 1 block: 200,704 by that convention\n/);
    assert.match(out, /\nlargest operation, inputs \+ outputs \(§5\.1\): 602,112 elements \(features\.1: 112x112x32 -> 112x112x16\); stem fused: 351,232\n/);
    assert.match(out, /\nlargest materialised tensor per resolution: 224x224 3 ch 150,528, 112x112 32 ch 401,408, 56x56 24 ch 75,264,/);
    assert.match(summary('--arch', 'mobilenetv1'), /\npeak activation memory: 802,816 elements, 1,605,632 bytes fp16 \(112x112x64 features\.1\.1\.1\.act\); paper Table 3: 800K\n/);
    // Table 3 is α 1 @ 224 only.
    assert.match(summary('--alpha', '0.5'), /\npeak activation memory: 200,704 elements, 401,408 bytes fp16 \(112x112x16 features\.0\.1\.act\); the paper fuses/);
  });

  it('--json has the per-resolution table under memory', () => {
    const m = (JSON.parse(summary('--arch', 'mobilenetv1-cifar', '--alpha', '0.5', '--json')) as { memory: ActivationMemory & { paper: string | null } }).memory;
    assert.deepEqual(table(m)[0], ['32x32', 64, 65_536]);
    assert.equal(m.paper, null);
  });
});
