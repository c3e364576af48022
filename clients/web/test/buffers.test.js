// A bundle with BatchNorm trains in onnxruntime-web as in edge_sdk: its buffers (running
// statistics) are fed to the train step and taken back from it, eval uses them, and
// LocalBuffers keeps them for plan.buffers "local" (FedBN) as edge_sdk/local_buffers.py
// does. tests/clients/test_web_buffers.py compiles the bundle, trains it with the SDK
// and writes a fixture: its path comes in EDGE_FL_BUFFERS_FIXTURE.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, test } from 'node:test';

import { Bundle } from '../src/bundle.js';
import { FederatedClient } from '../src/client.js';
import { LocalBuffers, bufferKey } from '../src/local_buffers.js';
import { encodeParameters } from '../src/message.js';
import { MemoryStore } from '../src/store.js';
import { Evaluator, LocalTrainer, collate } from '../src/trainer.js';
import { initZstd } from '../src/zstd.js';

const FIXTURE = process.env.EDGE_FL_BUFFERS_FIXTURE;
const SKIP = FIXTURE ? false : 'EDGE_FL_BUFFERS_FIXTURE is not set: tests/clients/test_web_buffers.py writes it';
const run = FIXTURE ? JSON.parse(readFileSync(FIXTURE, 'utf8')) : null;

before(async () => { await initZstd(); });  // model messages are zstd-compressed

const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
const f32 = (s) => new Float32Array(hex(s).buffer);
const arrays = (d) => Object.fromEntries(Object.entries(d).map(([k, v]) => [k, f32(v)]));

function assertClose(got, expected, tolerance, what) {
  assert.equal(got.length, expected.length, `${what}: length`);
  for (let j = 0; j < expected.length; j++) {
    const err = Math.abs(got[j] - expected[j]);
    assert.ok(err <= tolerance * (1 + Math.abs(expected[j])), `${what}[${j}]: ${got[j]} vs ${expected[j]}`);
  }
}

async function setUp() {
  const bundle = await Bundle.load((name) => readFile(join(run.bundle_dir, name)).then((b) => new Uint8Array(b)));
  const examples = run.examples.map((e) => ({ x: f32(e.x), targets: e.targets }));
  return { bundle, examples, initial: await bundle.initialParameters() };
}

test('the bundle names its buffers', { skip: SKIP }, async () => {
  const { bundle } = await setUp();
  assert.deepEqual(bundle.bufferNames, run.buffer_names);
});

test('train steps update the running statistics as the Python SDK does', { skip: SKIP }, async () => {
  const { bundle, examples, initial } = await setUp();
  const trainer = await LocalTrainer.create(bundle, initial);
  for (let i = 0; i < run.losses.length; i++) {
    const batch = collate(bundle, examples.slice(i * run.batch_size, (i + 1) * run.batch_size));
    const { loss } = await trainer.trainStep(batch, run.lr);
    assertClose([loss], [run.losses[i]], 1e-5, `loss of step ${i + 1}`);
    const params = trainer.parameters();
    for (const [name, h] of Object.entries(run.buffers[i])) assertClose(params[name], f32(h), 1e-5, `${name} after step ${i + 1}`);
  }
  const params = trainer.parameters();
  for (const [name, h] of Object.entries(run.final_parameters)) assertClose(params[name], f32(h), 1e-5, name);
  for (const name of run.buffer_names) assert.notDeepEqual(params[name], initial[name], `${name} did not move`);
  // the whole plan in one call carries them the same way
  const again = new LocalTrainer(bundle, trainer.session);
  again.setParameters(initial);
  const result = await again.train(() => examples, { batchSize: run.batch_size, lr: run.lr, maxSteps: run.losses.length });
  assert.equal(result.steps, run.losses.length);
  for (const name of run.buffer_names) assert.deepEqual(again.parameters()[name], params[name]);
});

