"""Per-chunk quantization to 8, 4, 2 or 1 bits, and bit packing.

A chunk of `chunk` values x with scale s = max |x| maps to L evenly spaced levels on
[-s, s]: L = 2^b - 1 for b >= 2 (symmetric, zero included: b = 2 gives {-s, 0, s}) and
L = 2 for b = 1 ({-s, s}). Stochastic rounding picks one of the two
neighbouring levels with probabilities that make the result unbiased (QSGD, Alistarh et
al. 2017; Suresh et al. 2017): the error is below one step, 2s / (L - 1). Nearest rounding
errs at most half a step. For b = 1 with nearest rounding the scale is the chunk's mean
|x| (EF-signSGD, Karimireddy et al. 2019): biased, but the L2-best single magnitude, and
error feedback removes the bias over rounds.
"""

from __future__ import annotations

import numpy as np

BITS = (1, 2, 4, 8)


def levels(bits: int) -> int:
    return 2 if bits == 1 else 2**bits - 1


def num_chunks(n: int, chunk: int) -> int:
    return -(-n // chunk)


def quantize_chunks(
    x: np.ndarray, bits: int, chunk: int, stochastic: bool, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """x float32 [n] (not mutated) -> (level indices uint8 [n], scales float32 [chunks])."""
    n_levels = levels(bits)
    padded = _pad(x, chunk).reshape(-1, chunk)
    if bits == 1 and not stochastic:
        scales = np.abs(padded).mean(axis=1)
        idx = (padded >= 0).astype(np.uint8)
        return idx.reshape(-1)[: len(x)], scales.astype(np.float32)
    scales = np.abs(padded).max(axis=1).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0)[:, None]
    # position on the grid: 0 .. levels - 1
    u = (padded / safe + 1.0) * ((n_levels - 1) / 2.0)
    if stochastic:
        low = np.floor(u)
        idx = low + (rng.random(u.shape, dtype=np.float32) < (u - low))
    else:
        idx = np.rint(u)
    idx = np.clip(idx, 0, n_levels - 1).astype(np.uint8)
    return idx.reshape(-1)[: len(x)], scales


def dequantize_chunks(
    idx: np.ndarray, scales: np.ndarray, bits: int, chunk: int, stochastic: bool
) -> np.ndarray:
    """Inverse of quantize_chunks: float32 [n] (value = idx * a_c + b_c per chunk c)."""
    a, b = chunk_affine(scales, bits, stochastic)
    return affine_chunks(idx, a, b, chunk)


def chunk_affine(scales: np.ndarray, bits: int, stochastic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk (a, b), float32 [chunks] each: a level l of chunk c means l * a_c + b_c."""
    scales = scales.astype(np.float32, copy=False)
    step = np.float32(2.0) if bits == 1 and not stochastic else np.float32(2.0 / (levels(bits) - 1))
    return scales * step, -scales


def affine_chunks(idx: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int) -> np.ndarray:
    """idx uint8 [n] (not mutated) -> float32 [n], idx * a_c + b_c in chunks of `chunk`."""
    n = len(idx)
    out = np.empty(n, np.float32)
    full = (n // chunk) * chunk  # whole chunks as one 2-D operation, the tail on its own
    if full:
        body = out[:full].reshape(-1, chunk)
        np.multiply(idx[:full].reshape(-1, chunk), a[: full // chunk, None], out=body)
        body += b[: full // chunk, None]
    if full < n:
        out[full:] = idx[full:] * a[-1] + b[-1]
    return out


def pack_bits(idx: np.ndarray, bits: int) -> bytes:
    """uint8 values < 2^bits -> packed little-endian bit fields (8 / bits per byte)."""
    if bits == 8:
        return idx.astype(np.uint8).tobytes()
    per = 8 // bits
    padded = np.zeros(-(-len(idx) // per) * per, np.uint8)
    padded[: len(idx)] = idx
    fields = padded.reshape(-1, per).astype(np.uint16)
    shifts = np.arange(per, dtype=np.uint16) * bits
    return (fields << shifts).sum(axis=1).astype(np.uint8).tobytes()


def unpack_bits(data: bytes, bits: int, n: int) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    if bits == 8:
        return raw[:n]
    per = 8 // bits
    shifts = np.arange(per, dtype=np.uint8) * bits
    mask = np.uint8(2**bits - 1)
    return ((raw[:, None] >> shifts) & mask).reshape(-1)[:n]


def packed_size(n: int, bits: int) -> int:
    return -(-n * bits // 8)


def _pad(x: np.ndarray, chunk: int) -> np.ndarray:
    n = len(x)
    total = num_chunks(n, chunk) * chunk
    if total == n:
        return x
    out = np.zeros(total, x.dtype)
    out[:n] = x
    return out
