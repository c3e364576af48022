/**
 * Per-tensor codecs (docs/protocol.md section 3): the codec object, payload sizes, and
 * one tensor's encoding and decoding. Mirrors edge_sdk/protocol/codec.py and
 * quantization.py with binary32 arithmetic step for step, so that codecs without
 * encoder randomness give the Python encoder's bytes (the conformance vectors check it).
 *
 * Not supported here: random-k and rotation, whose positions and signs are defined by
 * numpy's generators; they raise `Unsupported`.
 */
import { BadPayload, MalformedHeader, NonFinite, Unsupported } from './errors.js';
import { pyFloat } from './pyjson.js';

export const QUANTIZERS = ['float32', 'float16', 'int8', 'int4', 'int2', 'int1'];
export const SPARSIFIERS = ['none', 'topk', 'randk'];
export const INDEX_CODINGS = ['gaps', 'blocks'];
export const INDEX_BLOCK = 256;

const DEFAULTS = Object.freeze({
  quantizer: 'float32', stochastic: true, chunk: 256, sparsifier: 'none', fraction: 1.0,
  rotate: false, rotation_block: 1024, index_coding: 'gaps',
});

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('edge-fl wire format code assumes a little-endian platform');
}

/** A validated codec from its fields (defaults as in CodecSpec); throws TypeError. */
export function makeCodec(fields = {}) {
  for (const key of Object.keys(fields)) {
    if (!(key in DEFAULTS)) throw new TypeError(`unknown codec field ${key}`);
  }
  const c = { ...DEFAULTS, ...fields };
  const types = { quantizer: 'string', stochastic: 'boolean', chunk: 'int', sparsifier: 'string',
    fraction: 'number', rotate: 'boolean', rotation_block: 'int', index_coding: 'string' };
  for (const [name, kind] of Object.entries(types)) {
    const v = c[name];
    const ok = kind === 'int' ? Number.isInteger(v) : typeof v === kind;  // eslint-disable-line valid-typeof
    if (!ok) throw new TypeError(`${name} must be ${kind}, got ${v}`);
  }
  if (!QUANTIZERS.includes(c.quantizer)) throw new TypeError(`quantizer must be one of ${QUANTIZERS}`);
  if (!SPARSIFIERS.includes(c.sparsifier)) throw new TypeError(`sparsifier must be one of ${SPARSIFIERS}`);
  if (!(c.fraction > 0 && c.fraction <= 1)) throw new TypeError(`fraction must be in (0, 1], got ${c.fraction}`);
  if (c.sparsifier === 'none' && c.fraction !== 1) throw new TypeError("fraction < 1 needs a sparsifier ('topk' or 'randk')");
  if (!INDEX_CODINGS.includes(c.index_coding)) throw new TypeError(`index_coding must be one of ${INDEX_CODINGS}`);
  if (c.index_coding !== 'gaps' && c.sparsifier !== 'topk') throw new TypeError("index_coding applies to top-k indices: use sparsifier='topk'");
  if (!(c.chunk >= 8 && c.chunk <= 65536)) throw new TypeError(`chunk must be in 8..65536, got ${c.chunk}`);
  const b = c.rotation_block;
  if (b < 2 || b > 65536 || (b & (b - 1))) throw new TypeError(`rotation_block must be a power of two in 2..65536, got ${b}`);
  return Object.freeze(c);
}

/** The SDK's default codec (edge_sdk.protocol.DEFAULT_CODEC). */
export const DEFAULT_CODEC = makeCodec({
  quantizer: 'int8', sparsifier: 'topk', fraction: 0.05, index_coding: 'blocks',
});

/** A codec from a parsed header (integers are BigInt there); throws MalformedHeader. */
export function codecFromJson(doc) {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new MalformedHeader('bad codec description: not an object');
  }
  const fields = {};
  for (const [k, v] of Object.entries(doc)) {
    if (k === 'chunk' || k === 'rotation_block') {
      if (typeof v !== 'bigint') throw new MalformedHeader(`bad codec description: ${k} must be an integer`);
      fields[k] = Number(v);
    } else if (k === 'fraction') {
      fields[k] = typeof v === 'bigint' ? Number(v) : v;
    } else fields[k] = v;
  }
  try {
    return makeCodec(fields);
  } catch (e) {
    throw new MalformedHeader(`bad codec description: ${e.message}`);
  }
}