test('evaluation uses the buffers it is given', { skip: SKIP }, async () => {
  const { bundle, examples, initial } = await setUp();
  const evaluator = await Evaluator.create(bundle);
  const trained = arrays(run.final_parameters);
  const got = await evaluator.evaluate(trained, examples);
  for (const k of ['loss_sum', 'correct', 'count']) assertClose([got[k]], [run.eval_trained[k]], 1e-5, k);
  const stale = { ...trained };
  for (const name of run.buffer_names) stale[name] = initial[name];
  const withStale = await evaluator.evaluate(stale, examples);
  assertClose([withStale.loss_sum], [run.eval_initial_buffers.loss_sum], 1e-5, 'loss_sum (initial buffers)');
  assert.notEqual(withStale.loss_sum, got.loss_sum);
});

test('FedBN: LocalBuffers keeps, applies and zeroes the buffers as edge_sdk does', { skip: SKIP }, async () => {
  const { bundle, initial } = await setUp();
  const store = new MemoryStore();
  const buffers = new LocalBuffers(store, bundle);
  const trained = arrays(run.final_parameters);
  const delta = Object.fromEntries(Object.entries(trained).map(([k, v]) => [k, v.map((x, j) => x - initial[k][j])]));
  const [kept, sent] = buffers.split(initial, delta);
  assert.deepEqual(Object.keys(kept).sort(), [...run.buffer_names].sort());
  for (const [name, h] of Object.entries(run.kept)) assertClose(kept[name], f32(h), 1e-6, `kept ${name}`);
  for (const [name, h] of Object.entries(run.sent)) assertClose(sent[name], f32(h), 1e-6, `sent ${name}`);
  for (const name of run.buffer_names) assert.ok(sent[name].every((v) => v === 0));
  assert.equal(await buffers.load('t'), null);
  assert.equal(await buffers.apply('t', initial), initial);  // nothing kept: the server's
  await buffers.save('t', { ...initial, ...kept });
  const applied = await buffers.apply('t', initial);
  for (const name of Object.keys(initial)) {
    assert.deepEqual(applied[name], run.buffer_names.includes(name) ? kept[name] : initial[name]);
  }
  // values of another bundle are dropped, never fed to a graph
  await store.putState(bufferKey('t'), { ...(await store.getState(bufferKey('t'))), model_id: 'other' });
  assert.equal(await buffers.load('t'), null);
  assert.equal(await store.getState(bufferKey('t')), null);
  await buffers.save('t', { ...initial, ...kept });
  await buffers.forget('t');
  assert.equal(await store.getState(bufferKey('t')), null);
});

test('FedBN: federated evaluation scores the model with the kept statistics', { skip: SKIP }, async () => {
  const { bundle, examples, initial } = await setUp();
  const trained = arrays(run.final_parameters);
  const served = { ...trained };  // the server's model: its buffers never moved
  for (const name of run.buffer_names) served[name] = initial[name];
  const submitted = [];
  const transport = {
    async downloadModel(taskId, version) {
      return { fromCache: false, etag: 'e', bytes: encodeParameters(served, bundle.parameterSpecs, bundle.modelId, version) };
    },
    async submitEvaluation(taskId, version, sums) {
      submitted.push(sums);
      return { status: 'recorded' };
    },
  };
  const store = new MemoryStore();
  await store.addExamples('default', examples);
  const client = new FederatedClient({ bundle, transport, store, identity: { deviceId: 'd', signingKey: null }, policy: null, readState: null });
  const e = { task_id: 't', model_version: 3, model_id: bundle.modelId };
  await client.evaluate(e);  // nothing kept: the server's statistics
  await client.buffers.save('t', trained);
  await client.evaluate(e);  // the device's own
  const [server, own] = submitted;
  assertClose([server.loss_sum], [run.eval_initial_buffers.loss_sum], 1e-5, 'loss_sum with the server\'s statistics');
  assertClose([own.loss_sum], [run.eval_trained.loss_sum], 1e-5, 'loss_sum with the kept statistics');
  assert.equal(own.count, run.eval_trained.count);
});
