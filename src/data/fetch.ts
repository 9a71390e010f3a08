/**
 * Downloads the official dataset (and weights) files with Node's http/https: resumable (.part file + HTTP Range),
 * checksum-verified (md5 or sha256, or a sha256 prefix as torchvision's file names carry),
 * redirects followed (max 5), idle timeouts, progress callbacks, atomic final rename, and a minimal validated
 * ustar reader to unpack the CIFAR-10 tar.gz.
 *
 * Layout: Fashion-MNIST's four *-ubyte.gz files go directly into destDir (so loadFashionMnist(destDir) works);
 * CIFAR-10's archive goes into destDir and is unpacked to destDir/cifar-10-batches-bin (loadCifar10(destDir)).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, open, rename, rm, stat, unlink } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { isAbsolute, join, normalize, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { CIFAR_BATCH_DIR, CIFAR_BATCH_RECORDS, CIFAR_RECORD_BYTES, CIFAR_TEST_FILES, CIFAR_TRAIN_FILES } from './cifar.js';

export type DatasetName = 'cifar10' | 'fashion-mnist';

export interface RemoteFile {
  /** File name, relative to the base URL and the destination folder. */
  name: string;
  /** Expected md5 (hex). */
  md5: string;
}

export interface DatasetSource {
  baseUrl: string;
  files: readonly RemoteFile[];
  /**
   * For archives: the file to unpack, the folder (inside the archive) that must come out of it, and the most bytes
   * the archive may inflate to (a bound for a decompression bomb).
   */
  extract?: { archive: string; dir: string; expect: readonly string[]; maxBytes: number };
}

export const DATASET_SOURCES: Readonly<Record<DatasetName, DatasetSource>> = {
  'fashion-mnist': {
    baseUrl: 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',
    files: [
      { name: 'train-images-idx3-ubyte.gz', md5: '8d4fb7e6c68d591d4c3dfef9ec88bf0d' },
      { name: 'train-labels-idx1-ubyte.gz', md5: '25c81989df183df01b3e8a0aad5dffbe' },
      { name: 't10k-images-idx3-ubyte.gz', md5: 'bef4ecab320f06d8554ea6380940ec79' },
      { name: 't10k-labels-idx1-ubyte.gz', md5: 'bb300cfdad3c16e7a12a480ee83cd310' },
    ],
  },
  cifar10: {
    baseUrl: 'https://www.cs.toronto.edu/~kriz/',
    files: [{ name: 'cifar-10-binary.tar.gz', md5: 'c32a1d4ab5d03f1284b67883e8d87530' }],
    extract: {
      archive: 'cifar-10-binary.tar.gz', dir: CIFAR_BATCH_DIR, expect: [...CIFAR_TRAIN_FILES, ...CIFAR_TEST_FILES],
      // Six batches of 10,000 records, plus 1 MB for tar headers, batches.meta.txt and readme.html.
      maxBytes: (CIFAR_TRAIN_FILES.length + CIFAR_TEST_FILES.length) * CIFAR_BATCH_RECORDS * CIFAR_RECORD_BYTES + (1 << 20),
    },
  },
};

export interface FetchProgress {
  phase: 'download' | 'verify' | 'extract';
  file: string;
  /** Bytes done (for 'extract': compressed bytes read). */
  done: number;
  /** Total bytes, or null when the server does not say. */
  total: number | null;
}

export interface DownloadOptions {
  onProgress?: (p: FetchProgress) => void;
  /** Idle timeout in ms: no connection/response/data for this long fails the attempt (default 30000). */
  timeoutMs?: number;
  /** Extra attempts after a failed one (connection lost, timeout, 5xx); each resumes the .part file (default 3). */
  retries?: number;
  /** Delay before the first retry, doubled each time (default 1000 ms). */
  retryDelayMs?: number;
  maxRedirects?: number;
}

export interface FetchOptions extends DownloadOptions {
  /** Replaces the official base URL (tests: a local server). */
  baseUrl?: string;
  /** Replaces the expected files and md5s (tests). */
  files?: readonly RemoteFile[];
}

export interface FetchResult {
  dir: string;
  /** Absolute paths of the dataset files (downloaded or already present). */
  files: string[];
  downloaded: string[];
  skipped: string[];
  /** Folder unpacked from an archive (CIFAR-10). */
  extracted?: string;
}

/** A failed download; `retryable` if another attempt might succeed. */
export class FetchError extends Error {
  constructor(message: string, readonly retryable: boolean, readonly status?: number) {
    super(message);
    this.name = 'FetchError';
  }
}

