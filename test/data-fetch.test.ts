import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { loadCifar10 } from '../src/data/cifar.js';
import { DATASET_SOURCES, extractTarGz, fetchDataset, type FetchProgress, type RemoteFile } from '../src/data/fetch.js';
import { loadFashionMnist } from '../src/data/idx.js';
import { Rng } from '../src/util/rng.js';

const tmp = mkdtempSync(join(tmpdir(), 'mnv2-fetch-'));
let dirCount = 0;
const freshDir = () => join(tmp, `d${dirCount++}`);
const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

// ---- fixtures -----------------------------------------------------------------------------------------------
function idx(magic: number, dims: number[], data: Uint8Array): Buffer {
  const h = Buffer.alloc(4 + 4 * dims.length);
  h.writeUInt32BE(magic, 0);
  dims.forEach((d, i) => h.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([h, data]);
}
const rng = new Rng(7);
const rand = (n: number) => Uint8Array.from({ length: n }, () => rng.int(256));
const fm = new Map<string, Buffer>();
for (const [p, n] of [['train', 50], ['t10k', 20]] as const) {
  fm.set(`${p}-images-idx3-ubyte.gz`, gzipSync(idx(0x803, [n, 28, 28], rand(n * 784))));
  fm.set(`${p}-labels-idx1-ubyte.gz`, gzipSync(idx(0x801, [n], Uint8Array.from({ length: n }, (_, i) => i % 10))));
}
const fmFiles: RemoteFile[] = [...fm].map(([name, data]) => ({ name, md5: md5(data) }));

function tarHeader(name: string, size: number, type = '0'): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write('0000644\0', 100, 'latin1');
  h.write('0001750\0', 108, 'latin1');
  h.write('0001750\0', 116, 'latin1');
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  h.write('14000000000\0', 136, 'latin1');
  h.fill(0x20, 148, 156);
  h.write(type, 156, 'latin1');
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return h;
}
function tar(entries: [string, Uint8Array | null][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, data] of entries) {
    parts.push(tarHeader(name, data ? data.length : 0, data ? '0' : '5'));
    if (data) parts.push(Buffer.from(data), Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}
function cifarBatch(labels: number[]): Uint8Array {
  const b = rand(labels.length * 3073);
  labels.forEach((l, i) => (b[i * 3073] = l));
  return b;
}
const cifarBins: [string, Uint8Array][] = [
  ...[1, 2, 3, 4, 5].map((k) => [`data_batch_${k}.bin`, cifarBatch([k, (k + 3) % 10])] as [string, Uint8Array]),
  ['test_batch.bin', cifarBatch([9, 0, 5])],
];
const cifarTgz = gzipSync(
  tar([
    ['cifar-10-batches-bin/', null],
    ...cifarBins.map(([n, d]) => [`cifar-10-batches-bin/${n}`, d] as [string, Uint8Array]),
    ['cifar-10-batches-bin/batches.meta.txt', Buffer.from('airplane\nautomobile\n')],
  ]),
);

// ---- server ---------------------------------------------------------------------------------------------------
type Mode = 'ok' | 'cut-first' | 'ignore-range' | 'hang';
const files = new Map<string, { data: Buffer; mode: Mode; hits: number }>();
const log: { path: string; range?: string }[] = [];
function serve(prefix: string, name: string, data: Buffer, mode: Mode = 'ok'): void {
  files.set(`/${prefix}/${name}`, { data, mode, hits: 0 });
}
const server = http.createServer((req, res) => {
  const url = new URL(req.url!, 'http://x');
  log.push({ path: url.pathname, range: req.headers.range });
  if (url.pathname.startsWith('/redirect/')) {
    const n = Number(url.pathname.split('/')[2]);
    const rest = url.pathname.split('/').slice(3).join('/');
    res.writeHead(302, { location: n > 0 ? `/redirect/${n - 1}/${rest}` : `/${rest}` });
    res.end();
    return;
  }
  const f = files.get(url.pathname);
  if (!f) {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
    return;
  }
  f.hits++;
  if (f.mode === 'hang') return; // never answers
  const len = f.data.length;
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (m && f.mode !== 'ignore-range') {
    const start = Number(m[1]);
    if (start >= len) {
      res.writeHead(416, { 'content-range': `bytes */${len}` });
      res.end();
      return;
    }
    res.writeHead(206, { 'content-length': len - start, 'content-range': `bytes ${start}-${len - 1}/${len}` });
    res.end(f.data.subarray(start));
    return;
  }
  res.writeHead(200, { 'content-length': len });
  if (f.mode === 'cut-first' && f.hits === 1) {
    res.write(f.data.subarray(0, Math.floor(len / 2)), () => setTimeout(() => res.socket?.destroy(), 20));
    return;
  }
  res.end(f.data);
});
let base = '';
before(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  rmSync(tmp, { recursive: true, force: true });
});
const fast = { retryDelayMs: 10, timeoutMs: 5000 };

