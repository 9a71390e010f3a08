/**
 * Detection datasets: COCO JSON, Pascal VOC XML and YOLO txt labels read into one type.
 *
 * Convention: boxes are [x1, y1, x2, y2] in pixels with pixel-edge coordinates (a box covering columns 0..9 is
 * x1 = 0, x2 = 10). COCO's [x, y, w, h] maps directly; VOC's 1-based inclusive xmin..xmax becomes
 * [xmin − 1, xmax]; YOLO's normalized centers are multiplied by the image size. Labels are contiguous
 * 0..K−1 in the order of `categories` (COCO: ascending category id; VOC: the class list; YOLO: the names list);
 * an SSD head's column is label + 1 (column 0 is background).
 *
 * Bad input, by kind:
 * - a file that cannot be read or parsed (JSON, XML, a label line), a missing required field, a reference to an
 *   unknown image or category, a duplicate id → InputError naming the file and the entry;
 * - geometry, counted in `skipped` and listed by `formatSkips`: a box with zero, negative or non-finite size is
 *   dropped ('degenerate box'); a box entirely outside its image is dropped ('box outside the image'); a box
 *   partly outside is clipped ('box clipped to the image'); an image whose file is missing, unreadable or (with
 *   checkImages) of another size than its annotation says is dropped; images without boxes are kept (they are
 *   negatives) and counted ('image without boxes').
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import sharp from 'sharp';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { InputError } from '../util/errors.js';
import type { CocoGroundTruth } from './coco-eval.js';

export interface DetectionBox {
  /** [x1, y1, x2, y2] pixels. */
  box: [number, number, number, number];
  /** Contiguous label 0..K−1 (index into categories). */
  label: number;
  /** COCO: annotation area (segmentation area), else the box area; for COCOeval's area ranges. */
  area: number;
  /** COCO iscrowd: ignored by COCOeval, matched many times. */
  iscrowd: boolean;
  /** VOC difficult: ignored by VOC AP. */
  difficult: boolean;
}

export interface DetectionImage {
  /** COCO image id; VOC and YOLO: position in the list, from 1. */
  id: number;
  /** Absolute path of the image file. */
  file: string;
  width: number;
  height: number;
  boxes: DetectionBox[];
}

export interface DetectionDataset {
  name: string;
  images: DetectionImage[];
  /** categories[label]: the source's id (COCO category id; VOC/YOLO: label + 1) and name. */
  categories: { id: number; name: string }[];
  /** Reason → count, plus a few examples each. */
  skipped: SkipCounts;
}

export class SkipCounts {
  readonly counts = new Map<string, number>();
  readonly examples = new Map<string, string[]>();

  add(reason: string, example: string): void {
    this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1);
    const ex = this.examples.get(reason) ?? [];
    if (ex.length < 3) ex.push(example);
    this.examples.set(reason, ex);
  }

  get total(): number {
    return [...this.counts.values()].reduce((a, b) => a + b, 0);
  }
}

/** One line per reason: "degenerate box: 3 (e.g. annotations[4] (id 12), …)". */
export function formatSkips(s: SkipCounts): string {
  return [...s.counts]
    .map(([reason, n]) => `${reason}: ${n} (e.g. ${s.examples.get(reason)!.join('; ')})`)
    .join('\n');
}

export interface LoadOptions {
  /** Read every image's header with sharp: unreadable files and size mismatches are dropped (counted). */
  checkImages?: boolean;
}

/** Adds a box after the geometry checks (see the file comment); `where` names the entry for the counts. */
function addBox(img: DetectionImage, b: Omit<DetectionBox, 'box'> & { box: number[] }, skipped: SkipCounts, where: string): void {
  const [x1, y1, x2, y2] = b.box as [number, number, number, number];
  if (![x1, y1, x2, y2].every(Number.isFinite) || x2 <= x1 || y2 <= y1) {
    skipped.add('degenerate box', where);
    return;
  }
  const c: [number, number, number, number] = [Math.max(0, x1), Math.max(0, y1), Math.min(img.width, x2), Math.min(img.height, y2)];
  if (c[2] <= c[0] || c[3] <= c[1]) {
    skipped.add('box outside the image', where);
    return;
  }
  if (c[0] !== x1 || c[1] !== y1 || c[2] !== x2 || c[3] !== y2) skipped.add('box clipped to the image', where);
  img.boxes.push({ ...b, box: c });
}

