/**
 * The inference server: POST an encoded image to /v1/classify, get the top-k classes as JSON; or, serving a
 * detector, to /v1/detect, get its boxes (pixels), scores and classes. Images are
 * preprocessed with sharp (libuv threads, concurrently) and run through the model in dynamic micro-batches.
 *
 * Engines: ONNX Runtime's run() is asynchronous (it runs on its own threads), so the server keeps accepting
 * and decoding while a batch runs. The native engine's predict() is synchronous: the event loop is blocked for
 * the duration of each batch (requests wait in the kernel's socket buffers meanwhile), which is fine for
 * small models and batches but is why ORT is the default.
 */
import { performance } from 'node:perf_hooks';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { Classifier } from '../engine/classifier.js';
import { orientedSize, type Detection } from '../detect/ssdlite-detector.js';
import { topK } from '../task/classification.js';
import { loadImageBuffer, type Preset } from '../data/preprocess.js';
import { Batcher } from './batcher.js';
import { PROMETHEUS_CONTENT_TYPE, serverMetrics, type ServerMetrics } from './metrics.js';

/** Media types accepted as an image body. */
export const IMAGE_TYPES: readonly string[] = ['image/png', 'image/jpeg', 'image/webp', 'application/octet-stream'];

/** A detector behind the batcher: `classifier.run` gives one row of `rowSize` raw outputs per image. */
export interface ServedDetector {
  rowSize: number;
  /** Pixel detections of an image of width × height from its row. */
  detect(row: Float32Array, width: number, height: number): Detection[];
}

export interface ServerOptions {
  classifier: Classifier;
  /** Serve this detector: POST /v1/detect instead of /v1/classify. */
  detector?: ServedDetector;
  /** Per-image input shape [C, H, W] and class count, as the classifier takes them. */
  inputShape: readonly [number, number, number];
  numClasses: number;
  preset: Preset;
  invert?: boolean;
  labels?: readonly string[];
  /** Reported in every response (e.g. the weights file's name). */
  modelName: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  maxBatch?: number;
  maxWaitMs?: number;
  /** Most classify requests in progress at once (decoding, queued or running); more get 503. */
  maxQueue?: number;
  /** Largest accepted body in bytes; larger ones get 413. */
  bodyLimit?: number;
  /** Images with more pixels are rejected (400) before decoding. */
  maxPixels?: number;
  top?: number;
  /**
   * On close(), how long requests still arriving (a body half sent) or running may take before their connections
   * are cut (default 10 000 ms). Idle keep-alive connections are closed at once.
   */
  shutdownGraceMs?: number;
}

/** What close() had to do. */
export interface ShutdownReport {
  /** Requests whose connections were cut at the end of the grace period. */
  cut: number;
}

export interface RunningServer {
  /** `http://host:port` as bound. */
  url: string;
  app: FastifyInstance;
  metrics: ServerMetrics;
  /**
   * Stop accepting, close idle connections, answer every request already in (cutting those unfinished after the
   * grace period), run every queued batch, release the model. Idempotent.
   */
  close(): Promise<ShutdownReport>;
}

interface Timing {
  model: string;
  batchSize: number;
  ms: number;
}

interface ClassifyResponse extends Timing {
  top: { index: number; label: string; prob: number }[];
}

interface DetectResponse extends Timing {
  width: number;
  height: number;
  detections: Detection[];
}