// ---- tests -------------------------------------------------------------------------------------------------
test('downloads Fashion-MNIST, verifies md5s, reports progress, skips files already present', async () => {
  for (const [n, d] of fm) serve('ok', n, d);
  const dir = freshDir();
  const progress: FetchProgress[] = [];
  const r = await fetchDataset('fashion-mnist', dir, { ...fast, baseUrl: `${base}/ok/`, files: fmFiles, onProgress: (p) => progress.push(p) });
  assert.equal(r.downloaded.length, 4);
  for (const [n, d] of fm) assert.deepEqual(readFileSync(join(dir, n)), d);
  const ds = loadFashionMnist(dir, 'test');
  assert.equal(ds.count, 20);
  const lastDl = progress.filter((p) => p.phase === 'download' && p.file === 'train-images-idx3-ubyte.gz').at(-1)!;
  assert.equal(lastDl.done, fm.get('train-images-idx3-ubyte.gz')!.length);
  assert.equal(lastDl.total, lastDl.done);
  const before = log.length;
  const again = await fetchDataset('fashion-mnist', dir, { ...fast, baseUrl: `${base}/ok`, files: fmFiles });
  assert.equal(again.skipped.length, 4);
  assert.equal(log.length, before, 'no requests for files already present');
  assert.ok(!existsSync(join(dir, 'train-images-idx3-ubyte.gz.part')));
});

test('resumes with a Range request after the connection is cut mid-file', async () => {
  const data = fm.get('train-images-idx3-ubyte.gz')!;
  serve('cut', 'train-images-idx3-ubyte.gz', data, 'cut-first');
  const dir = freshDir();
  const one = fmFiles.filter((f) => f.name === 'train-images-idx3-ubyte.gz');
  await fetchDataset('fashion-mnist', dir, { ...fast, baseUrl: `${base}/cut/`, files: one });
  assert.deepEqual(readFileSync(join(dir, 'train-images-idx3-ubyte.gz')), data);
  const reqs = log.filter((l) => l.path === '/cut/train-images-idx3-ubyte.gz');
  assert.equal(reqs.length, 2);
  assert.equal(reqs[0]!.range, undefined);
  assert.equal(reqs[1]!.range, `bytes=${Math.floor(data.length / 2)}-`);

  // Without retries the first call fails and leaves the .part; the next call resumes it.
  serve('cut2', 'train-images-idx3-ubyte.gz', data, 'cut-first');
  const dir2 = freshDir();
  await assert.rejects(fetchDataset('fashion-mnist', dir2, { ...fast, retries: 0, baseUrl: `${base}/cut2/`, files: one }), /connection (lost|closed)/);
  const part = join(dir2, 'train-images-idx3-ubyte.gz.part');
  assert.equal(statSync(part).size, Math.floor(data.length / 2));
  assert.ok(!existsSync(join(dir2, 'train-images-idx3-ubyte.gz')));
  await fetchDataset('fashion-mnist', dir2, { ...fast, retries: 0, baseUrl: `${base}/cut2/`, files: one });
  assert.deepEqual(readFileSync(join(dir2, 'train-images-idx3-ubyte.gz')), data);
  assert.ok(!existsSync(part));
  assert.equal(log.filter((l) => l.path === '/cut2/train-images-idx3-ubyte.gz').at(-1)!.range, `bytes=${Math.floor(data.length / 2)}-`);
});

