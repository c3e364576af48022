// The client's idempotency rule: one nonce per participation, reused by its retries; a
// duplicate answer is success only for a key that went out before.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';

import { FederatedClient, openParticipation } from '../src/client.js';
import { generateSigningKey } from '../src/crypto.js';
import { decodeUpdate } from '../src/message.js';
import { MemoryStore } from '../src/store.js';
import { TransportError } from '../src/transport.js';
import { initZstd } from '../src/zstd.js';

before(async () => { await initZstd(); });

const specs = [{ name: 'w', shape: [300] }];
const bundle = { modelId: 'm', parameterSpecs: specs };
const assignment = { task_id: 't', round_id: 4, model_version: 2 };
const training = { examples: 3, metrics: { mean_loss: 1.5, accuracy: 0.25 } };

function fakeTransport(answers) {
  const sent = [];
  return {
    sent,
    lastAttempts: 1,
    async upload(task, data) {
      sent.push(data);
      const next = answers.shift();
      if (next instanceof Error) throw next;
      return next;
    },
  };
}

function client(transport, store = new MemoryStore()) {
  return new FederatedClient({
    bundle, transport, store, identity: { deviceId: 'dev-1', signingKey: generateSigningKey() },
    policy: null, readState: null,
  });
}

const delta = () => ({ w: Float32Array.from({ length: 300 }, (_, i) => Math.sin(i)) });
const keyOf = (data) => decodeUpdate(data, specs).meta.idempotency_key;

test('a new participation gets a new nonce; the same assignment keeps an open one', async () => {
  const store = new MemoryStore();
  const a = await openParticipation(store, assignment);
  assert.match(a.nonce, /^[0-9a-f]{32}$/);
  assert.notEqual((await openParticipation(store, assignment)).nonce, a.nonce);  // none kept
  await store.putState('client.participation.t', { ...a, uploads: 1 });
  assert.equal((await openParticipation(store, assignment)).nonce, a.nonce);
  assert.notEqual((await openParticipation(store, { ...assignment, round_id: 5 })).nonce, a.nonce);
});

test('a retry after a transient failure reuses the key, and its duplicate is success', async () => {
  const transport = fakeTransport([new TransportError('connection reset'), { status: 'duplicate', aggregated_into: 3 }]);
  const store = new MemoryStore();
  const c = client(transport, store);
  await assert.rejects(c.upload(assignment, delta(), training, {}), TransportError);
  const r = await c.upload(assignment, delta(), training, {});
  assert.equal(r.status, 'completed');
  assert.equal(keyOf(transport.sent[0]), keyOf(transport.sent[1]));
  assert.equal(await store.getState('client.participation.t'), null);  // closed
  assert.notEqual(await store.getState('client.error_feedback.t'), null);  // acknowledged
});

test('a duplicate for a key never sent before is refused, and keeps no residual', async () => {
  const store = new MemoryStore();
  const r = await client(fakeTransport([{ status: 'duplicate', version: 2 }]), store).upload(assignment, delta(), training, {});
  assert.equal(r.status, 'rejected');
  assert.equal(r.reason, 'unexpected_duplicate');
  assert.equal(await store.getState('client.error_feedback.t'), null);
});

test('two participations at one model version send two keys', async () => {
  const transport = fakeTransport([{ status: 'accepted' }, { status: 'accepted' }]);
  const c = client(transport);
  await c.upload(assignment, delta(), training, {});
  await c.upload(assignment, delta(), training, {});
  assert.notEqual(keyOf(transport.sent[0]), keyOf(transport.sent[1]));
});
