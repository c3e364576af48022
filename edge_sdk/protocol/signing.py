"""Ed25519 signatures (RFC 8032) via libsodium (PyNaCl): devices sign updates with a key
whose public half they registered at enrollment.

libsodium rather than OpenSSL because the server verifies one signature per update on its
hottest path, and libsodium verifies faster (docs/benchmarks.md). Ed25519 is
deterministic, so both produce the same signatures from the same 32-byte private key (the
RFC's seed); libsodium is the stricter verifier (it also refuses small-order keys and
non-canonical encodings, which honest devices never produce).
"""

from __future__ import annotations

import os

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from .errors import BadSignature

SIGNATURE_BYTES = 64
PRIVATE_KEY_BYTES = 32


def generate_signing_key() -> bytes:
    """A new private key, 32 raw bytes (keep it in the device's keystore)."""
    return os.urandom(PRIVATE_KEY_BYTES)


def public_key_of(private_key: bytes) -> bytes:
    return _keypair(private_key)[0]


def sign(private_key: bytes, data: bytes) -> bytes:
    return crypto_sign(data, _keypair(private_key)[1])[:SIGNATURE_BYTES]


def verify(public_key: bytes, data: bytes, signature: bytes) -> None:
    """Raise BadSignature unless `signature` is `public_key`'s over `data`."""
    if len(signature) != SIGNATURE_BYTES or len(public_key) != 32:
        raise BadSignature("the signature does not match the device's registered key")
    try:
        crypto_sign_open(signature + data, public_key)
    except (BadSignatureError, ValueError, TypeError):
        raise BadSignature("the signature does not match the device's registered key") from None


def _keypair(private_key: bytes) -> tuple[bytes, bytes]:
    """(public key, libsodium's 64-byte secret key) of a 32-byte private key."""
    if not isinstance(private_key, bytes) or len(private_key) != PRIVATE_KEY_BYTES:
        raise ValueError("an Ed25519 private key is 32 raw bytes")
    return crypto_sign_seed_keypair(private_key)
