// Devices of the web client under Node, against a running aggregator, for the
// cross-language tests (tests/clients/): reads {url, population, secret, bundle_dir,
// task_id, devices: [{examples: [...], single_request_bytes?}], rounds} as JSON on stdin; each device enrolls
// with a new key, stores its examples and participates `rounds` times (all devices
// concurrently per round); writes one result per device and round (delta and update hex,
// and the buffer values the device keeps for the task after it: plan.buffers "local").
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { Bundle } from '../src/bundle.js';
import { FederatedClient } from '../src/client.js';
import { generateSigningKey, publicKeyOf } from '../src/crypto.js';
import { PagePolicy } from '../src/eligibility.js';
import { MemoryStore } from '../src/store.js';
import { Transport } from '../src/transport.js';
import { initZstd } from '../src/zstd.js';

const toHex = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');

const job = JSON.parse(readFileSync(0, 'utf8'));
await initZstd();
const bundle = await Bundle.load((name) => readFile(join(job.bundle_dir, name)).then((b) => new Uint8Array(b)));
const devices = await Promise.all(job.devices.map(async (d) => {
  const key = generateSigningKey();
  const transport = new Transport(job.url, {
    retry: { attempts: 4, baseS: 0.01, capS: 0.05 },
    ...(d.single_request_bytes ? { singleRequestBytes: d.single_request_bytes, chunkBytes: d.single_request_bytes } : {}),
  });
  const { device_id: deviceId } = await transport.enroll(job.population, job.secret, publicKeyOf(key));
  const store = new MemoryStore();
  await store.addExamples('default', d.examples);
  return new FederatedClient({
    bundle, transport, store, identity: { deviceId, signingKey: key }, policy: new PagePolicy({ idleMs: 0 }),
    readState: async () => ({ optIn: true, hidden: true, idleMs: 0, battery: null, connection: null }),
  });
}));
const hexed = (d) => (d ? Object.fromEntries(Object.entries(d).map(([k, v]) => [k, toHex(v)])) : null);
const results = [];
for (let round = 0; round < (job.rounds ?? 1); round++) {
  const got = await Promise.all(devices.map((c) => c.participate(job.task_id)));
  const kept = await Promise.all(devices.map((c) => c.buffers.load(job.task_id)));
  got.forEach((r, i) => results.push({
    kept_buffers: hexed(kept[i]),
    device: i, device_id: devices[i].identity.deviceId, round, status: r.status, reason: r.reason ?? null,
    server: r.server ?? null, model_version: r.modelVersion ?? null, bytes_down: r.bytesDown, bytes_up: r.bytesUp,
    delta: hexed(r.delta),
    update: r.update ? toHex(r.update) : null,
  }));
}
process.stdout.write(JSON.stringify(results));