/** Image size from its header; null when sharp cannot read it. */
async function imageSize(file: string): Promise<{ width: number; height: number } | null> {
  try {
    const m = await sharp(file, { failOn: 'error' }).metadata();
    return m.width && m.height ? { width: m.width, height: m.height } : null;
  } catch {
    return null;
  }
}

/** Drops images whose file is missing (and, with checkImages, unreadable or of another size); counts the rest. */
async function keepReadable(images: DetectionImage[], skipped: SkipCounts, o: LoadOptions): Promise<DetectionImage[]> {
  const out: DetectionImage[] = [];
  for (const img of images) {
    if (!existsSync(img.file)) {
      skipped.add('image file missing', img.file);
      continue;
    }
    if (o.checkImages) {
      const size = await imageSize(img.file);
      if (!size) {
        skipped.add('unreadable image', img.file);
        continue;
      }
      if (size.width !== img.width || size.height !== img.height) {
        skipped.add('image size differs from its annotation', `${img.file}: ${size.width}×${size.height}, annotation ${img.width}×${img.height}`);
        continue;
      }
    }
    if (img.boxes.length === 0) skipped.add('image without boxes', img.file);
    out.push(img);
  }
  return out;
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new InputError(file, err.code === 'ENOENT' ? 'file not found' : `cannot read: ${err.message}`);
  }
}

// ---- COCO ----

type Json = Record<string, unknown>;

function field(file: string, where: string, o: Json, key: string, kind: 'number' | 'string' | 'array'): unknown {
  const v = o[key];
  const ok = kind === 'array' ? Array.isArray(v) : kind === 'number' ? typeof v === 'number' && Number.isFinite(v) : typeof v === 'string';
  if (!ok) throw new InputError(file, `${where}: "${key}" must be ${kind === 'array' ? 'an array' : `a ${kind}`}, got ${JSON.stringify(v)}`);
  return v;
}

function entries(file: string, root: Json, key: string): Json[] {
  const list = field(file, 'top level', root, key, 'array') as unknown[];
  return list.map((e, i) => {
    if (typeof e !== 'object' || e === null || Array.isArray(e)) throw new InputError(file, `${key}[${i}] is not an object`);
    return e as Json;
  });
}

/**
 * A COCO instances file (`images`, `annotations`, `categories`) with images under imageDir (file_name relative
 * to it).
 */
export async function loadCocoDetection(annotationFile: string, imageDir: string, o: LoadOptions = {}): Promise<DetectionDataset> {
  const file = resolve(annotationFile);
  let root: unknown;
  try {
    root = JSON.parse(readText(file));
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(file, `malformed JSON: ${(e as Error).message}`);
  }
  if (typeof root !== 'object' || root === null || Array.isArray(root)) throw new InputError(file, 'the top level is not a JSON object');
  const cats = entries(file, root as Json, 'categories').map((c, i) => ({
    id: field(file, `categories[${i}]`, c, 'id', 'number') as number,
    name: field(file, `categories[${i}]`, c, 'name', 'string') as string,
  }));
  cats.sort((a, b) => a.id - b.id);
  const labelOf = new Map<number, number>();
  cats.forEach((c, label) => {
    if (labelOf.has(c.id)) throw new InputError(file, `category id ${c.id} appears twice`);
    labelOf.set(c.id, label);
  });
  const byId = new Map<number, DetectionImage>();
  const images = entries(file, root as Json, 'images').map((im, i) => {
    const where = `images[${i}]`;
    const img: DetectionImage = {
      id: field(file, where, im, 'id', 'number') as number,
      file: resolve(imageDir, field(file, where, im, 'file_name', 'string') as string),
      width: field(file, where, im, 'width', 'number') as number,
      height: field(file, where, im, 'height', 'number') as number,
      boxes: [],
    };
    if (!(img.width > 0 && img.height > 0)) throw new InputError(file, `${where} (id ${img.id}): size ${img.width}×${img.height}`);
    if (byId.has(img.id)) throw new InputError(file, `${where}: image id ${img.id} appears twice`);
    byId.set(img.id, img);
    return img;
  });
  const skipped = new SkipCounts();
  entries(file, root as Json, 'annotations').forEach((a, i) => {
    const id = a.id;
    const where = `annotations[${i}]${id !== undefined ? ` (id ${String(id)})` : ''}`;
    const imageId = field(file, where, a, 'image_id', 'number') as number;
    const catId = field(file, where, a, 'category_id', 'number') as number;
    const bbox = field(file, where, a, 'bbox', 'array') as unknown[];
    if (bbox.length !== 4 || !bbox.every((v) => typeof v === 'number')) throw new InputError(file, `${where}: bbox must be [x, y, w, h], got ${JSON.stringify(bbox)}`);
    const img = byId.get(imageId);
    if (!img) throw new InputError(file, `${where}: image_id ${imageId} is not in images`);
    const label = labelOf.get(catId);
    if (label === undefined) throw new InputError(file, `${where}: category_id ${catId} is not in categories`);
    const [x, y, w, h] = bbox as number[];
    const area = typeof a.area === 'number' && Number.isFinite(a.area) ? a.area : w! * h!;
    addBox(img, { box: [x!, y!, x! + w!, y! + h!], label, area, iscrowd: Boolean(a.iscrowd), difficult: false }, skipped, where);
  });
  return { name: basename(file), images: await keepReadable(images, skipped, o), categories: cats, skipped };
}

