/**
 * A small reader for numpy's .npz (a ZIP of .npy files, as np.savez writes them: stored or
 * deflated, zip64 local headers) and .npy (format 1.0-3.0), for a bundle's
 * parameters.npz. Reads little-endian float32, float64, int32 and int64 arrays in C
 * order; anything else is refused with an Error saying what was found.
 */
const DTYPES = {
  '<f4': Float32Array, '<f8': Float64Array, '<i4': Int32Array, '<i8': BigInt64Array,
  '|u1': Uint8Array, '|i1': Int8Array,
};

/** {name: {data: TypedArray, shape: number[]}} of an .npz's bytes (Uint8Array). */
export async function readNpz(bytes) {
  const out = {};
  for (const entry of zipEntries(bytes)) {
    if (!entry.name.endsWith('.npy')) continue;
    out[entry.name.slice(0, -4)] = readNpy(await entryBytes(bytes, entry));
  }
  return out;
}

/** {data, shape} of one .npy file's bytes. */
export function readNpy(bytes) {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (!magic.every((b, i) => bytes[i] === b)) throw new Error('not an .npy file');
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!(descr in DTYPES)) throw new Error(`.npy dtype ${descr} is not supported`);
  if (fortran !== 'False') throw new Error('.npy in Fortran order is not supported');
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const Kind = DTYPES[descr];
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = start + headerLen;
  const copy = bytes.slice(offset, offset + count * Kind.BYTES_PER_ELEMENT);
  return { data: new Kind(copy.buffer), shape };
}

function zipEntries(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 65535); i--) {
    if (view.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Error('not a ZIP file (no end of central directory)');
  const count = view.getUint16(eocd + 10, true);
  let at = view.getUint32(eocd + 16, true);
  const entries = [];
  for (let n = 0; n < count; n++) {
    if (view.getUint32(at, true) !== 0x02014b50) throw new Error('damaged ZIP central directory');
    const method = view.getUint16(at + 10, true);
    let compressed = view.getUint32(at + 20, true);
    let size = view.getUint32(at + 24, true);
    const nameLen = view.getUint16(at + 28, true);
    const extraLen = view.getUint16(at + 30, true);
    const commentLen = view.getUint16(at + 32, true);
    let local = view.getUint32(at + 42, true);
    const name = new TextDecoder().decode(bytes.subarray(at + 46, at + 46 + nameLen));
    // zip64 extra field (id 1): the 64-bit values of the fields that read 0xFFFFFFFF
    for (let e = at + 46 + nameLen; e < at + 46 + nameLen + extraLen;) {
      const id = view.getUint16(e, true);
      const len = view.getUint16(e + 2, true);
      if (id === 1) {
        let p = e + 4;
        const big = () => { const v = Number(view.getBigUint64(p, true)); p += 8; return v; };
        if (size === 0xffffffff) size = big();
        if (compressed === 0xffffffff) compressed = big();
        if (local === 0xffffffff) local = big();
      }
      e += 4 + len;
    }
    entries.push({ name, method, compressed, size, local });
    at += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

async function entryBytes(bytes, entry) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(entry.local, true) !== 0x04034b50) throw new Error('damaged ZIP local header');
  const start = entry.local + 30 + view.getUint16(entry.local + 26, true) + view.getUint16(entry.local + 28, true);
  const data = bytes.subarray(start, start + entry.compressed);
  if (entry.method === 0) return data;
  if (entry.method !== 8) throw new Error(`ZIP compression method ${entry.method} is not supported`);
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
