/**
 * The metadata_props of an ONNX file (ModelProto field 14: repeated {key = 1, value = 2}), read by walking
 * the top-level protobuf fields; the graph (field 7) is skipped without being decoded. Saves bundling a
 * protobuf library just to read `mnv2.config`.
 */

const GRAPH = 7;
const METADATA_PROPS = 14;

class Reader {
  pos = 0;
  constructor(
    private readonly b: Uint8Array,
    private readonly end: number = b.length,
  ) {}

  get done(): boolean {
    return this.pos >= this.end;
  }

  varint(): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new Error('truncated varint');
      const x = this.b[this.pos++]!;
      v += (x & 0x7f) * mul;
      if (x < 0x80) return v;
      mul *= 128;
    }
    throw new Error('varint longer than 10 bytes');
  }

  /** Skip a field of wire type `wt`; returns [start, end) of a length-delimited payload. */
  skip(wt: number): [number, number] {
    let n: number;
    switch (wt) {
      case 0:
        this.varint();
        return [this.pos, this.pos];
      case 1:
        n = 8;
        break;
      case 2:
        n = this.varint();
        break;
      case 5:
        n = 4;
        break;
      default:
        throw new Error(`unsupported wire type ${wt}`);
    }
    const start = this.pos;
    if (start + n > this.end) throw new Error('truncated field');
    this.pos += n;
    return [start, this.pos];
  }
}

/** Key -> value of an ONNX model's metadata; throws `<source>: not an ONNX model (...)` on other bytes. */
export function onnxMetadata(bytes: Uint8Array, source: string): Map<string, string> {
  const props = new Map<string, string>();
  const text = new TextDecoder('utf-8', { fatal: true });
  let graph = false;
  try {
    const r = new Reader(bytes);
    while (!r.done) {
      const tag = r.varint();
      const field = Math.floor(tag / 8);
      const [start, end] = r.skip(tag & 7);
      if (field === GRAPH) graph = true;
      if (field !== METADATA_PROPS || (tag & 7) !== 2) continue;
      const e = new Reader(bytes, end);
      e.pos = start;
      let key = '';
      let value = '';
      while (!e.done) {
        const t = e.varint();
        const [s, f] = e.skip(t & 7);
        if (t === (1 << 3 | 2)) key = text.decode(bytes.subarray(s, f));
        else if (t === (2 << 3 | 2)) value = text.decode(bytes.subarray(s, f));
      }
      props.set(key, value);
    }
  } catch (e) {
    throw new Error(`${source}: not an ONNX model (${(e as Error).message})`);
  }
  if (!graph) throw new Error(`${source}: not an ONNX model (no graph)`);
  return props;
}