/**
 * What a download must hash to: md5 or sha256 hex digits, all of them or a prefix of at least 8 (torchvision's
 * `name-<sha256[:8]>.pth`); null where no checksum is published (the caller checks the content instead).
 */
export type Checksum = { algo: 'md5' | 'sha256'; hex: string } | null;

function checksumOf(expected: string | Checksum): Checksum {
  const c = typeof expected === 'string' ? { algo: 'md5' as const, hex: expected } : expected;
  if (c && !/^[0-9a-fA-F]{8,}$/.test(c.hex)) throw new Error(`bad ${c.algo} checksum '${c.hex}' (8 or more hex digits)`);
  return c && { algo: c.algo, hex: c.hex.toLowerCase() };
}

export async function md5File(path: string, onBytes?: (done: number) => void): Promise<string> {
  return hashFile(path, 'md5', onBytes);
}

export async function hashFile(path: string, algo: 'md5' | 'sha256', onBytes?: (done: number) => void): Promise<string> {
  const h = createHash(algo);
  let done = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    h.update(chunk as Buffer);
    done += (chunk as Buffer).length;
    onBytes?.(done);
  }
  return h.digest('hex');
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return -1;
  }
}

interface Response {
  res: http.IncomingMessage;
  req: http.ClientRequest;
  url: URL;
  timedOut: () => boolean;
}

/** GET with an idle timeout and up to maxRedirects redirects. */
function get(url: URL, headers: Record<string, string>, timeoutMs: number, maxRedirects: number): Promise<Response> {
  return new Promise((resolvePromise, reject) => {
    const lib = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : null;
    if (!lib) {
      reject(new FetchError(`unsupported URL protocol ${url.protocol} in ${url.href}`, false));
      return;
    }
    let timedOut = false;
    const req = lib.get(url, { headers: { 'accept-encoding': 'identity', 'user-agent': 'mnv2-fetch', ...headers } }, (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400 && res.headers.location) {
        res.resume();
        req.setTimeout(0);
        if (maxRedirects <= 0) {
          reject(new FetchError(`too many redirects fetching ${url.href}`, false, status));
          return;
        }
        let next: URL;
        try {
          next = new URL(res.headers.location, url);
        } catch {
          reject(new FetchError(`bad redirect location '${res.headers.location}' from ${url.href}`, false, status));
          return;
        }
        get(next, headers, timeoutMs, maxRedirects - 1).then(resolvePromise, reject);
        return;
      }
      resolvePromise({ res, req, url, timedOut: () => timedOut });
    });
    req.setTimeout(timeoutMs, () => {
      timedOut = true;
      req.destroy(new FetchError(`timeout: no data from ${url.href} for ${timeoutMs} ms`, true));
    });
    req.on('error', (e) => {
      if (e instanceof FetchError) reject(e);
      else reject(new FetchError(`${url.href}: ${e.message}`, true));
    });
  });
}

/** One download attempt: appends to `part` from its current size (Range), or restarts it. */
async function downloadOnce(url: URL, part: string, label: string, opts: Required<Omit<DownloadOptions, 'onProgress'>> & DownloadOptions): Promise<void> {
  let offset = Math.max(0, await fileSize(part));
  const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
  const { res, req, url: finalUrl, timedOut } = await get(url, headers, opts.timeoutMs, opts.maxRedirects);
  const status = res.statusCode ?? 0;
  let total: number | null = null;
  const len = res.headers['content-length'] !== undefined ? Number(res.headers['content-length']) : null;
  if (status === 206 && offset > 0) {
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers['content-range'] ?? '');
    if (!m || Number(m[1]) !== offset) {
      res.resume();
      await rm(part, { force: true });
      throw new FetchError(`${finalUrl.href}: server resumed at the wrong offset (content-range '${res.headers['content-range']}', wanted ${offset}); restarting`, true, status);
    }
    total = m[3] === '*' ? null : Number(m[3]);
  } else if (status === 200) {
    offset = 0; // the server ignored Range (or none was sent): start over
    total = len;
  } else if (status === 416 && offset > 0) {
    res.resume();
    await rm(part, { force: true });
    throw new FetchError(`${finalUrl.href}: range ${offset}- not satisfiable; restarting from scratch`, true, status);
  } else {
    res.resume();
    req.setTimeout(0);
    const retryable = status >= 500 || status === 408 || status === 429;
    throw new FetchError(`HTTP ${status} ${res.statusMessage ?? ''} for ${finalUrl.href}`.replace(/ +for/, ' for'), retryable, status);
  }
  const expectBody = len;
  let received = 0;
  let done = offset;
  opts.onProgress?.({ phase: 'download', file: label, done, total });
  try {
    await pipeline(
      res,
      async function* (src: AsyncIterable<Buffer>) {
        for await (const chunk of src) {
          received += chunk.length;
          done += chunk.length;
          opts.onProgress?.({ phase: 'download', file: label, done, total });
          yield chunk;
        }
      },
      createWriteStream(part, { flags: offset > 0 ? 'a' : 'w' }),
    );
  } catch (e) {
    if (timedOut()) throw new FetchError(`timeout: no data from ${finalUrl.href} for ${opts.timeoutMs} ms (${done} bytes so far)`, true);
    throw new FetchError(`${finalUrl.href}: connection lost after ${done} bytes (${(e as Error).message})`, true);
  } finally {
    req.setTimeout(0);
  }
  if (expectBody !== null && received !== expectBody) {
    throw new FetchError(`${finalUrl.href}: connection closed after ${received} of ${expectBody} bytes`, true);
  }
  if (!res.complete) throw new FetchError(`${finalUrl.href}: response incomplete after ${done} bytes`, true);
}

