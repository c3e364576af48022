/**
 * zstd through @bokuweb/zstd-wasm (libzstd compiled to WebAssembly). Call `initZstd()`
 * once before encoding or decoding.
 *
 * `frameContentSize` reads the size a frame declares (RFC 8878 section 3.1.1.1) before
 * anything is decompressed, so a decoder can refuse a body of the wrong size without
 * allocating it.
 */
import { init, compress as wasmCompress, decompress as wasmDecompress } from '@bokuweb/zstd-wasm';

let ready = null;

export function initZstd() {
  ready ??= init();
  return ready;
}

export function compress(data, level) {
  return wasmCompress(data, level);
}

/** The declared content size of the zstd frame at the start of `data`: a Number, -1 when
 * the frame does not declare it; throws Error when `data` does not start with a frame. */
export function frameContentSize(data) {
  if (data.length < 5 || data[0] !== 0x28 || data[1] !== 0xb5 || data[2] !== 0x2f || data[3] !== 0xfd) {
    throw new Error('not a zstd frame (magic)');
  }
  const fhd = data[4];
  if (fhd & 0x08) throw new Error('reserved bit set in the frame header');
  const singleSegment = (fhd >> 5) & 1;
  const fcsSize = [singleSegment ? 1 : 0, 2, 4, 8][fhd >> 6];
  const at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][fhd & 3];
  if (data.length < at + fcsSize) throw new Error('truncated zstd frame header');
  if (fcsSize === 0) return -1;
  let size = 0;
  for (let j = fcsSize - 1; j >= 0; j--) size = size * 256 + data[at + j];
  return fcsSize === 2 ? size + 256 : size;
}

/** Decompress one frame that declared `size` bytes; throws Error on damage or any other
 * size. */
export function decompress(data, size) {
  const out = wasmDecompress(data, { defaultHeapSize: size });
  if (out.length !== size) throw new Error(`frame decompressed to ${out.length} bytes, not ${size}`);
  return out;
}
