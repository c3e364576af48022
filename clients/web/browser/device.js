// One browser device (see device.html): enroll with a key made here, keep the examples in
// IndexedDB, participate, ask for the model again (a 304 from its ETag), post the result.
import { Bundle } from '../src/bundle.js';
import { FederatedClient } from '../src/client.js';
import { generateSigningKey, publicKeyOf } from '../src/crypto.js';
import { PagePolicy, readPageState } from '../src/eligibility.js';
import { IndexedDBStore } from '../src/store.js';
import { Transport } from '../src/transport.js';
import { initZstd } from '../src/zstd.js';

const q = new URLSearchParams(location.search);
const device = Number(q.get('device'));
const log = (line) => { document.getElementById('log').textContent += `\n${line}`; };
const hex = (a) => Array.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), (b) => b.toString(16).padStart(2, '0')).join('');

async function post(doc) {
  await fetch(`/results/${device}`, { method: 'POST', body: JSON.stringify(doc), headers: { 'Content-Type': 'application/json' } });
}

async function run() {
  await initZstd();
  const bundle = await Bundle.load(async (name) => new Uint8Array(await (await fetch(`/bundle/${name}`)).arrayBuffer()));
  const store = await IndexedDBStore.open(`edge-fl-test-${device}`);
  const examples = await (await fetch(`/examples/${device}.json`)).json();
  if ((await store.count('default')) === 0) await store.addExamples('default', examples);
  const key = generateSigningKey();
  const transport = new Transport(location.origin, { retry: { attempts: 4, baseS: 0.05, capS: 0.5 } });
  const { device_id: deviceId } = await transport.enroll(q.get('population'), q.get('secret'), publicKeyOf(key));
  log(`enrolled ${deviceId}`);
  const client = new FederatedClient({
    bundle, transport, store, identity: { deviceId, signingKey: key },
    policy: new PagePolicy({ idleMs: 0 }),  // the test page has no user to wait for
    readState: () => readPageState({ optIn: true }),
  });
  const state = await readPageState({ optIn: true });
  const started = performance.now();
  const r = await client.participate(q.get('task'));
  const ms = performance.now() - started;
  log(`participated: ${r.status} ${r.reason ?? ''}`);
  let again = null;
  if (r.modelVersion !== undefined) again = await client.model(r.taskId, r.modelVersion);
  await post({
    device, device_id: deviceId, status: r.status, reason: r.reason ?? null, server: r.server ?? null,
    bytes_down: r.bytesDown, bytes_up: r.bytesUp, stored: await store.count('default'),
    model_from_cache: again ? again.fromCache : null, ms, page_state: state, user_agent: navigator.userAgent,
    delta: r.delta ? Object.fromEntries(Object.entries(r.delta).map(([k, v]) => [k, hex(v)])) : null,
    update: r.update ? hex(r.update) : null,
  });
}

run().catch((e) => { log(`error ${e.stack}`); post({ device, error: String(e.stack ?? e) }); });
