"""Secure aggregation after Bonawitz et al. 2017 ("Practical Secure Aggregation for
Privacy-Preserving Machine Learning"): the server learns the sum of the devices' vectors
and nothing else, and the sum survives devices dropping out after they sent their masked
input.

Per device u: two X25519 key pairs (c: to encrypt shares to peers, s: to agree pairwise
mask seeds), a random self-mask seed b_u. u Shamir-shares b_u and its s private key
(t of n) to every peer, encrypted with AES-GCM under the pairwise c key, routed through
the server. u sends y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv)
(mod 2^32, x_u fixed-point). Survivors then reveal, for each peer, the b share of a peer
that sent its input and the s-key share of one that did not; with t shares the server
removes every self mask and the pairwise masks of the dropped, and the rest cancel.

Vectors are quantized to fixed point (`FixedPoint`) so modular sums are exact; the
decoded sum is within n * step / 2 of the real sum. Group sizes of tens to hundreds of
devices per round (SecAgg+ style groups) keep the quadratic share traffic small.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import BadPayload

PRIME = 2**521 - 1  # Mersenne prime: room for 32-byte secrets in one field element
MOD_BITS = 32


@dataclass(frozen=True)
class FixedPoint:
    """x -> round(x * 2^frac_bits) mod 2^32; clip bounds |x| so n summands cannot wrap."""

    clip: float = 1.0
    frac_bits: int = 16

    def encode(self, x: np.ndarray) -> np.ndarray:
        q = np.rint(np.clip(x, -self.clip, self.clip) * (1 << self.frac_bits)).astype(np.int64)
        return (q % (1 << MOD_BITS)).astype(np.uint32)

    def decode_sum(self, total: np.ndarray) -> np.ndarray:
        signed = total.astype(np.int64)
        signed[signed >= 1 << (MOD_BITS - 1)] -= 1 << MOD_BITS
        return (signed / (1 << self.frac_bits)).astype(np.float32)


def _raw(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _agree(private: X25519PrivateKey, public_raw: bytes, label: bytes) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(public_raw))
    return hashlib.sha256(label + shared).digest()


def prg(seed: bytes, length: int) -> np.ndarray:
    """A mask vector (uint32 [length]) expanded from a 32-byte seed."""
    return (
        np.random.Generator(np.random.PCG64(int.from_bytes(seed, "little")))
        .integers(0, 1 << MOD_BITS, length, dtype=np.uint64)
        .astype(np.uint32)
    )


# -- Shamir secret sharing over GF(PRIME) ---------------------------------------------------
def share_secret(secret: bytes, threshold: int, xs: list[int]) -> dict[int, int]:
    s = int.from_bytes(secret, "big")
    coefficients = [s] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: sum(c * pow(x, i, PRIME) for i, c in enumerate(coefficients)) % PRIME for x in xs}


def reconstruct_secret(shares: dict[int, int], length: int = 32) -> bytes:
    """Lagrange interpolation at 0 of `shares` {x: y} (at least the threshold of them)."""
    total = 0
    for xi, yi in shares.items():
        num = den = 1
        for xj in shares:
            if xj != xi:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total.to_bytes(length, "big")


# -- the device ---------------------------------------------------------------------------
class SecAggClient:
    """One device in one SecAgg group; `index` >= 1 is its Shamir x-coordinate."""

    def __init__(self, index: int, threshold: int, codec: FixedPoint):
        self.index, self.threshold, self.codec = index, threshold, codec
        self._c = X25519PrivateKey.generate()
        self._s = X25519PrivateKey.generate()
        self._b = secrets.token_bytes(32)
        self._peers: dict[int, tuple[bytes, bytes]] = {}
        self._received: dict[int, tuple[int, int]] = {}

    def assign(self, index: int, threshold: int) -> None:
        """Over a network the server numbers the group's devices as they advertise, so
        the index and threshold may arrive after the keys were made."""
        self.index, self.threshold = index, threshold

    def advertise(self) -> tuple[bytes, bytes]:
        """Round 0: (c public key, s public key)."""
        return _raw(self._c.public_key()), _raw(self._s.public_key())

    def share_keys(self, peers: dict[int, tuple[bytes, bytes]]) -> dict[int, bytes]:
        """Round 1: encrypted (b share, s-key share) for every peer, keyed by recipient."""
        self._peers = dict(peers)
        xs = sorted(peers)
        b_shares = share_secret(self._b, self.threshold, xs)
        s_secret = self._s.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        s_shares = share_secret(s_secret, self.threshold, xs)
        out = {}
        for v in xs:
            if v == self.index:
                self._received[v] = (b_shares[v], s_shares[v])
                continue
            key = _agree(self._c, peers[v][0], b"edge-fl secagg share key")
            plain = f"{self.index},{v},{b_shares[v]},{s_shares[v]}".encode()
            nonce = secrets.token_bytes(12)
            out[v] = nonce + AESGCM(key).encrypt(nonce, plain, None)
        return out

    def masked_input(self, x: np.ndarray, ciphertexts: dict[int, bytes]) -> np.ndarray:
        """Round 2: keep the shares addressed to us, return y = x + masks (uint32 [n])."""
        for u, blob in ciphertexts.items():
            key = _agree(self._c, self._peers[u][0], b"edge-fl secagg share key")
            try:
                plain = AESGCM(key).decrypt(blob[:12], blob[12:], None).decode()
            except Exception:  # noqa: BLE001 - any failure means a forged share
                raise BadPayload(f"share from device {u} failed authentication") from None
            sender, recipient, b_share, s_share = plain.split(",")
            if int(sender) != u or int(recipient) != self.index:
                raise BadPayload("a share was routed to the wrong device")
            self._received[u] = (int(b_share), int(s_share))
        y = self.codec.encode(x.reshape(-1)) + prg(self._b, x.size)
        active = set(ciphertexts)  # the peers that shared their keys (round 1 survivors)
        for v, (_, s_pk) in self._peers.items():
            if v == self.index or v not in active:
                continue
            mask = prg(_agree(self._s, s_pk, b"edge-fl secagg mask"), x.size)
            y = y + mask if self.index < v else y - mask  # uint32 arithmetic wraps mod 2^32
        return y

    def reveal(self, survivors: set[int], dropped: set[int]) -> dict[int, tuple[str, int]]:
        """Round 3: the b share of each survivor and the s-key share of each dropped peer
        (never both for one peer: that would unmask it)."""
        if survivors & dropped:
            raise BadPayload("a device cannot be both a survivor and dropped")
        out = {}
        for v, (b_share, s_share) in self._received.items():
            if v in survivors:
                out[v] = ("b", b_share)
            elif v in dropped:
                out[v] = ("s", s_share)
        return out


# -- the server -------------------------------------------------------------------------
class SecAggServer:
    """Routes messages and unmasks the sum; it only ever holds masked vectors, encrypted
    shares, and the shares devices reveal in round 3."""

    def __init__(self, threshold: int, codec: FixedPoint):
        self.threshold, self.codec = threshold, codec
        self.keys: dict[int, tuple[bytes, bytes]] = {}
        self.mailbox: dict[int, dict[int, bytes]] = {}
        self.shared: set[int] = set()  # devices that sent their shares (round 1)
        self.survivors: set[int] = set()  # devices whose masked input arrived (round 2)
        self.total: np.ndarray | None = None  # their running sum mod 2^32: nothing per device

    def collect_keys(self, keys: dict[int, tuple[bytes, bytes]]) -> dict[int, tuple[bytes, bytes]]:
        if len(keys) < self.threshold:
            raise BadPayload("fewer devices than the threshold: the round cannot be secure")
        self.keys = dict(keys)
        return self.keys

    def route_shares(self, sender: int, ciphertexts: dict[int, bytes]) -> None:
        self.shared.add(sender)
        for recipient, blob in ciphertexts.items():
            self.mailbox.setdefault(recipient, {})[sender] = blob

    def shares_for(self, recipient: int) -> dict[int, bytes]:
        return {u: blob for u, blob in self.mailbox.get(recipient, {}).items() if u in self.shared}

    def collect_masked(self, sender: int, y: np.ndarray) -> None:
        if sender not in self.shared or sender in self.survivors:
            raise BadPayload(f"device {sender} did not share keys or already sent its input")
        self.total = y.copy() if self.total is None else self.total + y  # wraps mod 2^32
        self.survivors.add(sender)

    def unmask(self, reveals: dict[int, dict[int, tuple[str, int]]], length: int) -> np.ndarray:
        """The float32 sum of the survivors' vectors, given round-3 reveals (at least
        `threshold` devices answered)."""
        survivors = self.survivors
        if len(reveals) < self.threshold:
            raise BadPayload("fewer reveals than the threshold")
        total = np.zeros(length, np.uint32) if self.total is None else self.total.copy()
        for u in self.shared:
            shares = {x: r[u][1] for x, r in reveals.items() if u in r}
            if len(shares) < self.threshold:
                raise BadPayload(f"not enough shares to unmask device {u}")
            kinds = {r[u][0] for r in reveals.values() if u in r}
            if u in survivors:
                if kinds != {"b"}:
                    raise BadPayload(f"survivor {u}: only self-mask shares may be revealed")
                total = total - prg(reconstruct_secret(shares), length)
            else:
                if kinds != {"s"}:
                    raise BadPayload(f"dropped {u}: only key shares may be revealed")
                s_private = X25519PrivateKey.from_private_bytes(reconstruct_secret(shares))
                for v in survivors - {u}:
                    mask = prg(_agree(s_private, self.keys[v][1], b"edge-fl secagg mask"), length)
                    # v added +mask when v < u and -mask when v > u: undo it
                    total = total - mask if v < u else total + mask
        return self.codec.decode_sum(total)


# -- what a device sums, and the bytes of a masked input --------------------------------------
MASKED_MAGIC = b"EFLM"


def secagg_input(delta: dict[str, np.ndarray], names: list[str], weight: float) -> np.ndarray:
    """float32 [n + 1]: weight * delta (tensors flattened in `names` order), then weight;
    their sum over devices is (sum w_i delta_i, sum w_i), which gives the weighted mean."""
    parts = [np.asarray(delta[k], np.float32).reshape(-1) * np.float32(weight) for k in names]
    return np.concatenate(parts + [np.array([weight], np.float32)])


def split_secagg_sum(total: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> tuple[dict, float]:
    """Inverse layout of secagg_input for a summed vector: ({name: sum w delta}, sum w)."""
    out, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) if shape else 1
        out[name] = total[offset : offset + n].reshape(shape)
        offset += n
    if offset + 1 != len(total):
        raise BadPayload(f"a secagg sum of {len(total)} values does not fit the model's shapes")
    return out, float(total[offset])


def encode_masked_input(y: np.ndarray) -> bytes:
    """uint32 [n] -> magic, n (uint64 LE), values (uint32 LE). Masked values look uniformly
    random, so compressing them would only cost time."""
    y = np.ascontiguousarray(y, "<u4")
    return MASKED_MAGIC + len(y).to_bytes(8, "little") + y.tobytes()


def decode_masked_input(data: bytes, length: int) -> np.ndarray:
    if len(data) < 12 or data[:4] != MASKED_MAGIC:
        raise BadPayload("not a masked input (bad magic)")
    n = int.from_bytes(data[4:12], "little")
    if n != length or len(data) != 12 + 4 * n:
        raise BadPayload(f"a masked input for this model holds {length} values")
    return np.frombuffer(data, "<u4", n, 12).astype(np.uint32)
