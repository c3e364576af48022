/** edge-fl's device runtime for browsers and Node (see README.md). */
export * from './errors.js';
export { DEFAULT_CODEC, makeCodec, zstdLevel, layout, encodeTensor, decodeTensor } from './codec.js';
export { generateSigningKey, publicKeyOf, sign, verify, sha256 } from './crypto.js';
export { ErrorFeedback } from './error_feedback.js';
export { DEFAULT_LIMITS, FORMAT_VERSION, decodeParameters, decodeUpdate, encodeParameters,
  encodeUpdate } from './message.js';
export { initZstd } from './zstd.js';
export { Bundle, BundleError } from './bundle.js';
export { LocalTrainer, Evaluator, collate, iterBatches, setWasmPaths } from './trainer.js';
export { Transport, TransportError, ServerRejected, DEFAULT_RETRY } from './transport.js';
export { MemoryStore, IndexedDBStore } from './store.js';
export { PagePolicy, Decision, readPageState, trackActivity, ReasonCounter } from './eligibility.js';
export { FederatedClient, openParticipation } from './client.js';
export { LocalBuffers } from './local_buffers.js';
