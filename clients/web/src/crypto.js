/**
 * SHA-256 and Ed25519 (RFC 8032) for the wire format: @noble/hashes and @noble/ed25519
 * (audited, dependency-free, synchronous). Keys are raw 32-byte private keys (the RFC's
 * seed) and raw 32-byte public keys, as in edge_sdk/protocol/signing.py.
 */
import * as ed from '@noble/ed25519';
import { sha256 as nobleSha256, sha512 } from '@noble/hashes/sha2.js';

ed.hashes.sha512 = sha512;

export const SIGNATURE_BYTES = 64;

export function sha256(data) {
  return nobleSha256(data);
}

/** A new private key, 32 random bytes from the platform's CSPRNG (keep it secret). */
export function generateSigningKey() {
  return ed.utils.randomSecretKey();
}

export function publicKeyOf(privateKey) {
  return ed.getPublicKey(privateKey);
}

export function sign(privateKey, data) {
  return ed.sign(data, privateKey);
}

/** True when `signature` is `publicKey`'s over `data`; strict RFC 8032 checks, as
 * libsodium (the server) applies them. */
export function verify(publicKey, data, signature) {
  if (signature.length !== SIGNATURE_BYTES || publicKey.length !== 32) return false;
  try {
    return ed.verify(signature, data, publicKey, { zip215: false });
  } catch {
    return false;
  }
}
