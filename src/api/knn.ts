/**
 * Few-shot learning on embeddings, as tfjs-models' knn-classifier: add a few labelled examples (the `embed`
 * vectors of a model), then label new ones by their k nearest neighbours (cosine similarity, on unit-normalized
 * vectors). Saved as JSON with the model that made the embeddings, so they are not mixed with another's.
 */
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-write.js';
import { fail } from '../util/errors.js';

export interface KnnPrediction {
  label: string;
  /** Fraction of the k neighbours per class (tfjs' `confidences`). */
  confidences: Record<string, number>;
  /** The neighbours, most similar first: class and cosine similarity. */
  neighbours: { label: string; similarity: number }[];
}

export interface KnnJSON {
  format: 'mnv2-knn';
  version: 1;
  /** What made the embeddings (e.g. the weights file); examples from another model are refused. */
  model?: string;
  dim: number;
  examples: Record<string, number[][]>;
}

export class KnnClassifier {
  private readonly examples = new Map<string, Float32Array[]>();
  private dim = 0;

  /** `model` names what makes the embeddings; `fromJSON` restores it. */
  constructor(readonly model?: string) {}

  /** Add one example of class `label` (the vector is copied and normalized). */
  addExample(embedding: Float32Array, label: string): void {
    if (!label) throw new Error('knn: an example needs a non-empty label');
    this.checkDim(embedding, 'addExample');
    if (!this.examples.has(label)) this.examples.set(label, []);
    this.examples.get(label)!.push(unit(embedding));
  }

  /** Examples per class. */
  exampleCount(): Record<string, number> {
    return Object.fromEntries([...this.examples].map(([l, v]) => [l, v.length]));
  }

  clearClass(label: string): void {
    this.examples.delete(label);
    if (this.examples.size === 0) this.dim = 0;
  }

  /** The majority class of the k most similar examples (ties: the class of the nearer neighbour). */
  predict(embedding: Float32Array, k = 3): KnnPrediction {
    if (!Number.isInteger(k) || k < 1) throw new Error(`knn: k must be a positive integer, got ${k}`);
    if (this.examples.size === 0) throw new Error('knn: no examples added yet');
    this.checkDim(embedding, 'predict');
    const q = unit(embedding);
    const all = [...this.examples].flatMap(([label, vs]) => vs.map((v) => ({ label, similarity: dot(q, v) })));
    const neighbours = all.sort((a, b) => b.similarity - a.similarity).slice(0, k);
    const confidences: Record<string, number> = Object.fromEntries([...this.examples.keys()].map((l) => [l, 0]));
    for (const n of neighbours) confidences[n.label]! += 1 / neighbours.length;
    // The first neighbour of the most frequent class wins a tie, as it is nearer.
    const label = neighbours.reduce((best, n) => (confidences[n.label]! > confidences[best]! ? n.label : best), neighbours[0]!.label);
    return { label, confidences, neighbours };
  }

  toJSON(): KnnJSON {
    const examples = Object.fromEntries([...this.examples].map(([l, vs]) => [l, vs.map((v) => Array.from(v))]));
    return { format: 'mnv2-knn', version: 1, ...(this.model !== undefined && { model: this.model }), dim: this.dim, examples };
  }

  static fromJSON(json: unknown, source = 'knn JSON'): KnnClassifier {
    const j = json as Partial<KnnJSON> | null;
    if (!j || j.format !== 'mnv2-knn' || j.version !== 1 || typeof j.examples !== 'object' || j.examples === null) {
      fail(source, `not a KNN classifier file (format mnv2-knn, version 1)`);
    }
    const knn = new KnnClassifier(j.model);
    for (const [label, vs] of Object.entries(j.examples)) {
      if (!Array.isArray(vs)) fail(source, `examples of '${label}' are not a list of vectors`);
      for (const v of vs) {
        if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) fail(source, `an example of '${label}' is not a list of numbers`);
        try {
          knn.addExample(Float32Array.from(v), label);
        } catch (e) {
          fail(source, `${(e as Error).message}`);
        }
      }
    }
    return knn;
  }

  /** Write the classifier as JSON (atomically). */
  save(path: string): void {
    writeFileAtomic(path, JSON.stringify(this.toJSON()));
  }

  static load(path: string): KnnClassifier {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      fail(path, `cannot read the KNN classifier (${(e as Error).message})`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      fail(path, `not JSON (${(e as Error).message})`);
    }
    return KnnClassifier.fromJSON(json, path);
  }

  private checkDim(v: Float32Array, fn: string): void {
    if (v.length === 0) throw new Error(`knn.${fn}: empty embedding`);
    if (this.dim && v.length !== this.dim) throw new Error(`knn.${fn}: embedding has ${v.length} values, the examples have ${this.dim}`);
    this.dim = v.length;
  }
}

function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

function unit(v: Float32Array): Float32Array {
  const n = Math.sqrt(dot(v, v));
  if (!Number.isFinite(n)) throw new Error('knn: embedding has non-finite values');
  return n > 0 ? v.map((x) => x / n) : Float32Array.from(v);
}
