/**
 * Real ImageNet weights in torchvision layout (../shared/data, when present) through `mnv2 predict --preset
 * torchvision`: the 14 real photos land in their accepted classes on both engines, printed with class names;
 * the same weights saved by torch.save as a .pth load to the identical state dict.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { IMAGENET_LABELS } from '../src/data/labels.js';
import { loadWeights } from '../src/io/weights.js';
import { assertAllAccepted, CLI, photos, predictPhotos, REPO, sharedSkip, SHARED_IMAGENET } from './helpers/imagenet-photos.js';

const WEIGHTS = 'weights/mobilenet_v2_imagenet_torchvision_qat_dequantized.safetensors';
const skip = sharedSkip(WEIGHTS);
const weights = path.join(SHARED_IMAGENET, WEIGHTS);

for (const engine of ['native', 'ort'] as const) {
  test(`torchvision-layout ImageNet weights: all 14 photos in their accepted classes (${engine})`, { skip }, () => {
    const probs = assertAllAccepted(predictPhotos(['--weights', weights, '--preset', 'torchvision', '--engine', engine]), IMAGENET_LABELS);
    console.error(`${engine}: top-1 probabilities ${probs.map((p) => p.toFixed(3)).join(' ')}`);
  });
}

test('the text output names the classes', { skip }, () => {
  const first = photos()[0]!;
  const out = execFileSync(process.execPath, [CLI, 'predict', '--weights', weights, '--preset', 'torchvision', '--top', '1', first.file], { encoding: 'utf8' });
  // After the line naming the answering model and its classes (mnv2 predict's first line).
  assert.match(out, new RegExp(`^model: ${weights.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} on (native|ort), 1000 classes: tench.*\\n${first.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n +\\d+\\.\\d\\d%  ${first.label_name}`));
});

const torch = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
test('the same weights as a torch.save .pth load to the identical state dict', { skip: skip || (torch ? false : 'python3-torch is not installed') }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mnv2-tv-'));
  try {
    const pth = path.join(dir, 'mobilenet_v2.pth');
    const py = 'import sys, torch, torchvision\nfrom safetensors_io import read_safetensors\n' +
      'm = torchvision.models.mobilenet_v2(); m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in read_safetensors(sys.argv[1])[0].items()}); torch.save(m.state_dict(), sys.argv[2])';
    execFileSync('/usr/bin/python3', ['-c', py, weights, pth], { cwd: path.join(REPO, 'tools'), stdio: 'pipe' });
    const a = loadWeights(weights);
    const b = loadWeights(pth);
    assert.deepEqual(b.graph.config, a.graph.config);
    assert.deepEqual([...b.weights.keys()].sort(), [...a.weights.keys()].sort());
    for (const [k, v] of a.weights) assert.deepEqual(b.weights.get(k), v, k);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
