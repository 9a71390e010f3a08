/**
 * The 14 real ImageNet photos of ../shared/data/imagenet (see its README), classified through the CLI. Tests use
 * them only where the folder exists and are skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const SHARED_IMAGENET = path.resolve(REPO, '..', 'shared', 'data', 'imagenet');
export const CLI = path.join(REPO, 'dist', 'src', 'cli', 'main.js');

/** false if `files` (relative to SHARED_IMAGENET) are all there, else why the test is skipped. */
export function sharedSkip(...files: string[]): string | false {
  const missing = ['photos/labels.json', ...files].filter((f) => !existsSync(path.join(SHARED_IMAGENET, f)));
  return missing.length ? `${path.join(SHARED_IMAGENET, missing[0]!)} not present (real reference data, not in the repository)` : false;
}

export interface Photo {
  file: string;
  label_name: string;
  /** 0-based ILSVRC-2012 classes counted correct. */
  accept: number[];
}

export function photos(): Photo[] {
  const j = JSON.parse(readFileSync(path.join(SHARED_IMAGENET, 'photos', 'labels.json'), 'utf8')) as { images: Photo[] };
  return j.images.map((p) => ({ ...p, file: path.join(SHARED_IMAGENET, 'photos', p.file) }));
}

interface PredictJson {
  file: string;
  top: { index: number; label: string; prob: number }[];
}

/** `mnv2 predict --json` on every photo; returns the top-5 per photo. */
export function predictPhotos(args: string[]): PredictJson[] {
  const out = execFileSync(process.execPath, [CLI, 'predict', ...args, '--json', ...photos().map((p) => p.file)], { encoding: 'utf8', maxBuffer: 1 << 24 });
  return JSON.parse(out) as PredictJson[];
}

/**
 * Asserts every photo's top-1 is one of its accepted classes (`offset` 1 for TF-slim's background class) and
 * is printed with its class name; returns the top-1 probabilities for the report.
 */
export function assertAllAccepted(results: PredictJson[], labels: readonly string[], offset = 0): number[] {
  const list = photos();
  assert.equal(results.length, list.length);
  const wrong: string[] = [];
  results.forEach((r, i) => {
    const top = r.top[0]!;
    assert.equal(top.label, labels[top.index], 'class names are printed');
    if (!list[i]!.accept.includes(top.index - offset)) wrong.push(`${path.basename(r.file)}: ${top.label} (${(top.prob * 100).toFixed(1)} %), expected ${list[i]!.label_name}`);
  });
  assert.deepEqual(wrong, [], `${wrong.length} of ${list.length} photos outside their accepted classes`);
  return results.map((r) => r.top[0]!.prob);
}
