#!/usr/bin/env node
/**
 * A minimal static file server for the built page (no dependencies, no special headers: the page needs none).
 *
 *   node web/serve.mjs [dir=web/dist] [--port 8080] [--host 127.0.0.1]
 *
 * Prints `serving <dir> at http://host:port/` once listening (--port 0 picks a free port).
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  // application/wasm lets the browser compile while downloading (WebAssembly.instantiateStreaming).
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.svg': 'image/svg+xml',
};

/** An http.Server serving the files under `root` (GET and HEAD; directories serve their index.html). */
function staticServer(root) {
  const base = path.resolve(root);
  return createServer(async (req, res) => {
    const fail = (code, msg) => {
      res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`${msg}\n`);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return fail(405, 'method not allowed');
    let rel;
    try {
      rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    } catch {
      return fail(400, 'bad path');
    }
    let file = path.join(base, rel);
    if (file !== base && !file.startsWith(base + path.sep)) return fail(403, 'forbidden');
    try {
      let s = await stat(file);
      if (s.isDirectory()) {
        file = path.join(file, 'index.html');
        s = await stat(file);
      }
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream',
        'content-length': s.size,
        'cache-control': 'no-cache',
      });
      if (req.method === 'HEAD') return res.end();
      createReadStream(file).on('error', () => res.destroy()).pipe(res);
    } catch {
      fail(404, `not found: ${rel}`);
    }
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { port: { type: 'string', default: '8080' }, host: { type: 'string', default: '127.0.0.1' } },
  });
  const dir = positionals[0] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), 'dist');
  const port = Number(values.port);
  try {
    if (!(await stat(path.join(dir, 'index.html'))).isFile()) throw new Error();
  } catch {
    console.error(`serve:web: ${path.join(dir, 'index.html')} not found; build the page first (npm run build:web)`);
    process.exit(1);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`serve:web: --port must be an integer 0..65535, got '${values.port}'`);
    process.exit(1);
  }
  const server = staticServer(dir);
  server.on('error', (e) => {
    console.error(`serve:web: ${e.message}`);
    process.exit(1);
  });
  server.listen(port, values.host, () => {
    const { port: p } = server.address();
    const host = values.host.includes(':') ? `[${values.host}]` : values.host;
    console.log(`serving ${path.relative(process.cwd(), path.resolve(dir)) || '.'} at http://${host}:${p}/`);
  });
}
