/** The SSDLite-MobileNetV2 family: sizes against the TF OD API layout (MobileNetV2 paper, Table 6). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { archConfig, buildModel } from '../src/model/registry.js';
import { summarize } from '../src/model/summary.js';
import { nodeMacs, nodeParamCount, type Graph } from '../src/model/graph.js';
import { featureMapSizes, type SsdliteConfig } from '../src/model/ssdlite.js';
import { ssdliteNamesOf } from '../src/io/tflite-ssdlite.js';
import { ssdAnchors, ssdliteFeatureMapSizes } from '../src/detect/anchors.js';
import * as ort from 'onnxruntime-node';
import { initWeights } from '../src/model/weights.js';
import { exportOnnx } from '../src/engine/onnx/export.js';
import { Rng } from '../src/util/rng.js';
import { referenceOutputs } from './helpers/reference-forward.js';
import { maxAbs, maxAbsDiff } from './helpers/fixtures.js';

const LAYOUT = new URL('../../../shared/data/detection/ssdlite-mobilenetv2-coco-layout.md', import.meta.url).pathname;
const skip = existsSync(LAYOUT) ? false : `${LAYOUT} is absent (the shared reference data is not on this machine)`;

const ssdlite = (resolution: number, numClasses = 90) => buildModel(archConfig('ssdlite', { resolution, numClasses })) as Graph<SsdliteConfig>;
const outShape = (g: Graph, name: string) => g.nodes.find((n) => n.output === g.outputs.find((o) => o.name === name)!.value)!.shape;

test('ssdlite 90 classes @ 300: 4,500,543 trainable parameters and 749,503,856 MACs, per part as the TF layout', () => {
  const s = summarize(ssdlite(300));
  assert.deepEqual(s.totals, { params: 4_500_543, macs: 749_503_856 });
  const part = (prefix: string) => s.rows.filter((r) => r.layer.startsWith(prefix)).reduce((a, r) => ({ params: a.params + r.params, macs: a.macs + r.macs }), { params: 0, macs: 0 });
  // The layout file's size table: weights + BN γ, β (half its 4×C) + head biases.
  assert.deepEqual(part('features.'), { params: 2_189_760 + 68_224 / 2, macs: 563_125_744 });
  assert.deepEqual(part('extra.'), { params: 652_352 + 9_216 / 2, macs: 38_550_976 });
  assert.deepEqual(part('head.'), { params: 1_604_544 + 24_064 / 2 + 3_135, macs: 147_827_136 });
});

test('ssdlite summary notes: per-part totals and the paper (Tables 5 and 6) at its own configuration, 80 classes @ 320', () => {
  const s = summarize(ssdlite(320, 80));
  assert.deepEqual(s.totals, { params: 4_337_013, macs: 788_830_144 });
  const notes = s.notes.join('\n');
  assert.match(notes, /backbone \(features\.\*\) +2\.22M params +0\.611B MAdds/);
  assert.match(notes, /Table 5.*2\.1M params, 0\.35B MAdds; here 2\.11M, 0\.178B/);
  assert.match(notes, /Table 6.*4\.3M params, 0\.8B MAdds; here 4\.34M, 0\.789B/);
  assert.match(notes, /this is the paper's configuration/);
  assert.match(summarize(ssdlite(300)).notes.join('\n'), /the paper's numbers are for alpha 1, 80 classes at 320x320/);
  assert.deepEqual(summarize(buildModel(archConfig('imagenet', {}))).notes, []);
});

test('ssdlite outputs: boxes [1917, 4] and logits [1917, C+1] at 300, 2034 anchors at 320, feature maps as the anchor generator', () => {
  for (const [res, anchors] of [[300, 1917], [320, 2034]] as const) {
    const g = ssdlite(res, 1);
    assert.deepEqual(outShape(g, 'boxes'), [anchors, 4]);
    assert.deepEqual(outShape(g, 'logits'), [anchors, 2]);
    assert.deepEqual(featureMapSizes(g), ssdliteFeatureMapSizes(res));
    assert.equal(ssdAnchors({ height: res, width: res }).center.length, anchors * 4);
  }
  assert.deepEqual(featureMapSizes(ssdlite(300)), [19, 10, 5, 3, 2, 1]);
});

test('every scope of the TF layout table: same parameter count (BN as 4×C) and MACs at the name the TFLite import gives it', { skip }, () => {
  const g = ssdlite(300);
  const byName = new Map(g.nodes.map((n) => [n.name, n]));
  const rows = readFileSync(LAYOUT, 'utf8').split('\n').filter((l) => /^\| `(FeatureExtractor|BoxPredictor)/.test(l));
  assert.equal(rows.length, 52 + 12 + 24, 'rows of the layout table');
  let params = 0;
  for (const row of rows) {
    const cells = row.split('|').map((c) => c.trim());
    const scope = cells[1]!.replace(/`/g, '');
    const { conv, bn } = ssdliteNamesOf(scope) ?? assert.fail(`${scope}: no name`);
    const c = byName.get(conv);
    assert.ok(c?.op === 'conv', `${scope}: no conv ${conv}`);
    const n = nodeParamCount(c) + (bn ? 2 * nodeParamCount(byName.get(bn)!) : 0);
    assert.equal(n, Number(cells[5]), `${scope} (${conv}): params`);
    assert.equal((nodeMacs(c) / 1e6).toFixed(2), cells[6], `${scope} (${conv}): MMACs`);
    assert.equal(`${c.shape[1]}x${c.shape[2]}`, cells[3], `${scope}: output size`);
    params += n;
  }
  assert.equal(params, 4_551_295, 'the layout total with BN unfolded');
});

test('ONNX export of an SSDLite (α 0.35 @ 160, 2 classes) on ONNX Runtime: boxes and logits within 1e-4 relative of the float64 reference', async (t) => {
  const g = buildModel(archConfig('ssdlite', { alpha: 0.35, resolution: 160, numClasses: 2 }));
  const w = initWeights(g, 3);
  // Non-trivial BN statistics and head biases, so folding and biases matter.
  const rng = new Rng(4);
  for (const [name, v] of w) {
    if (name.endsWith('running_mean') || /\.1\.bias$/.test(name)) v.forEach((_, i, a) => (a[i] = 0.2 * rng.normal()));
    if (name.endsWith('running_var')) v.forEach((_, i, a) => (a[i] = 0.5 + rng.uniform()));
  }
  const batch = 2;
  const input = Float32Array.from({ length: batch * 3 * 160 * 160 }, () => rng.uniform() * 2 - 1);
  const ref = referenceOutputs(g, w, input, batch);
  const session = await ort.InferenceSession.create(exportOnnx(g, w));
  assert.deepEqual(session.outputNames, ['boxes', 'logits']);
  const out = await session.run({ input: new ort.Tensor('float32', input, [batch, 3, 160, 160]) });
  for (const [name, r] of ref) {
    assert.deepEqual(out[name]!.dims, [batch, ...outShape(g, name)]);
    const d = maxAbsDiff(out[name]!.data as Float32Array, r);
    t.diagnostic(`${name}: max |diff| ${d.toExponential(2)}, max |value| ${maxAbs(r).toFixed(3)}`);
    assert.ok(maxAbs(r) > 0.1, `${name}: outputs are not all near zero`);
    assert.ok(d <= 1e-4 * maxAbs(r), `${name}: ${d}`);
  }
  await session.release();
});
