/**
 * Errors of the wire format, one class per code of docs/protocol.md section 3.3, as in
 * edge_sdk/protocol/errors.py:
 *
 *   ProtocolError (Error)          code "protocol_error"
 *   ├── Truncated                  "truncated"
 *   ├── BadMagic                   "bad_magic"
 *   ├── UnsupportedVersion         "unsupported_version"
 *   ├── TooLarge                   "too_large"
 *   ├── MalformedHeader            "malformed_header"
 *   ├── BadChecksum                "bad_checksum"
 *   ├── BadSignature               "bad_signature"
 *   ├── ShapeMismatch              "shape_mismatch"
 *   ├── NonFinite                  "non_finite"
 *   ├── BadPayload                 "bad_payload"
 *   └── Unsupported                "unsupported": a valid message this client cannot
 *                                  decode (random-k, rotation: numpy's generators)
 */
export class ProtocolError extends Error {
  get code() { return 'protocol_error'; }
}

function kind(name, code) {
  const cls = class extends ProtocolError {
    get code() { return code; }
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

export const Truncated = kind('Truncated', 'truncated');
export const BadMagic = kind('BadMagic', 'bad_magic');
export const UnsupportedVersion = kind('UnsupportedVersion', 'unsupported_version');
export const TooLarge = kind('TooLarge', 'too_large');
export const MalformedHeader = kind('MalformedHeader', 'malformed_header');
export const BadChecksum = kind('BadChecksum', 'bad_checksum');
export const BadSignature = kind('BadSignature', 'bad_signature');
export const ShapeMismatch = kind('ShapeMismatch', 'shape_mismatch');
export const NonFinite = kind('NonFinite', 'non_finite');
export const BadPayload = kind('BadPayload', 'bad_payload');
export const Unsupported = kind('Unsupported', 'unsupported');