test('a server ignoring Range (200) restarts the file from scratch', async () => {
  const data = fm.get('t10k-images-idx3-ubyte.gz')!;
  serve('norange', 't10k-images-idx3-ubyte.gz', data, 'ignore-range');
  const dir = freshDir();
  const one = fmFiles.filter((f) => f.name === 't10k-images-idx3-ubyte.gz');
  await fetchDataset('fashion-mnist', dir, { ...fast, baseUrl: `${base}/norange/`, files: [] }); // creates dir
  writeFileSync(join(dir, 't10k-images-idx3-ubyte.gz.part'), data.subarray(0, 100));
  await fetchDataset('fashion-mnist', dir, { ...fast, baseUrl: `${base}/norange/`, files: one });
  assert.deepEqual(readFileSync(join(dir, 't10k-images-idx3-ubyte.gz')), data);
  assert.equal(log.filter((l) => l.path === '/norange/t10k-images-idx3-ubyte.gz').at(-1)!.range, 'bytes=100-');
});

test('md5 mismatch: clear error, part file deleted, no final file', async () => {
  serve('ok', 'train-labels-idx1-ubyte.gz', fm.get('train-labels-idx1-ubyte.gz')!);
  const dir = freshDir();
  const bad = [{ name: 'train-labels-idx1-ubyte.gz', md5: '0123456789abcdef0123456789abcdef' }];
  await assert.rejects(
    fetchDataset('fashion-mnist', dir, { ...fast, baseUrl: `${base}/ok/`, files: bad }),
    /md5 mismatch for train-labels-idx1-ubyte\.gz .*expected 0123456789abcdef0123456789abcdef, got [0-9a-f]{32}/,
  );
  assert.ok(!existsSync(join(dir, 'train-labels-idx1-ubyte.gz')));
  assert.ok(!existsSync(join(dir, 'train-labels-idx1-ubyte.gz.part')));
});

test('404 gives a clear error without retrying', async () => {
  const before = log.length;
  const t0 = Date.now();
  await assert.rejects(
    fetchDataset('fashion-mnist', freshDir(), { ...fast, retryDelayMs: 2000, baseUrl: `${base}/missing/`, files: fmFiles.slice(0, 1) }),
    (e: Error) => /HTTP 404 Not Found for http:\/\/127\.0\.0\.1:\d+\/missing\/train-images-idx3-ubyte\.gz/.test(e.message),
  );
  assert.equal(log.length - before, 1);
  assert.ok(Date.now() - t0 < 1500);
});

test('a server that never answers times out', async () => {
  serve('hang', 'train-images-idx3-ubyte.gz', fm.get('train-images-idx3-ubyte.gz')!, 'hang');
  const t0 = Date.now();
  await assert.rejects(
    fetchDataset('fashion-mnist', freshDir(), { timeoutMs: 200, retries: 1, retryDelayMs: 10, baseUrl: `${base}/hang/`, files: fmFiles.slice(0, 1) }),
    /timeout: no data from http:\/\/127\.0\.0\.1:\d+\/hang\/train-images-idx3-ubyte\.gz for 200 ms/,
  );
  const ms = Date.now() - t0;
  assert.ok(ms >= 400 && ms < 3000, `${ms} ms`);
  assert.equal(files.get('/hang/train-images-idx3-ubyte.gz')!.hits, 2);
});

test('follows up to 5 redirects, no more', async () => {
  for (const [n, d] of fm) serve('ok', n, d);
  const one = fmFiles.slice(0, 1);
  const dir = freshDir();
  await fetchDataset('fashion-mnist', dir, { ...fast, baseUrl: `${base}/redirect/4/ok/`, files: one });
  assert.deepEqual(readFileSync(join(dir, one[0]!.name)), fm.get(one[0]!.name));
  await assert.rejects(fetchDataset('fashion-mnist', freshDir(), { ...fast, baseUrl: `${base}/redirect/5/ok/`, files: one }), /too many redirects/);
});