/**
 * Downloads `url` to `dest` (via `dest.part`, resumed if present) and checks its checksum (a string: md5); skips the
 * download if `dest` already matches (with no checksum: if it exists). Returns whether it downloaded.
 */
export async function downloadFile(url: string | URL, dest: string, expected: string | Checksum, opts: DownloadOptions = {}): Promise<'downloaded' | 'present'> {
  const o = { timeoutMs: 30000, retries: 3, retryDelayMs: 1000, maxRedirects: 5, ...opts };
  const label = dest.split(sep).pop()!;
  const want = checksumOf(expected);
  const verify = async (file: string): Promise<string | null> => {
    if (!want) return null;
    const size = await fileSize(file);
    const got = await hashFile(file, want.algo, (d) => o.onProgress?.({ phase: 'verify', file: label, done: d, total: size }));
    return got.startsWith(want.hex) ? null : got;
  };
  if (existsSync(dest)) {
    if ((await verify(dest)) === null) return 'present';
    await unlink(dest); // wrong content: download again
  }
  const part = `${dest}.part`;
  const u = typeof url === 'string' ? new URL(url) : url;
  for (let attempt = 0; ; attempt++) {
    try {
      await downloadOnce(u, part, label, o);
      break;
    } catch (e) {
      const fe = e instanceof FetchError ? e : new FetchError((e as Error).message, true);
      if (!fe.retryable || attempt >= o.retries) throw fe;
      await sleep(o.retryDelayMs * 2 ** attempt);
    }
  }
  const got = await verify(part);
  if (got !== null) {
    const size = await fileSize(part);
    await rm(part, { force: true });
    throw new FetchError(`${want!.algo} mismatch for ${label} from ${u.href}: expected ${want!.hex}${want!.hex.length < got.length ? '…' : ''}, got ${got} (${size} bytes); the partial file was deleted, run the fetch again`, false);
  }
  await rename(part, dest);
  return 'downloaded';
}

