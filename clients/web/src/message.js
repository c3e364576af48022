/**
 * The wire format's messages (docs/protocol.md sections 1-3): updates (device -> server)
 * and models (server -> device). Mirrors edge_sdk/protocol/message.py, checks in the same
 * order. Call `await initZstd()` once first.
 */
import { codecFromJson, codecToJson, concatBytes, decodeTensor, encodeTensor, layout,
  zstdLevel } from './codec.js';
import { SIGNATURE_BYTES, sha256, sign, verify } from './crypto.js';
import { BadChecksum, BadMagic, BadPayload, BadSignature, MalformedHeader, NonFinite,
  ShapeMismatch, TooLarge, Truncated, UnsupportedVersion } from './errors.js';
import { dumps, loads, pyFloat } from './pyjson.js';
import { compress, decompress, frameContentSize } from './zstd.js';

export const FORMAT_VERSION = 1;
export const UPDATE_MAGIC = 'EFLU';
export const MODEL_MAGIC = 'EFLM';
const PREFIX = 16;
const CHECKSUM = 32;
const SIGNED = 1;
const META_FIELDS = ['task_id', 'model_id', 'model_version', 'device_id', 'idempotency_key',
  'num_examples', 'metrics'];

export const DEFAULT_LIMITS = Object.freeze({ max_message_bytes: 64 * 2 ** 20, max_header_bytes: 64 * 2 ** 10 });

const ascii = (s) => Uint8Array.from(s, (ch) => ch.charCodeAt(0));
const sizeOf = (shape) => shape.reduce((a, b) => a * b, 1);

// -- encoding ----------------------------------------------------------------------------
/**
 * Encode and sign a delta (`{name: Float32Array}` in C order; not mutated) for the specs
 * (`[{name, shape}]`, the manifest's parameter order). With `feedback` (ErrorFeedback)
 * its residual is added first and replaced by this round's compression error.
 * options: codec (default the SDK's), level (zstd; default the codec's), signingKey
 * (32 bytes, or null: unsigned), seed (BigInt in [0, 2^62); default drawn), random (draws
 * in [0, 1) for stochastic rounding), feedback.
 */
export function encodeUpdate(delta, specs, meta, options) {
  const { codec, signingKey = null, feedback = null, random = Math.random } = options;
  const level = options.level ?? zstdLevel(codec);
  checkMeta(meta);
  checkNames(delta, specs);
  for (const [name, v] of Object.entries(delta)) {
    for (let j = 0; j < v.length; j++) {
      if (!Number.isFinite(v[j])) throw new NonFinite(`tensor '${name}' contains NaN or Inf`);
    }
  }
  const work = feedback ? feedback.corrected(delta) : delta;
  const seed = options.seed ?? randomSeed();
  const payloads = [];
  const reconstructed = {};
  for (const { name } of specs) {
    const { payload, reconstructed: rec } = encodeTensor(work[name], codec, random);
    payloads.push(payload);
    reconstructed[name] = rec;
  }
  if (feedback) feedback.remember(work, reconstructed);
  const metrics = Object.fromEntries(Object.entries(meta.metrics ?? {}).map(([k, v]) => [k, pyFloat(v)]));
  const header = { meta: { ...meta, metrics }, codec: codecToJson(codec), seed: BigInt(seed), local_dp: null };
  return frame(UPDATE_MAGIC, dumps(header), payloads, signingKey, level);
}

/** A model download: float32 parameters in spec order (what the server sends). */
export function encodeParameters(parameters, specs, modelId, modelVersion, signingKey = null) {
  checkNames(parameters, specs);
  const payloads = specs.map(({ name }) => new Uint8Array(Float32Array.from(parameters[name]).buffer));
  return frame(MODEL_MAGIC, dumps({ model_id: modelId, model_version: modelVersion }), payloads, signingKey, 3);
}

function randomSeed() {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return (BigInt(words[0] & 0x3fffffff) << 32n) | BigInt(words[1]);
}

function frame(magic, headerText, payloads, signingKey, level) {
  const head = ascii(headerText);  // dumps escapes every non-ASCII character
  const body = compress(concatBytes(payloads), level);
  const signed = signingKey !== null && signingKey !== undefined;
  const end = PREFIX + head.length + body.length;
  const out = new Uint8Array(end + CHECKSUM + (signed ? SIGNATURE_BYTES : 0));
  const view = new DataView(out.buffer);
  out.set(ascii(magic), 0);
  view.setUint16(4, FORMAT_VERSION, true);
  view.setUint16(6, signed ? SIGNED : 0, true);
  view.setUint32(8, head.length, true);
  view.setUint32(12, body.length, true);
  out.set(head, PREFIX);
  out.set(body, PREFIX + head.length);
  const checksum = sha256(out.subarray(0, end));
  out.set(checksum, end);
  if (signed) {
    const signedPart = concatBytes([out.subarray(0, PREFIX + head.length), checksum]);
    out.set(sign(signingKey, signedPart), end + CHECKSUM);
  }
  return out;
}