/** The codec as the header carries it (edge_sdk's CodecSpec.to_json). */
export function codecToJson(c) {
  return { ...c, fraction: pyFloat(c.fraction) };
}

export function bitsOf(c) {
  return c.quantizer.startsWith('int') ? Number(c.quantizer.slice(3)) : null;
}

/** zstd level of a body of this codec (CodecSpec.zstd_level). */
export function zstdLevel(c) {
  return c.sparsifier === 'topk' && bitsOf(c) === 8 ? -1 : 3;
}

export function roundHalfEven(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

export function kept(c, n) {
  return c.sparsifier === 'none' ? n : Math.max(1, roundHalfEven(n * c.fraction));
}

export function levelsOf(bits) {
  return bits === 1 ? 2 : 2 ** bits - 1;
}

/** Sizes of one tensor's payload: k, m, index bytes, chunks, payload bytes, bits. */
export function layout(c, n) {
  const k = kept(c, n);
  let indexBytes = 0;
  if (c.sparsifier === 'topk') {
    indexBytes = c.index_coding === 'blocks' ? 2 * Math.ceil(n / INDEX_BLOCK) + k : 4 * k;
  }
  const m = c.rotate ? Math.ceil(k / c.rotation_block) * c.rotation_block : k;
  const bits = bitsOf(c);
  let chunks = 0;
  let values;
  if (bits === null) values = (c.quantizer === 'float32' ? 4 : 2) * m;
  else {
    chunks = Math.ceil(m / c.chunk);
    values = 4 * chunks + Math.ceil((m * bits) / 8);
  }
  return { k, m, indexBytes, chunks, payload: indexBytes + values, bits };
}

// -- float16 ---------------------------------------------------------------------------
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** binary32 -> binary16 bits, round to nearest even (numpy's astype(float16)). */
export function toHalf(x) {
  f32[0] = x;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rest > mid || (rest === mid && (half & 1))) half += 1;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1))) half += 1;
  return sign | half;
}

