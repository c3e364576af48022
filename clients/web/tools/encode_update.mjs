// Encodes one update with this client, for cross-language tests (tests/clients/): reads
// {delta: {name: f32 hex}, specs, meta, codec, seed (decimal string), private_key (hex),
// feedback_in?} as JSON on stdin, writes {message, feedback_out?} (hex) on stdout.
import { readFileSync } from 'node:fs';

import { makeCodec } from '../src/codec.js';
import { ErrorFeedback } from '../src/error_feedback.js';
import { encodeUpdate } from '../src/message.js';
import { initZstd } from '../src/zstd.js';

const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
const toHex = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');
const arrays = (doc) => Object.fromEntries(Object.entries(doc).map(([k, v]) => [k, new Float32Array(hex(v).buffer)]));

const job = JSON.parse(readFileSync(0, 'utf8'));
await initZstd();
const feedback = job.feedback_in ? new ErrorFeedback(arrays(job.feedback_in)) : null;
const message = encodeUpdate(arrays(job.delta), job.specs, job.meta, {
  codec: makeCodec(job.codec), seed: BigInt(job.seed), signingKey: hex(job.private_key), feedback,
});
const out = { message: toHex(message) };
if (feedback) out.feedback_out = Object.fromEntries(Object.entries(feedback.residual).map(([k, v]) => [k, toHex(v)]));
process.stdout.write(JSON.stringify(out));