/** An error answered with its status code and a JSON `{ error }` body. */
class HttpError extends Error {
  constructor(readonly statusCode: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

const round2 = (x: number): number => Math.round(x * 100) / 100;

function formatBytes(n: number): string {
  return n >= 1 << 20 ? `${+(n / (1 << 20)).toFixed(2)} MB` : n >= 1024 ? `${+(n / 1024).toFixed(2)} KB` : `${n} bytes`;
}

/** Start the server; resolves once it is listening. */
export async function startServer(o: ServerOptions): Promise<RunningServer> {
  const [c, h, w] = o.inputShape;
  const maxBatch = o.maxBatch ?? 32;
  const maxQueue = o.maxQueue ?? 256;
  const bodyLimit = o.bodyLimit ?? 10 << 20;
  const top = o.top ?? 5;
  const graceMs = o.shutdownGraceMs ?? 10_000;
  if (!Number.isInteger(maxQueue) || maxQueue < 1) throw new Error(`max queue must be a positive integer, got ${maxQueue}`);
  if (!Number.isInteger(bodyLimit) || bodyLimit < 1) throw new Error(`body limit must be a positive number of bytes, got ${bodyLimit}`);
  if (!Number.isInteger(top) || top < 1) throw new Error(`top must be a positive integer, got ${top}`);
  if (!(graceMs >= 0)) throw new Error(`shutdown grace must be >= 0 ms, got ${graceMs}`);
  if (o.preset.channels !== c || o.preset.size !== h || o.preset.size !== w) {
    throw new Error(`preset ${o.preset.name} makes ${o.preset.channels}x${o.preset.size}x${o.preset.size} inputs, the model takes ${c}x${h}x${w}`);
  }
  const route = o.detector ? '/v1/detect' : '/v1/classify';
  if (o.labels && o.labels.length !== o.numClasses) throw new Error(`${o.labels.length} labels for a model with ${o.numClasses} classes`);

  /** The classify or detect handlers running: close() waits for them, even those whose client has gone away. */
  const inFlight = new Set<Promise<Timing>>();
  let closing: Promise<ShutdownReport> | null = null;
  /** Requests from their headers to their response (or abort): those a shutdown may have to cut. */
  const open = new Set<object>();
  const batcher: Batcher = new Batcher({
    maxBatch,
    maxWaitMs: o.maxWaitMs ?? 5,
    inputSize: c * h * w,
    outputSize: o.detector?.rowSize ?? o.numClasses,
    run: (x, n) => o.classifier.run(x, n),
    onBatch: (n, ms) => {
      metrics.batchSize.observe(n);
      metrics.inference.observe(ms / 1000);
      metrics.images.inc({}, n);
    },
  });
  const metrics = serverMetrics(
    () => batcher.depth,
    () => inFlight.size,
    o.classifier.programs?.bind(o.classifier),
  );

  // return503OnClosing is fastify's default; kept explicit because shutdown relies on it.
  const app = Fastify({ logger: false, bodyLimit, return503OnClosing: true });
  // Only image bodies: without the default JSON and text parsers anything else is a 415.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser([...IMAGE_TYPES], { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.addHook('onRequest', async (req) => {
    open.add(req);
  });
  app.addHook('onRequestAbort', async (req) => {
    open.delete(req);
  });
  app.addHook('onResponse', async (req, reply) => {
    open.delete(req);
    // Once closing, a kept-alive connection whose last response went out is idle: close it.
    if (closing) setImmediate(() => app.server.closeIdleConnections());
    metrics.requests.inc({ route: req.routeOptions.url ?? 'unmatched', code: String(reply.statusCode) });
    if (req.routeOptions.url === route && reply.statusCode === 200) metrics.latency.observe(reply.elapsedTime / 1000);
  });

  app.setErrorHandler((err: FastifyError | HttpError, req, reply) => {
    if (err instanceof HttpError) return reply.code(err.statusCode).headers(err.headers).send({ error: err.message });
    switch (err.code) {
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return reply.code(413).send({ error: `request body is larger than the limit of ${formatBytes(bodyLimit)} (--body-limit)` });
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return reply.code(415).send({
          error: `unsupported Content-Type '${req.headers['content-type'] ?? '(none)'}': send the image bytes as the body with Content-Type ${IMAGE_TYPES.join(', ')}`,
        });
    }
    const status = err.statusCode ?? 500;
    if (status >= 500) console.error(`mnv2 serve: ${req.method} ${req.url}: ${err.stack ?? err.message}`);
    return reply.code(status).send({ error: status >= 500 ? 'internal error' : err.message });
  });

