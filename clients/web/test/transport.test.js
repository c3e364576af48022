// The transport's retry rules with a fake fetch and a recorded sleep: 429 and 5xx are
// retried after max(Retry-After, backoff), connection failures too, other 4xx are final;
// a resumable upload continues from the server's count.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ServerRejected, Transport, TransportError } from '../src/transport.js';

function fakeServer(answers) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    calls.push({ url, ...init });
    const next = answers.shift();
    if (next instanceof Error) throw next;
    const [status, body, headers = {}] = next;
    return new Response(status === 204 || status === 304 ? null : JSON.stringify(body), { status, headers });
  };
  return { calls, fetchImpl };
}

function transport(server, extra = {}) {
  const sleeps = [];
  const t = new Transport('http://server/', {
    fetchImpl: server.fetchImpl, sleep: async (s) => { sleeps.push(s); }, random: () => 0.5, token: 'tok', ...extra,
  });
  return { t, sleeps };
}

test('429 waits Retry-After, 503 backs off, then the answer', async () => {
  const server = fakeServer([
    [429, { error: { code: 'rate_limited' } }, { 'Retry-After': '3' }],
    [503, { error: { code: 'not_leader' } }],
    [200, { retry_at: 1, retry_after_s: 60 }],
  ]);
  const { t, sleeps } = transport(server);
  assert.deepEqual(await t.checkIn('kb'), { retry_at: 1, retry_after_s: 60 });
  assert.deepEqual(sleeps, [3, 0.5 * 0.2 * 2]);  // max(Retry-After, backoff); full jitter
  assert.equal(server.calls[0].headers.Authorization, 'Bearer tok');
  assert.equal(server.calls[0].url, 'http://server/v1/checkin');
});

test('a connection failure is retried', async () => {
  const server = fakeServer([new TypeError('fetch failed'), [204, null]]);
  const { t, sleeps } = transport(server);
  assert.equal(await t.reportFailure('kb', 'diverged'), null);
  assert.equal(sleeps.length, 1);
});

test('4xx is final, with the server\'s code and details', async () => {
  const server = fakeServer([[409, { error: { code: 'stale_version', message: 'old', current_version: 4 } }]]);
  const { t } = transport(server);
  await assert.rejects(t.upload('kb', new Uint8Array(10)), (e) => e instanceof ServerRejected
    && e.status === 409 && e.code === 'stale_version' && e.details.current_version === 4);
  assert.equal(server.calls.length, 1);
});

test('attempts run out as a TransportError', async () => {
  const server = fakeServer(Array.from({ length: 3 }, () => [500, {}]));
  const { t } = transport(server, { retry: { attempts: 3, baseS: 0.1, capS: 1 } });
  await assert.rejects(t.checkIn(), TransportError);
});

test('a conditional model download answered 304 gives the cached bytes', async () => {
  const server = fakeServer([[304, null, { ETag: '"v1"' }]]);
  const { t } = transport(server);
  const cached = { etag: '"v1"', bytes: Uint8Array.of(1, 2, 3) };
  const got = await t.downloadModel('kb', 1, cached);
  assert.equal(got.fromCache, true);
  assert.deepEqual(got.bytes, cached.bytes);
  assert.equal(server.calls[0].headers['If-None-Match'], '"v1"');
});

test('a resumable upload resumes from the server\'s count after an offset mismatch', async () => {
  const data = new Uint8Array(10).map((_, i) => i);
  const server = fakeServer([
    [201, { upload_id: 'u1', received: 0, size: 10 }],
    [200, { upload_id: 'u1', received: 4, size: 10 }],
    [409, { error: { code: 'upload_offset_mismatch', received: 8 } }],
    [200, { upload_id: 'u1', received: 10, size: 10 }],
    [200, { status: 'accepted' }],
  ]);
  const { t } = transport(server, { singleRequestBytes: 2, chunkBytes: 4 });
  assert.deepEqual(await t.upload('kb', data), { status: 'accepted' });
  const urls = server.calls.map((c) => `${c.method} ${c.url.replace('http://server', '')}`);
  assert.deepEqual(urls, ['POST /v1/tasks/kb/uploads', 'PUT /v1/uploads/u1?offset=0',
    'PUT /v1/uploads/u1?offset=4', 'PUT /v1/uploads/u1?offset=8', 'POST /v1/uploads/u1/commit']);
  assert.deepEqual([...new Uint8Array(server.calls[3].body)], [8, 9]);
  assert.match(JSON.parse(server.calls[0].body).sha256, /^[0-9a-f]{64}$/);
});