// ---- Pascal VOC ----

export const VOC_CLASSES = Object.freeze([
  'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
  'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor',
]);

const xml = new XMLParser({ ignoreAttributes: true, parseTagValue: false, isArray: (name) => name === 'object' });

function xmlNumber(file: string, where: string, o: Json | undefined, key: string): number {
  const raw = o?.[key];
  const v = typeof raw === 'string' ? Number(raw.trim()) : NaN;
  if (typeof raw !== 'string' || raw.trim() === '' || !Number.isFinite(v)) throw new InputError(file, `${where}: <${key}> must be a number, got ${JSON.stringify(raw)}`);
  return v;
}

/** One VOC annotation XML → an image (boxes added through the geometry checks). */
function parseVocXml(file: string, imageDir: string, id: number, classes: readonly string[], skipped: SkipCounts): DetectionImage {
  const text = readText(file);
  const valid = XMLValidator.validate(text);
  if (valid !== true) throw new InputError(file, `malformed XML at line ${valid.err.line}: ${valid.err.msg}`);
  const ann = (xml.parse(text) as Json).annotation as Json | undefined;
  if (!ann || typeof ann !== 'object') throw new InputError(file, 'no <annotation> element');
  if (typeof ann.filename !== 'string' || !ann.filename.trim()) throw new InputError(file, '<filename> is missing');
  const size = ann.size as Json | undefined;
  const img: DetectionImage = {
    id,
    file: resolve(imageDir, ann.filename.trim()),
    width: xmlNumber(file, '<size>', size, 'width'),
    height: xmlNumber(file, '<size>', size, 'height'),
    boxes: [],
  };
  if (!(img.width > 0 && img.height > 0)) throw new InputError(file, `<size> is ${img.width}×${img.height}`);
  ((ann.object as Json[] | undefined) ?? []).forEach((ob, i) => {
    const where = `<object> ${i + 1}`;
    const name = typeof ob.name === 'string' ? ob.name.trim() : '';
    const label = classes.indexOf(name);
    if (label < 0) throw new InputError(file, `${where}: class "${name}" is not one of ${classes.length} classes (${classes.slice(0, 3).join(', ')}, …)`);
    const bb = ob.bndbox as Json | undefined;
    const [xmin, ymin, xmax, ymax] = ['xmin', 'ymin', 'xmax', 'ymax'].map((k) => xmlNumber(file, `${where} <bndbox>`, bb, k)) as [number, number, number, number];
    const box = [xmin - 1, ymin - 1, xmax, ymax];
    addBox(img, { box, label, area: (box[2]! - box[0]!) * (box[3]! - box[1]!), iscrowd: false, difficult: String(ob.difficult ?? '0').trim() === '1' }, skipped, `${file} ${where}`);
  });
  return img;
}

