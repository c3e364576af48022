"""Ed25519 through libsodium: RFC 8032's test vectors, interoperability with OpenSSL (the
`cryptography` package), and refusals."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_sdk.protocol import BadSignature, generate_signing_key, public_key_of, sign, verify

# RFC 8032, section 7.1, TEST 1 and TEST 2: (private key, public key, message, signature)
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
        "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e"
        "458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize("private, public, message, signature", RFC8032)
def test_rfc8032_vectors(private, public, message, signature):
    private, public, message, signature = map(bytes.fromhex, (private, public, message, signature))
    assert public_key_of(private) == public
    assert sign(private, message) == signature
    verify(public, message, signature)


def test_signatures_interoperate_with_openssl():
    key = generate_signing_key()
    message = b"prefix, header and checksum of an update" * 3
    openssl = Ed25519PrivateKey.from_private_bytes(key)
    public = openssl.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert public_key_of(key) == public
    assert sign(key, message) == openssl.sign(message)  # Ed25519 is deterministic
    verify(public, message, openssl.sign(message))
    Ed25519PublicKey.from_public_bytes(public).verify(sign(key, message), message)


def test_altered_message_signature_or_key_is_refused():
    key = generate_signing_key()
    public, message = public_key_of(key), b"an update's signed part"
    signature = sign(key, message)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    other = public_key_of(generate_signing_key())
    for args in [
        (public, message + b"!", signature),
        (public, message, flipped),
        (other, message, signature),
        (public, message, signature[:63]),
        (public[:31], message, signature),
    ]:
        with pytest.raises(BadSignature):
            verify(*args)


def test_private_key_must_be_32_bytes():
    with pytest.raises(ValueError, match="32 raw bytes"):
        sign(b"short", b"message")
