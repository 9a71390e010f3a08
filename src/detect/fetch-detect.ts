/**
 * `mnv2 data fetch-detect voc2007 | coco2017-val | penn-fudan`: the official archives through the project's
 * downloader (src/data/fetch.ts: resumable, md5-checked where an md5 is published, redirects, timeouts), unpacked
 * into the destination folder so that src/detect/dataset.ts reads them:
 * - voc2007: VOCdevkit/VOC2007 (trainval + test tars; md5s as torchvision/datasets/voc.py has them) →
 *   loadVocDetection(`<dir>/VOCdevkit/VOC2007`, 'trainval' | 'test');
 * - coco2017-val: val2017/ + annotations/ (no md5 is published for the COCO zips: none checked) →
 *   loadCocoDetection(`<dir>/annotations/instances_val2017.json`, `<dir>/val2017`);
 * - penn-fudan: PennFudanPed/ (no md5 published: none checked; its boxes are in the masks and text annotations,
 *   which this project does not read yet).
 * Archives are unpacked into a temporary folder first and moved into place only when every expected path is
 * there. tar via node-tar (paths leaving the folder are refused by it), zip via fflate's streaming Unzip
 * (absolute and `..` paths refused, total size bounded).
 */
import { createReadStream, existsSync, openSync, writeSync, closeSync, mkdirSync, readdirSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { downloadFile, type DownloadOptions } from '../data/fetch.js';

export type DetectionDatasetName = 'voc2007' | 'coco2017-val' | 'penn-fudan';

export interface DetectionSource {
  /** Official URLs with the md5 where one is published. */
  files: readonly { url: string; md5: string | null }[];
  /** Paths (relative to the destination) that unpacking must produce. */
  expect: readonly string[];
  /** The most bytes the archives may unpack to (a bound for a decompression bomb). */
  maxBytes: number;
}

const GB = 1024 ** 3;

export const DETECTION_SOURCES: Readonly<Record<DetectionDatasetName, DetectionSource>> = {
  voc2007: {
    files: [
      { url: 'http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar', md5: 'c52e279531787c972589f7e41ab4ae64' },
      { url: 'http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar', md5: 'b6e924de25625d8de591ea690078ad9f' },
    ],
    expect: ['VOCdevkit/VOC2007/Annotations', 'VOCdevkit/VOC2007/JPEGImages', 'VOCdevkit/VOC2007/ImageSets/Main/trainval.txt', 'VOCdevkit/VOC2007/ImageSets/Main/test.txt'],
    maxBytes: 2 * GB,
  },
  'coco2017-val': {
    files: [
      { url: 'http://images.cocodataset.org/zips/val2017.zip', md5: null },
      { url: 'http://images.cocodataset.org/annotations/annotations_trainval2017.zip', md5: null },
    ],
    expect: ['val2017', 'annotations/instances_val2017.json'],
    maxBytes: 4 * GB,
  },
  'penn-fudan': {
    files: [{ url: 'https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip', md5: null }],
    expect: ['PennFudanPed/PNGImages', 'PennFudanPed/PedMasks', 'PennFudanPed/Annotation'],
    maxBytes: 1 * GB,
  },
};

export interface FetchDetectOptions extends DownloadOptions {
  /** Download every file from this base URL + its file name instead of the official URL (tests). */
  baseUrl?: string;
  /** Replaces the source (tests). */
  source?: DetectionSource;
}

export interface FetchDetectResult {
  dir: string;
  downloaded: string[];
  present: string[];
  /** Top-level entries moved into dir by this run (empty when everything was already unpacked). */
  unpacked: string[];
}

/** The destination of an archive member inside root; throws for absolute paths or ones leaving root. */
function inside(root: string, name: string, archive: string): string {
  const p = resolve(root, name);
  const rel = relative(root, p);
  if (isAbsolute(name) || rel.startsWith('..') || isAbsolute(rel)) throw new Error(`${archive}: unsafe path '${name}' in archive`);
  return p;
}

/** Streams a zip into root (stored and deflated entries), failing past maxBytes in total. */
async function unzipInto(archive: string, root: string, maxBytes: number): Promise<void> {
  let total = 0;
  let failure: Error | null = null;
  // The archive libraries load when used: the CLI reads DETECTION_SOURCES at every start-up.
  const { Unzip, UnzipInflate, UnzipPassThrough } = await import('fflate');
  const uz = new Unzip((file) => {
    if (failure) return;
    try {
      const target = inside(root, file.name, archive);
      if (file.name.endsWith('/')) {
        mkdirSync(target, { recursive: true });
        return;
      }
      mkdirSync(dirname(target), { recursive: true });
      const fd = openSync(target, 'w');
      file.ondata = (err, data, final) => {
        if (failure) return;
        try {
          if (err) throw new Error(`${archive}: ${file.name}: ${err.message}`);
          total += data.length;
          if (total > maxBytes) throw new Error(`${archive}: unpacks to more than ${maxBytes} bytes`);
          writeSync(fd, data);
          if (final) closeSync(fd);
        } catch (e) {
          failure = e as Error;
          closeSync(fd);
        }
      };
      file.start();
    } catch (e) {
      failure = e as Error;
    }
  });
  uz.register(UnzipInflate);
  uz.register(UnzipPassThrough);
  for await (const chunk of createReadStream(archive, { highWaterMark: 1 << 20 })) {
    uz.push(chunk as Buffer, false);
    if (failure) break;
  }
  if (!failure) uz.push(new Uint8Array(0), true);
  if (failure) throw failure;
}

async function untarInto(archive: string, root: string, maxBytes: number): Promise<void> {
  let total = 0;
  let failure: Error | null = null;
  const tar = await import('tar');
  // A throw inside node-tar's filter escapes its stream; record the first problem, extract nothing more, rethrow.
  await tar.x({
    file: archive,
    cwd: root,
    strict: true,
    filter: (path, entry) => {
      if (failure) return false;
      try {
        total += 'size' in entry ? (entry.size ?? 0) : 0;
        if (total > maxBytes) throw new Error(`${archive}: unpacks to more than ${maxBytes} bytes`);
        inside(root, path, archive);
        return true;
      } catch (e) {
        failure = e as Error;
        return false;
      }
    },
  });
  if (failure) throw failure;
}

/** Downloads and unpacks one of DETECTION_SOURCES into destDir. */
export async function fetchDetectionDataset(name: DetectionDatasetName, destDir: string, opts: FetchDetectOptions = {}): Promise<FetchDetectResult> {
  const source = opts.source ?? DETECTION_SOURCES[name];
  if (!source) throw new Error(`unknown dataset '${String(name)}' (known: ${Object.keys(DETECTION_SOURCES).join(', ')})`);
  const dir = resolve(destDir);
  await mkdir(dir, { recursive: true });
  const result: FetchDetectResult = { dir, downloaded: [], present: [], unpacked: [] };
  const archives: string[] = [];
  for (const f of source.files) {
    const file = basename(new URL(f.url).pathname);
    const url = opts.baseUrl ? new URL(file, opts.baseUrl.endsWith('/') ? opts.baseUrl : `${opts.baseUrl}/`) : new URL(f.url);
    const dest = join(dir, file);
    const r = await downloadFile(url, dest, f.md5, opts);
    (r === 'downloaded' ? result.downloaded : result.present).push(dest);
    archives.push(dest);
  }
  if (result.downloaded.length === 0 && source.expect.every((p) => existsSync(join(dir, p)))) return result;
  const tmp = join(dir, `.unpack-${process.pid}-${Date.now()}`);
  await mkdir(tmp);
  try {
    for (const a of archives) {
      if (a.endsWith('.zip')) await unzipInto(a, tmp, source.maxBytes);
      else await untarInto(a, tmp, source.maxBytes);
    }
    const missing = source.expect.filter((p) => !existsSync(join(tmp, p)));
    if (missing.length) throw new Error(`${archives.join(', ')}: unexpected archive content: missing ${missing.join(', ')}`);
    for (const top of readdirSync(tmp)) {
      await rm(join(dir, top), { recursive: true, force: true });
      await rename(join(tmp, top), join(dir, top));
      result.unpacked.push(join(dir, top));
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return result;
}