/** Downloads (and for CIFAR-10 unpacks) a dataset into destDir. */
export async function fetchDataset(name: DatasetName, destDir: string, opts: FetchOptions = {}): Promise<FetchResult> {
  const source = DATASET_SOURCES[name];
  if (!source) throw new Error(`unknown dataset '${String(name)}' (known: ${Object.keys(DATASET_SOURCES).join(', ')})`);
  let base = opts.baseUrl ?? source.baseUrl;
  if (!base.endsWith('/')) base += '/';
  const files = opts.files ?? source.files;
  const dir = resolve(destDir);
  await mkdir(dir, { recursive: true });
  const result: FetchResult = { dir, files: [], downloaded: [], skipped: [] };
  for (const f of files) {
    if (f.name.includes('/') || f.name.includes('\\') || f.name.startsWith('.')) throw new Error(`bad file name '${f.name}'`);
    const dest = join(dir, f.name);
    const r = await downloadFile(new URL(f.name, base), dest, f.md5, opts);
    (r === 'downloaded' ? result.downloaded : result.skipped).push(dest);
    result.files.push(dest);
  }
  const ex = source.extract;
  if (ex) {
    const out = join(dir, ex.dir);
    const archive = join(dir, ex.archive);
    const fresh = result.downloaded.includes(archive);
    if (fresh || !(await checkExtracted(out, ex.expect))) {
      const tmp = join(dir, `.extract-${process.pid}-${Date.now()}`);
      await rm(tmp, { recursive: true, force: true });
      await mkdir(tmp);
      try {
        await extractTarGz(archive, tmp, opts.onProgress, ex.maxBytes);
        const problem = await checkExtracted(join(tmp, ex.dir), ex.expect, true);
        if (problem !== true) throw new Error(`${archive}: unexpected archive content: ${problem}`);
        await rm(out, { recursive: true, force: true });
        await rename(join(tmp, ex.dir), out);
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    }
    result.extracted = out;
  }
  return result;
}

/** True if every expected CIFAR batch is in `dir` with a whole number of records; else false (or the problem). */
async function checkExtracted(dir: string, expect: readonly string[], explain = false): Promise<true | false | string> {
  for (const f of expect) {
    const size = await fileSize(join(dir, f));
    if (size < 0) return explain ? `missing ${f}` : false;
    if (size === 0 || size % CIFAR_RECORD_BYTES !== 0) return explain ? `${f} has ${size} bytes, not a whole number of ${CIFAR_RECORD_BYTES}-byte records` : false;
  }
  return true;
}

/** Reads exact byte counts from an async iterable of chunks. */
class ChunkReader {
  private chunk: Buffer = Buffer.alloc(0);
  private pos = 0;
  private eof = false;
  /** Bytes consumed so far. */
  offset = 0;
  constructor(private it: AsyncIterator<Buffer>) {}

  private async fill(): Promise<boolean> {
    while (this.pos >= this.chunk.length) {
      if (this.eof) return false;
      const r = await this.it.next();
      if (r.done) {
        this.eof = true;
        return false;
      }
      this.chunk = r.value;
      this.pos = 0;
    }
    return true;
  }

  /** Up to `max` bytes (≥ 1), or null at end of stream. The result may alias internal buffers. */
  async some(max: number): Promise<Buffer | null> {
    if (!(await this.fill())) return null;
    const n = Math.min(max, this.chunk.length - this.pos);
    const out = this.chunk.subarray(this.pos, this.pos + n);
    this.pos += n;
    this.offset += n;
    return out;
  }

  /** Exactly n bytes; null if the stream ends before the first byte; throws if it ends in the middle. */
  async exact(n: number, what: string): Promise<Buffer | null> {
    const parts: Buffer[] = [];
    let have = 0;
    while (have < n) {
      const b = await this.some(n - have);
      if (!b) {
        if (have === 0) return null;
        throw new Error(`truncated ${what} at byte ${this.offset}`);
      }
      parts.push(Buffer.from(b));
      have += b.length;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  async skip(n: number, what: string): Promise<void> {
    while (n > 0) {
      const b = await this.some(n);
      if (!b) throw new Error(`truncated ${what} at byte ${this.offset}`);
      n -= b.length;
    }
  }
}

/**
 * The chunks of `src`, failing once they add up to more than `maxBytes`. Iterated by hand: leaving a for-await
 * would destroy the stream first, and pipeline() would report that abort instead of this error.
 */
async function* bounded(src: AsyncIterable<Buffer>, maxBytes: number): AsyncGenerator<Buffer> {
  const it = src[Symbol.asyncIterator]();
  for (let n = 0; ; ) {
    const r = await it.next();
    if (r.done) return;
    n += r.value.length;
    if (n > maxBytes) throw new Error(`inflates to more than ${maxBytes} bytes, more than the dataset holds`);
    yield r.value;
  }
}

function cstr(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return s.subarray(0, z < 0 ? len : z).toString('utf8');
}

function octal(b: Buffer, off: number, len: number, what: string): number {
  if (b[off]! & 0x80) {
    // GNU base-256
    let v = 0;
    for (let i = off + 1; i < off + len; i++) v = v * 256 + b[i]!;
    return v;
  }
  const s = cstr(b, off, len).trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new Error(`bad octal ${what} '${s}'`);
  return parseInt(s, 8);
}

/** The destination path of an archive member; throws for absolute paths or ones leaving the folder. */
function safeTarget(root: string, name: string): string {
  const n = normalize(name.replace(/\\/g, '/'));
  if (isAbsolute(name) || isAbsolute(n) || n.split(/[/\\]/).includes('..')) throw new Error(`unsafe path '${name}' in archive`);
  const p = resolve(root, n);
  if (p !== root && !p.startsWith(root + sep)) throw new Error(`unsafe path '${name}' in archive`);
  return p;
}

/**
 * Extracts a .tar.gz (ustar, with pax 'x' and GNU 'L' long names) into destDir. Regular files and directories
 * only: links and devices are skipped. Validates header checksums and detects truncation. Inflation stops with an
 * error beyond `maxBytes` (default: no limit). Returns the extracted files' paths relative to destDir.
 */
export async function extractTarGz(archive: string, destDir: string, onProgress?: (p: FetchProgress) => void, maxBytes = Infinity): Promise<string[]> {
  const root = resolve(destDir);
  const label = archive.split(sep).pop()!;
  const total = (await stat(archive)).size;
  let read = 0;
  const files: string[] = [];
  try {
    await pipeline(
      createReadStream(archive, { highWaterMark: 1 << 20 }),
      async function* (src: AsyncIterable<Buffer>) {
        for await (const c of src) {
          read += c.length;
          onProgress?.({ phase: 'extract', file: label, done: read, total });
          yield c;
        }
      },
      createGunzip(),
      async function (src: AsyncIterable<Buffer>) {
        const r = new ChunkReader(bounded(src, maxBytes)[Symbol.asyncIterator]());
        let longName: string | null = null;
        let paxPath: string | null = null;
        let paxSize: number | null = null;
        let sawEnd = false;
        for (;;) {
          const hdrOffset = r.offset;
          const h = await r.exact(512, 'tar header');
          if (!h) break; // EOF at a header boundary (no end marker): accepted
          if (h.every((x) => x === 0)) {
            sawEnd = true;
            break;
          }
          let sum = 0;
          for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
          const stored = octal(h, 148, 8, 'checksum');
          if (stored !== sum) throw new Error(`bad tar header checksum at byte ${hdrOffset} (stored ${stored}, computed ${sum}): not a tar file or corrupt`);
          const magic = h.subarray(257, 263).toString('latin1');
          if (magic !== 'ustar\0' && magic !== 'ustar ') throw new Error(`not a ustar header at byte ${hdrOffset} (magic '${magic}')`);
          const type = String.fromCharCode(h[156]!);
          let name = cstr(h, 0, 100);
          const prefix = magic === 'ustar\0' ? cstr(h, 345, 155) : '';
          if (prefix) name = `${prefix}/${name}`;
          let size = octal(h, 124, 12, 'size');
          if (paxSize !== null) size = paxSize;
          if (longName !== null) name = longName;
          if (paxPath !== null) name = paxPath;
          const padded = Math.ceil(size / 512) * 512;
          if (type === 'x' || type === 'g' || type === 'L') {
            if (size > 1 << 20) throw new Error(`oversized ${type} header (${size} bytes) at byte ${hdrOffset}`);
            const body = (await r.exact(padded, 'tar extended header')) ?? Buffer.alloc(0);
            if (body.length < padded) throw new Error(`truncated tar extended header at byte ${r.offset}`);
            const content = body.subarray(0, size);
            if (type === 'L') {
              longName = cstr(content, 0, content.length);
            } else if (type === 'x') {
              const text = content.toString('utf8');
              let i = 0;
              while (i < text.length) {
                const sp = text.indexOf(' ', i);
                const recLen = Number(text.slice(i, sp));
                if (!(sp > i) || !Number.isInteger(recLen) || recLen <= 0) throw new Error(`bad pax record at byte ${hdrOffset}`);
                const rec = text.slice(sp + 1, i + recLen - 1);
                const eq = rec.indexOf('=');
                const k = rec.slice(0, eq);
                const v = rec.slice(eq + 1);
                if (k === 'path') paxPath = v;
                if (k === 'size') paxSize = Number(v);
                i += recLen;
              }
            }
            continue;
          }
          longName = null;
          paxPath = null;
          paxSize = null;
          if (type === '0' || type === '\0' || type === '7') {
            const target = safeTarget(root, name);
            await mkdir(resolve(target, '..'), { recursive: true });
            const fh = await open(target, 'w');
            try {
              let left = size;
              while (left > 0) {
                const b = await r.some(left);
                if (!b) throw new Error(`truncated archive: ${name} ends after ${size - left} of ${size} bytes`);
                await fh.write(b);
                left -= b.length;
              }
            } finally {
              await fh.close();
            }
            await r.skip(padded - size, 'tar padding');
            files.push(name);
          } else {
            if (type === '5') await mkdir(safeTarget(root, name), { recursive: true });
            await r.skip(padded, `tar entry ${name}`); // links, devices, fifos: skipped
          }
        }
        if (!sawEnd && (longName !== null || paxPath !== null)) throw new Error('truncated archive after an extended header');
      },
    );
  } catch (e) {
    throw new Error(`${archive}: ${(e as Error).message}`);
  }
  return files;
}