export function fromHalf(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

// -- quantization ----------------------------------------------------------------------
/** Per-chunk (a, b): a level l of chunk c means l * a[c] + b[c] (float32 [chunks] each). */
export function chunkAffine(scales, bits) {
  const step = Math.fround(2 / (levelsOf(bits) - 1));
  const a = new Float32Array(scales.length);
  const b = new Float32Array(scales.length);
  for (let i = 0; i < scales.length; i++) {
    a[i] = scales[i] * step;
    b[i] = -scales[i];
  }
  return { a, b };
}

/** levels uint8 [m] -> float32 [m], l * a_c + b_c in binary32 (two roundings, as numpy). */
export function affineChunks(levels, a, b, chunk) {
  const out = new Float32Array(levels.length);
  for (let j = 0; j < levels.length; j++) {
    const c = (j / chunk) | 0;
    out[j] = Math.fround(levels[j] * a[c]) + b[c];
  }
  return out;
}

/** values float32 [m] -> {levels uint8 [m], scales float32 [chunks]}. `random()` gives
 * uniform draws in [0, 1) for stochastic rounding (any generator conforms). */
export function quantizeChunks(x, bits, chunk, stochastic, random) {
  const L = levelsOf(bits);
  const half = Math.fround((L - 1) / 2);
  const m = x.length;
  const chunks = Math.ceil(m / chunk);
  const scales = new Float32Array(chunks);
  const levels = new Uint8Array(m);
  for (let c = 0; c < chunks; c++) {
    const lo = c * chunk;
    const hi = Math.min(m, lo + chunk);
    if (bits === 1 && !stochastic) {  // EF-signSGD: the mean magnitude, padding included
      let sum = 0;
      for (let j = lo; j < hi; j++) sum += Math.abs(x[j]);
      scales[c] = sum / chunk;
      for (let j = lo; j < hi; j++) levels[j] = x[j] >= 0 ? 1 : 0;
      continue;
    }
    let s = 0;
    for (let j = lo; j < hi; j++) s = Math.max(s, Math.abs(x[j]));
    scales[c] = s;
    const safe = s > 0 ? s : 1;
    for (let j = lo; j < hi; j++) {
      const u = Math.fround(Math.fround(Math.fround(x[j] / safe) + 1) * half);
      let l;
      if (stochastic) {
        const low = Math.floor(u);
        l = low + (Math.fround(random()) < Math.fround(u - low) ? 1 : 0);
      } else l = roundHalfEven(u);
      levels[j] = Math.min(L - 1, Math.max(0, l));
    }
  }
  return { levels, scales };
}

export function packBits(levels, bits) {
  if (bits === 8) return levels;
  const per = 8 / bits;
  const out = new Uint8Array(Math.ceil((levels.length * bits) / 8));
  for (let j = 0; j < levels.length; j++) out[(j / per) | 0] |= levels[j] << ((j % per) * bits);
  return out;
}

export function unpackBits(data, bits, m) {
  if (bits === 8) return data.subarray(0, m);
  const per = 8 / bits;
  const mask = (1 << bits) - 1;
  const out = new Uint8Array(m);
  for (let j = 0; j < m; j++) out[j] = (data[(j / per) | 0] >> ((j % per) * bits)) & mask;
  return out;
}

// -- top-k -------------------------------------------------------------------------------
/** The k positions of largest |x|, increasing (Int32Array [k]). Ties at the threshold go
 * to the lowest positions. */
export function topkIndices(x, k) {
  const n = x.length;
  const abs = new Float32Array(n);
  for (let j = 0; j < n; j++) abs[j] = Math.abs(x[j]);
  const threshold = abs.slice().sort()[n - k];
  let need = k;
  for (let j = 0; j < n; j++) if (abs[j] > threshold) need--;
  const idx = new Int32Array(k);
  let p = 0;
  for (let j = 0; j < n && p < k; j++) {
    if (abs[j] > threshold) idx[p++] = j;
    else if (abs[j] === threshold && need > 0) { idx[p++] = j; need--; }
  }
  return idx;
}

function encodeIndices(idx, n, coding) {
  const k = idx.length;
  if (coding === 'blocks') {
    const blocks = Math.ceil(n / INDEX_BLOCK);
    const out = new Uint8Array(2 * blocks + k);
    const counts = new Uint16Array(blocks);
    for (let j = 0; j < k; j++) {
      counts[(idx[j] / INDEX_BLOCK) | 0]++;
      out[2 * blocks + j] = idx[j] % INDEX_BLOCK;
    }
    out.set(new Uint8Array(counts.buffer), 0);
    return out;
  }
  const gaps = new Uint32Array(k);
  for (let j = 0; j < k; j++) gaps[j] = idx[j] - (j ? idx[j - 1] : 0);
  return new Uint8Array(gaps.buffer);
}

// -- one tensor --------------------------------------------------------------------------
/** x float32 [n] (not mutated) -> {payload: Uint8Array, reconstructed: float32 [n], what
 * the decoder will return (error feedback subtracts it)}. */
export function encodeTensor(x, c, random = Math.random) {
  if (c.sparsifier === 'randk' || c.rotate) {
    throw new Unsupported('random-k and rotation need numpy\'s generators; this client does not encode them');
  }
  const n = x.length;
  const { k, bits } = layout(c, n);
  let idx = null;
  let values = x;
  const parts = [];
  if (c.sparsifier === 'topk') {
    idx = topkIndices(x, k);
    parts.push(encodeIndices(idx, n, c.index_coding));
    values = new Float32Array(k);
    for (let j = 0; j < k; j++) values[j] = x[idx[j]];
  }
  let decoded;
  if (c.quantizer === 'float32') {
    parts.push(new Uint8Array(Float32Array.from(values).buffer));
    decoded = Float32Array.from(values);
  } else if (c.quantizer === 'float16') {
    const half = new Uint16Array(values.length);
    decoded = new Float32Array(values.length);
    for (let j = 0; j < values.length; j++) {
      half[j] = toHalf(values[j]);
      decoded[j] = fromHalf(half[j]);
    }
    parts.push(new Uint8Array(half.buffer));
  } else {
    const { levels, scales } = quantizeChunks(values, bits, c.chunk, c.stochastic, random);
    parts.push(new Uint8Array(scales.buffer), packBits(levels, bits));
    const { a, b } = chunkAffine(scales, bits);
    decoded = affineChunks(levels, a, b, c.chunk);
  }
  let reconstructed = decoded;
  if (idx !== null) {
    reconstructed = new Float32Array(n);
    for (let j = 0; j < k; j++) reconstructed[idx[j]] = decoded[j];
  }
  return { payload: concatBytes(parts), reconstructed };
}

/** Validate one tensor's payload and return its dense float32 [n] values. */
export function decodeTensor(payload, c, n, name = 'tensor') {
  if (c.sparsifier === 'randk' || c.rotate) {
    throw new Unsupported('random-k and rotation need numpy\'s generators; this client does not decode them');
  }
  const lay = layout(c, n);
  if (payload.length !== lay.payload) {
    throw new BadPayload(`tensor payload is ${payload.length} bytes, the codec implies ${lay.payload}`);
  }
  const { k, m, bits } = lay;
  let positions = null;
  if (c.sparsifier === 'topk') positions = decodeIndices(payload, n, k, c.index_coding);
  const data = payload.subarray(lay.indexBytes);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let values;
  if (bits === null) {
    values = new Float32Array(m);
    if (c.quantizer === 'float32') for (let j = 0; j < m; j++) values[j] = view.getFloat32(4 * j, true);
    else for (let j = 0; j < m; j++) values[j] = fromHalf(view.getUint16(2 * j, true));
    for (let j = 0; j < m; j++) {
      if (!Number.isFinite(values[j])) throw new NonFinite(`tensor '${name}' contains NaN or Inf`);
    }
  } else {
    const scales = new Float32Array(lay.chunks);
    for (let i = 0; i < lay.chunks; i++) {
      scales[i] = view.getFloat32(4 * i, true);
      if (!(scales[i] >= 0) || !Number.isFinite(scales[i])) {
        throw new BadPayload('chunk scales must be finite and non-negative');
      }
    }
    const levels = unpackBits(data.subarray(4 * lay.chunks), bits, m);
    if (bits !== 8) {
      const L = levelsOf(bits);
      for (let j = 0; j < m; j++) if (levels[j] >= L) throw new BadPayload('quantized level out of range');
    }
    const { a, b } = chunkAffine(scales, bits);
    values = affineChunks(levels, a, b, c.chunk);
  }
  if (positions === null) return values;
  const out = new Float32Array(n);
  for (let j = 0; j < k; j++) out[positions[j]] = values[j];
  return out;
}

function decodeIndices(payload, n, k, coding) {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const idx = new Float64Array(k);
  if (coding === 'gaps') {
    let at = 0;
    for (let j = 0; j < k; j++) {
      const gap = view.getUint32(4 * j, true);
      if (j > 0 && gap === 0) throw new BadPayload('top-k indices must be strictly increasing');
      at += gap;
      idx[j] = at;
    }
    if (k && idx[k - 1] >= n) throw new BadPayload('top-k index out of range');
    return idx;
  }
  const blocks = Math.ceil(n / INDEX_BLOCK);
  let total = 0;
  for (let i = 0; i < blocks; i++) total += view.getUint16(2 * i, true);
  if (total !== k) throw new BadPayload(`top-k block counts add up to ${total}, the codec keeps ${k}`);
  const offsets = payload.subarray(2 * blocks, 2 * blocks + k);
  let p = 0;
  for (let i = 0; i < blocks; i++) {
    const count = view.getUint16(2 * i, true);
    for (let j = 0; j < count; j++, p++) {
      if (j > 0 && offsets[p] <= offsets[p - 1]) {
        throw new BadPayload('top-k offsets must be strictly increasing within a block');
      }
      idx[p] = i * INDEX_BLOCK + offsets[p];
    }
  }
  const lastCount = view.getUint16(2 * (blocks - 1), true);
  if (lastCount && offsets[k - 1] >= n - INDEX_BLOCK * (blocks - 1)) {
    throw new BadPayload('top-k index out of range');
  }
  return idx;
}

export function concatBytes(parts) {
  let size = 0;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