  app.get('/healthz', async (_req, reply) => (closing ? reply.code(503).send({ status: 'shutting down' }) : { status: 'ok' }));

  app.get('/metrics', async (_req, reply) => reply.type(PROMETHEUS_CONTENT_TYPE).send(metrics.registry.render()));

  app.get('/v1/model', async () => ({
    model: o.modelName,
    engine: o.classifier.engine,
    task: o.detector ? 'detect' : 'classify',
    input: [c, h, w],
    classes: o.numClasses,
    labels: o.labels ?? null,
    preset: o.preset.name,
    invert: o.invert ?? false,
    maxBatch,
  }));

  /** The image preprocessed for the model; everything rejected here is about the bytes sent (400). */
  const preprocess = async (body: Buffer): Promise<Float32Array> => {
    try {
      return await loadImageBuffer(body, o.preset, { invert: o.invert, maxPixels: o.maxPixels }, 'request body');
    } catch (e) {
      // Empty, truncated, not an image, too many pixels.
      throw new HttpError(400, (e as Error).message);
    }
  };

  const classify = async (body: Buffer, t0: number): Promise<ClassifyResponse> => {
    const r = await batcher.submit(await preprocess(body));
    return {
      top: topK(r.logits, o.numClasses, 0, top).map((t) => ({ index: t.index, label: o.labels?.[t.index] ?? String(t.index), prob: t.prob })),
      model: o.modelName,
      batchSize: r.batchSize,
      ms: round2(performance.now() - t0),
    };
  };

  const detect = async (det: ServedDetector, body: Buffer, t0: number): Promise<DetectResponse> => {
    const input = await preprocess(body);
    const { width, height } = await orientedSize(body);
    const r = await batcher.submit(input);
    return { width, height, detections: det.detect(r.logits, width, height), model: o.modelName, batchSize: r.batchSize, ms: round2(performance.now() - t0) };
  };

  app.post(route, async (req): Promise<Timing> => {
    const t0 = performance.now();
    if (closing) throw new HttpError(503, 'the server is shutting down', { 'retry-after': '1', connection: 'close' });
    if (inFlight.size >= maxQueue) throw new HttpError(503, `server busy: ${maxQueue} requests in progress (--max-queue); retry later`, { 'retry-after': '1' });
    const body = req.body;
    if (!Buffer.isBuffer(body)) throw new HttpError(400, `send the image bytes as the request body (Content-Type ${IMAGE_TYPES.join(', ')})`);
    const work = o.detector ? detect(o.detector, body, t0) : classify(body, t0);
    inFlight.add(work);
    try {
      return await work;
    } finally {
      inFlight.delete(work);
    }
  });

  try {
    await app.listen({ host: o.host ?? '127.0.0.1', port: o.port ?? 8080 });
  } catch (e) {
    await app.close();
    throw new Error(`cannot listen on ${o.host ?? '127.0.0.1'}:${o.port ?? 8080}: ${(e as Error).message}`);
  }
  const addr = app.server.address();
  if (!addr || typeof addr === 'string') throw new Error(`unexpected server address ${String(addr)}`);
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;

  return {
    url: `http://${host}:${addr.port}`,
    app,
    metrics,
    close: () =>
      (closing ??= (async () => {
        // fastify.close() stops listening at once, answers requests on kept-alive connections with 503 and
        // resolves when the connections are gone, which may be before the handlers of requests whose client
        // hung up are done: wait for those too (their batches keep running), then flush the batcher.
        // Connections do not go by themselves: an idle keep-alive one would stay until its client leaves,
        // and a half-sent body until it is complete. Close the idle ones now and cut the rest after the grace.
        const closed = app.close();
        app.server.closeIdleConnections();
        let cut = 0;
        const timer = setTimeout(() => {
          cut = open.size;
          app.server.closeAllConnections();
        }, graceMs);
        try {
          await closed;
        } finally {
          clearTimeout(timer);
        }
        await Promise.allSettled(inFlight);
        await batcher.drain();
        await o.classifier.release();
        return { cut };
      })()),
  };
}
