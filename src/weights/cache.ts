/**
 * The per-user weights cache: catalogue files downloaded once (resumable, checksum-verified, with the dataset
 * downloader), then imported once into a model file with its config and preprocessing as metadata, so
 * `--weights NAME` works offline from then on.
 *
 * Layout: `<cache>/downloads/<published file name>` and `<cache>/models/<name with / as -->.safetensors`, where
 * <cache> is $MNV2_CACHE, else $XDG_CACHE_HOME/mnv2, else ~/.cache/mnv2.
 */
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { downloadFile, hashFile, type DownloadOptions } from '../data/fetch.js';
import { importKerasH5 } from '../io/keras.js';
import { loadWeights, saveWeights } from '../io/weights.js';
import { encodeModelInfo } from '../io/metadata.js';
import { WEIGHTS_CATALOG, type WeightsEntry } from './catalog.js';
import { fail, InputError } from '../util/errors.js';

export interface WeightsOptions extends DownloadOptions {
  /** Default: weightsCacheDir(). */
  cacheDir?: string;
  /** Download from this folder URL instead of the official one (mirrors; tests use a 127.0.0.1 server). */
  baseUrl?: string;
  /** Never download: use the cache or fail. */
  offline?: boolean;
  /** Replaces the catalogue (tests). */
  catalog?: readonly WeightsEntry[];
}

export function weightsCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MNV2_CACHE) return path.resolve(env.MNV2_CACHE);
  if (env.XDG_CACHE_HOME) return path.join(env.XDG_CACHE_HOME, 'mnv2');
  return path.join(homedir(), '.cache', 'mnv2');
}

function entry(name: string, opts: WeightsOptions): WeightsEntry {
  const catalog = opts.catalog ?? WEIGHTS_CATALOG;
  const e = catalog.find((x) => x.name === name);
  if (!e) throw new Error(`unknown weights '${name}': not a file and not one of the ${catalog.length} catalogue names (mnv2 weights list)`);
  return e;
}

const fileName = (e: WeightsEntry) => path.posix.basename(new URL(e.url).pathname);

/** Where the downloaded file of `name` is (or goes) in the cache. */
export function downloadPath(name: string, opts: WeightsOptions = {}): string {
  return path.join(opts.cacheDir ?? weightsCacheDir(), 'downloads', fileName(entry(name, opts)));
}

/** Downloads `name` into the cache (or finds it there, verified) and returns its path. */
export async function fetchWeights(name: string, opts: WeightsOptions = {}): Promise<{ entry: WeightsEntry; file: string; status: 'downloaded' | 'present' }> {
  const e = entry(name, opts);
  const file = downloadPath(name, opts);
  const checksum = e.sha256 ? { algo: 'sha256' as const, hex: e.sha256 } : null;
  if (opts.offline) {
    if (!existsSync(file)) throw new Error(`${name} is not in the cache (${file}) and downloads are off; fetch it with: mnv2 weights fetch ${name}`);
    if (checksum && !(await hashFile(file, 'sha256')).startsWith(checksum.hex)) fail(file, `sha256 does not start with ${checksum.hex}; delete it and fetch again`);
    return { entry: e, file, status: 'present' };
  }
  await mkdir(path.dirname(file), { recursive: true });
  const url = opts.baseUrl ? new URL(fileName(e), opts.baseUrl.endsWith('/') ? opts.baseUrl : `${opts.baseUrl}/`) : e.url;
  const status = await downloadFile(url, file, checksum, opts);
  const problem = formatProblem(file, e);
  if (problem) {
    await rm(file, { force: true });
    throw new Error(`${name}: the download from ${url} is ${problem}; it was deleted`);
  }
  return { entry: e, file, status };
}

/** Why the file is not what the entry says (checked by its first bytes), or undefined. */
function formatProblem(file: string, e: WeightsEntry): string | undefined {
  const head = new Uint8Array(8);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, head, 0, 8, 0);
  } finally {
    closeSync(fd);
  }
  const text = String.fromCharCode(...head);
  if (e.format === 'keras-h5' && text !== '\x89HDF\r\n\x1a\n') return 'not an HDF5 file';
  if (e.format === 'pth' && !text.startsWith('PK\x03\x04') && !text.startsWith('\x80\x02\x8a\x0a')) return 'not a PyTorch .pth file';
  if (e.format === 'tf-od-tar' && !text.startsWith('\x1f\x8b')) return 'not a gzip-compressed tar file';
  return undefined;
}

/**
 * A model file for catalogue weights `name`: the cached import if there is one (no network), else the download
 * imported (via the .pth reader, the Keras importer, or a model zoo tarball's frozen graph) into the cache.
 */
export async function resolveWeights(name: string, opts: WeightsOptions = {}): Promise<string> {
  const e = entry(name, opts);
  const out = path.join(opts.cacheDir ?? weightsCacheDir(), 'models', `${e.name.replace(/\//g, '--')}.safetensors`);
  if (existsSync(out)) return out;
  if (e.format === 'tf-od-tar') {
    const { file } = await fetchWeights(name, opts);
    await mkdir(path.dirname(out), { recursive: true });
    await importFromTarball(file, e.member!, out, name);
    return out;
  }
  if (e.family !== 'mobilenet_v2') {
    throw new Error(`${name}: ${e.family} weights can be fetched (mnv2 weights fetch ${name}) but not run yet: this build has no ${e.family} model`);
  }
  if (!e.top) {
    throw new Error(`${name} has no classifier (a no-top feature extractor): fetch it (mnv2 weights fetch ${name}) and add a head with mnv2 import keras FILE --classes N --out W.safetensors, or use it as one: load({ weights: '${name}', includeTop: false })`);
  }
  const { file } = await fetchWeights(name, opts);
  const m = e.format === 'pth' ? loadWeights(file) : await importKerasH5(file, { alpha: e.alpha, resolution: e.resolution });
  await mkdir(path.dirname(out), { recursive: true });
  const labels = m.graph.config.numClasses === 1000 ? { labels: 'imagenet' } : {};
  saveWeights(out, m.graph, m.weights, new Map(), encodeModelInfo({ config: m.graph.config, preprocess: e.preset, source: fileName(e), ...labels }));
  return out;
}

/**
 * Extracts `member` of a .tar.gz next to `out` and imports that frozen graph into `out`; the extracted file is
 * removed, and import errors name the archive and member.
 */
async function importFromTarball(archive: string, member: string, out: string, name: string): Promise<void> {
  const [{ extract }, { importTfGraphSsdliteTo }] = await Promise.all([import('tar'), import('../io/tf-graph-ssdlite.js')]); // only this format needs them
  const dir = await mkdtemp(path.join(path.dirname(out), '.extract-'));
  const source = `${archive} (${member})`;
  try {
    const wanted = (p: string) => p.replace(/^\.\//, '') === member;
    await extract({ file: archive, cwd: dir, strict: true, filter: wanted }).catch((e: unknown) => fail(archive, `not a readable .tar.gz (${(e as Error).message}); delete it and fetch ${name} again`));
    const pb = path.join(dir, member);
    if (!existsSync(pb)) fail(archive, `has no ${member}; delete it and fetch ${name} again`);
    try {
      importTfGraphSsdliteTo(pb, out, `${path.basename(archive)}:${member}`);
    } catch (e) {
      if (e instanceof InputError && e.source === pb) fail(source, e.problem);
      throw e;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