/** A VOC folder (VOCdevkit/VOC2007): ImageSets/Main/<split>.txt, Annotations/<id>.xml, JPEGImages/. */
export async function loadVocDetection(root: string, split: string, o: LoadOptions & { classes?: readonly string[] } = {}): Promise<DetectionDataset> {
  const classes = o.classes ?? VOC_CLASSES;
  const listFile = resolve(root, 'ImageSets', 'Main', `${split}.txt`);
  const ids = readText(listFile).split('\n').map((l) => l.trim()).filter(Boolean);
  const skipped = new SkipCounts();
  const images = ids.map((id, i) => parseVocXml(resolve(root, 'Annotations', `${id}.xml`), resolve(root, 'JPEGImages'), i + 1, classes, skipped));
  return {
    name: `${basename(resolve(root))}-${split}`,
    images: await keepReadable(images, skipped, o),
    categories: classes.map((name, i) => ({ id: i + 1, name })),
    skipped,
  };
}

// ---- YOLO ----

const IMAGE_EXT = new Set(['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff', '.bmp']);

/**
 * YOLO labels: one image per file in imageDir, labels in labelDir/<stem>.txt, one `class cx cy w h` line per box
 * (normalized to [0, 1]); a missing label file is an image without boxes. `names`: the class names (data.yaml's
 * `names`, or the lines of an obj.names / classes.txt file). Image sizes come from the files (sharp), so
 * unreadable images are always dropped and counted.
 */
export async function loadYoloDetection(imageDir: string, labelDir: string, names: readonly string[]): Promise<DetectionDataset> {
  if (names.length === 0) throw new Error('YOLO dataset: the class name list is empty');
  let files: string[];
  try {
    files = readdirSync(imageDir).filter((f) => IMAGE_EXT.has(extname(f).toLowerCase())).sort();
  } catch (e) {
    throw new InputError(resolve(imageDir), `cannot list the image folder: ${(e as Error).message}`);
  }
  const skipped = new SkipCounts();
  const images: DetectionImage[] = [];
  for (const [i, f] of files.entries()) {
    const file = resolve(imageDir, f);
    const size = await imageSize(file);
    if (!size) {
      skipped.add('unreadable image', file);
      continue;
    }
    const img: DetectionImage = { id: i + 1, file, ...size, boxes: [] };
    const labelFile = join(resolve(labelDir), `${basename(f, extname(f))}.txt`);
    if (existsSync(labelFile)) {
      readText(labelFile).split('\n').forEach((line, ln) => {
        if (!line.trim()) return;
        const where = `line ${ln + 1}`;
        const parts = line.trim().split(/\s+/);
        const v = parts.map(Number);
        if (parts.length !== 5 || !v.every(Number.isFinite)) throw new InputError(labelFile, `${where}: expected "class cx cy w h", got "${line.trim()}"`);
        const [c, cx, cy, w, h] = v as [number, number, number, number, number];
        if (!Number.isInteger(c) || c < 0 || c >= names.length) throw new InputError(labelFile, `${where}: class ${parts[0]} is not in 0..${names.length - 1}`);
        const box = [(cx - w / 2) * size.width, (cy - h / 2) * size.height, (cx + w / 2) * size.width, (cy + h / 2) * size.height];
        addBox(img, { box, label: c, area: w * size.width * h * size.height, iscrowd: false, difficult: false }, skipped, `${labelFile} ${where}`);
      });
    }
    images.push(img);
  }
  return { name: basename(resolve(imageDir)), images: await keepReadable(images, skipped, {}), categories: names.map((name, i) => ({ id: i + 1, name })), skipped };
}

/** The dataset as COCO ground truth for cocoEvaluate (bbox [x, y, w, h], area, iscrowd; ids from 1). */
export function toCocoGroundTruth(ds: DetectionDataset): CocoGroundTruth {
  let id = 0;
  return {
    images: ds.images.map((im) => ({ id: im.id })),
    categories: ds.categories,
    annotations: ds.images.flatMap((im) =>
      im.boxes.map((b) => ({
        id: ++id,
        image_id: im.id,
        category_id: ds.categories[b.label]!.id,
        bbox: [b.box[0], b.box[1], b.box[2] - b.box[0], b.box[3] - b.box[1]],
        area: b.area,
        iscrowd: b.iscrowd ? 1 : 0,
      })),
    ),
  };
}