test('CIFAR-10: downloads the tar.gz, unpacks it, and the batches load', async () => {
  serve('cifar', 'cifar-10-binary.tar.gz', cifarTgz, 'cut-first');
  const dir = freshDir();
  const files = [{ name: 'cifar-10-binary.tar.gz', md5: md5(cifarTgz) }];
  const phases = new Set<string>();
  const r = await fetchDataset('cifar10', dir, { ...fast, baseUrl: `${base}/cifar/`, files, onProgress: (p) => phases.add(p.phase) });
  assert.deepEqual([...phases].sort(), ['download', 'extract', 'verify']);
  assert.equal(r.extracted, join(dir, 'cifar-10-batches-bin'));
  for (const [n, d] of cifarBins) assert.deepEqual(new Uint8Array(readFileSync(join(dir, 'cifar-10-batches-bin', n))), d);
  assert.equal(readFileSync(join(dir, 'cifar-10-batches-bin', 'batches.meta.txt'), 'utf8'), 'airplane\nautomobile\n');
  const train = loadCifar10(dir, 'train');
  assert.equal(train.count, 10);
  assert.deepEqual([...train.labels], [1, 4, 2, 5, 3, 6, 4, 7, 5, 8]);
  assert.deepEqual([...loadCifar10(dir, 'test').labels], [9, 0, 5]);
  // second run: archive present with the right md5, batches present → nothing downloaded or unpacked
  const again = await fetchDataset('cifar10', dir, { ...fast, baseUrl: `${base}/cifar/`, files });
  assert.equal(again.downloaded.length, 0);
});

test('extractTarGz rejects corrupt, truncated and unsafe archives', async () => {
  const dir = freshDir();
  const good = tar([['a/b.bin', rand(1000)]]);
  const cases: [string, Buffer, RegExp][] = [
    ['badsum.tar.gz', gzipSync(Buffer.concat([Buffer.from(good.subarray(0, 100)), Buffer.from([good[100]! ^ 1]), good.subarray(101)])), /bad tar header checksum at byte 0/],
    ['trunc.tar.gz', gzipSync(good.subarray(0, 512 + 600)), /truncated archive: a\/b\.bin ends after 600 of 1000 bytes/],
    ['evil.tar.gz', gzipSync(tar([['../evil.txt', Buffer.from('x')]])), /unsafe path '\.\.\/evil\.txt'/],
    ['abs.tar.gz', gzipSync(tar([['/tmp/evil.txt', Buffer.from('x')]])), /unsafe path '\/tmp\/evil\.txt'/],
    ['notgz.tar.gz', good, /trunc|header|gzip|incorrect/i],
  ];
  for (const [name, data, re] of cases) {
    const p = join(tmp, name);
    writeFileSync(p, data);
    await assert.rejects(extractTarGz(p, dir), (e: Error) => e.message.startsWith(p) && re.test(e.message), name);
  }
  assert.ok(!existsSync(join(tmp, 'evil.txt')));
  const ok = join(tmp, 'ok.tar.gz');
  writeFileSync(ok, gzipSync(good));
  assert.deepEqual(await extractTarGz(ok, dir), ['a/b.bin']);
  assert.deepEqual(readFileSync(join(dir, 'a/b.bin')), good.subarray(512, 1512));
});

test('extractTarGz stops inflating a bomb at maxBytes; the CIFAR-10 bound is what its six batches take', async () => {
  const bomb = join(tmp, 'bomb.tar.gz');
  writeFileSync(bomb, gzipSync(tar([['cifar-10-batches-bin/data_batch_1.bin', new Uint8Array(64 << 20)]]), { level: 1 }));
  const dir = freshDir();
  await assert.rejects(extractTarGz(bomb, dir, undefined, 1 << 20), (e: Error) => e.message === `${bomb}: inflates to more than 1048576 bytes, more than the dataset holds`);
  const written = statSync(join(dir, 'cifar-10-batches-bin', 'data_batch_1.bin')).size;
  assert.ok(written <= 1 << 20, `${written} bytes written`);
  assert.equal(DATASET_SOURCES.cifar10.extract!.maxBytes, 6 * 10_000 * 3073 + (1 << 20));
});
