"""Ed25519 signatures (RFC 8032) via `cryptography`: devices sign updates with a key whose
public half they registered at enrollment."""
from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import BadSignature

SIGNATURE_BYTES = 64


def generate_signing_key() -> bytes:
    """A new private key, 32 raw bytes (keep it in the device's keystore)."""
    from cryptography.hazmat.primitives import serialization
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def public_key_of(private_key: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return Ed25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(private_key: bytes, data: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(private_key).sign(data)


def verify(public_key: bytes, data: bytes, signature: bytes) -> None:
    """Raise BadSignature unless `signature` is `public_key`'s over `data`."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise BadSignature("the signature does not match the device's registered key") from None