// -- decoding ----------------------------------------------------------------------------
function unframe(data, magic, limits) {
  if (!(data instanceof Uint8Array)) throw new BadPayload('a message is bytes (Uint8Array)');
  if (data.length > limits.max_message_bytes) {
    throw new TooLarge(`message of ${data.length} bytes exceeds ${limits.max_message_bytes}`);
  }
  if (data.length < PREFIX + CHECKSUM) {
    throw new Truncated(`message of ${data.length} bytes is shorter than its fixed fields`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const gotMagic = String.fromCharCode(...data.subarray(0, 4));
  if (gotMagic !== magic) throw new BadMagic(`magic ${JSON.stringify(gotMagic)}, expected ${magic}`);
  const version = view.getUint16(4, true);
  if (version !== FORMAT_VERSION) {
    throw new UnsupportedVersion(`format version ${version}; this side reads ${FORMAT_VERSION}`);
  }
  const flags = view.getUint16(6, true);
  if (flags & ~SIGNED) throw new MalformedHeader(`unknown flags 0x${flags.toString(16)}`);
  const headLen = view.getUint32(8, true);
  const bodyLen = view.getUint32(12, true);
  if (headLen > limits.max_header_bytes) {
    throw new TooLarge(`header of ${headLen} bytes exceeds ${limits.max_header_bytes}`);
  }
  const end = PREFIX + headLen + bodyLen;
  const expected = end + CHECKSUM + (flags & SIGNED ? SIGNATURE_BYTES : 0);
  if (data.length < expected) throw new Truncated(`message is ${data.length} bytes, its lengths say ${expected}`);
  if (data.length > expected) throw new BadPayload(`${data.length - expected} unexpected bytes after the message`);
  const checksum = data.subarray(end, end + CHECKSUM);
  const actual = sha256(data.subarray(0, end));
  if (actual.some((b, i) => b !== checksum[i])) {
    throw new BadChecksum('checksum mismatch: the message was altered or damaged');
  }
  let header;
  try {
    header = loads(new TextDecoder('utf-8', { fatal: true }).decode(data.subarray(PREFIX, PREFIX + headLen)));
  } catch (e) {
    throw new MalformedHeader(`header is not JSON: ${e.message}`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new MalformedHeader('header must be a JSON object');
  }
  return {
    header,
    body: data.subarray(PREFIX + headLen, end),
    signedPart: concatBytes([data.subarray(0, PREFIX + headLen), checksum]),
    signature: flags & SIGNED ? data.subarray(end + CHECKSUM) : null,
  };
}

function checkSignature(frameParts, publicKey, what) {
  if (publicKey === null || publicKey === undefined) return;
  if (frameParts.signature === null) throw new BadSignature(`the ${what} is unsigned; a signature is required`);
  if (!verify(publicKey, frameParts.signedPart, frameParts.signature)) {
    throw new BadSignature("the signature does not match the device's registered key");
  }
}

/**
 * Verify and decode an update. With `publicKey` the signature is required and checked
 * before any tensor is read. Returns {meta, codec, seed (BigInt), localDp, tensors:
 * {name: Float32Array}}; throws a ProtocolError subclass for any bad input.
 */
export function decodeUpdate(data, specs, { publicKey = null, limits = DEFAULT_LIMITS } = {}) {
  const f = unframe(data, UPDATE_MAGIC, limits);
  const meta = readMeta(f.header.meta);
  checkSignature(f, publicKey, 'update');
  const codec = codecFromJson(f.header.codec);
  const { seed } = f.header;
  if (typeof seed !== 'bigint' || seed < 0n || seed >= 2n ** 62n) {
    throw new MalformedHeader('seed must be an integer in [0, 2^62)');
  }
  const localDp = f.header.local_dp ?? null;
  if (localDp !== null && (typeof localDp !== 'object' || Array.isArray(localDp))) {
    throw new MalformedHeader('local_dp must be an object or null');
  }
  const sizes = specs.map((s) => layout(codec, sizeOf(s.shape)).payload);
  const raw = decompressBody(f.body, sizes.reduce((a, b) => a + b, 0));
  const tensors = {};
  let at = 0;
  specs.forEach((s, i) => {
    tensors[s.name] = decodeTensor(raw.subarray(at, at + sizes[i]), codec, sizeOf(s.shape), s.name);
    at += sizes[i];
  });
  return { meta, codec, seed, localDp, tensors };
}

/** ({model_id, model_version}, {name: Float32Array}) of a model download. */
export function decodeParameters(data, specs, { publicKey = null, limits = DEFAULT_LIMITS } = {}) {
  const f = unframe(data, MODEL_MAGIC, limits);
  checkSignature(f, publicKey, 'model');
  const { model_id: modelId, model_version: version } = f.header;
  if (typeof modelId !== 'string' || typeof version !== 'bigint') {
    throw new MalformedHeader('a model header has a string model_id and an int model_version');
  }
  const sizes = specs.map((s) => 4 * sizeOf(s.shape));
  const raw = decompressBody(f.body, sizes.reduce((a, b) => a + b, 0));
  const parameters = {};
  let at = 0;
  specs.forEach((s, i) => {
    const values = new Float32Array(raw.buffer.slice(raw.byteOffset + at, raw.byteOffset + at + sizes[i]));
    for (let j = 0; j < values.length; j++) {
      if (!Number.isFinite(values[j])) throw new NonFinite(`tensor '${s.name}' contains NaN or Inf`);
    }
    parameters[s.name] = values;
    at += sizes[i];
  });
  return { header: { model_id: modelId, model_version: Number(version) }, parameters };
}

function decompressBody(body, size) {
  let declared;
  try {
    declared = frameContentSize(body);
  } catch (e) {
    throw new BadPayload(`body is not a valid zstd frame: ${e.message}`);
  }
  if (declared !== size) {
    throw new ShapeMismatch(`the body holds ${declared} bytes of tensors; the model's shapes and codec need ${size}`);
  }
  try {
    return decompress(body, size);
  } catch (e) {
    throw new BadPayload(`body is not a valid zstd frame: ${e.message}`);
  }
}

function readMeta(doc) {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)
      || Object.keys(doc).length !== META_FIELDS.length || !META_FIELDS.every((k) => k in doc)) {
    throw new MalformedHeader(`update metadata must have exactly the fields ${META_FIELDS}`);
  }
  const meta = { ...doc };
  for (const name of ['model_version', 'num_examples']) {
    if (typeof meta[name] !== 'bigint') throw new MalformedHeader(`${name} must be a non-negative integer`);
    meta[name] = Number(meta[name]);
  }
  if (meta.metrics !== null && typeof meta.metrics === 'object' && !Array.isArray(meta.metrics)) {
    meta.metrics = Object.fromEntries(Object.entries(meta.metrics).map(
      ([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v]));
  }
  checkMeta(meta);
  return meta;
}

/** UpdateMeta.validate: throws MalformedHeader. */
export function checkMeta(meta) {
  for (const name of ['task_id', 'model_id', 'device_id', 'idempotency_key']) {
    const v = meta[name];
    if (typeof v !== 'string' || !([...v].length > 0 && [...v].length <= 256)) {
      throw new MalformedHeader(`${name} must be a non-empty string of <= 256 chars`);
    }
  }
  for (const name of ['model_version', 'num_examples']) {
    if (!Number.isInteger(meta[name]) || meta[name] < 0) {
      throw new MalformedHeader(`${name} must be a non-negative integer`);
    }
  }
  if (meta.num_examples < 1) throw new MalformedHeader('num_examples must be >= 1');
  const m = meta.metrics;
  if (m === null || typeof m !== 'object' || Array.isArray(m) || Object.keys(m).length > 32
      || !Object.values(m).every((v) => (typeof v === 'number' && Number.isFinite(v)) || typeof v === 'boolean')) {
    throw new MalformedHeader('metrics must map at most 32 names to finite numbers');
  }
}

function checkNames(tensors, specs) {
  const names = specs.map((s) => s.name);
  const got = Object.keys(tensors);
  if (got.length !== names.length || !names.every((n) => n in tensors)) {
    throw new ShapeMismatch(`tensors ${got.sort()} differ from the model's ${names}`);
  }
  for (const s of specs) {
    if (tensors[s.name].length !== sizeOf(s.shape)) {
      throw new ShapeMismatch(`tensor '${s.name}' has ${tensors[s.name].length} values, the model says ${s.shape}`);
    }
  }
}
