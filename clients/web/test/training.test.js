// Training bundles in onnxruntime-web equals edge_sdk's LocalTrainer. The Python side
// (tests/clients/test_web_training.py) compiles the bundles, trains them with the SDK and
// writes a fixture: its path comes in EDGE_FL_TRAINING_FIXTURE.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';

import { Bundle } from '../src/bundle.js';
import { LocalTrainer, collate } from '../src/trainer.js';

const FIXTURE = process.env.EDGE_FL_TRAINING_FIXTURE;
const SKIP = FIXTURE ? false : 'EDGE_FL_TRAINING_FIXTURE is not set: tests/clients/test_web_training.py writes it';
const cases = FIXTURE ? JSON.parse(readFileSync(FIXTURE, 'utf8')).cases : [];

const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
const f32 = (s) => new Float32Array(hex(s).buffer);

function examplesOf(c) {
  return c.examples.map((e) => Object.fromEntries(Object.entries(e).map(([k, v]) => [k, typeof v === 'string' ? f32(v) : v])));
}

function assertClose(got, expected, tolerance, what) {
  for (let j = 0; j < expected.length; j++) {
    const err = Math.abs(got[j] - expected[j]);
    assert.ok(err <= tolerance * (1 + Math.abs(expected[j])), `${what}[${j}]: ${got[j]} vs ${expected[j]}`);
  }
}

test('training fixture present', { skip: SKIP }, () => assert.ok(cases.length > 0));

for (const c of cases) {
  test(`${c.model}: train steps equal the Python SDK's`, { skip: SKIP }, async () => {
    const bundle = await Bundle.load((name) => readFile(join(c.bundle_dir, name)).then((b) => new Uint8Array(b)));
    const initial = await bundle.initialParameters();
    for (const [name, h] of Object.entries(c.initial_parameters)) assert.deepEqual(initial[name], f32(h));
    const trainer = await LocalTrainer.create(bundle, initial);
    const examples = examplesOf(c);
    const losses = [];
    for (let i = 0; i < c.losses.length; i++) {
      const batch = collate(bundle, examples.slice(i * c.batch_size, (i + 1) * c.batch_size));
      losses.push((await trainer.trainStep(batch, c.lr, c.seed)).loss);
    }
    assertClose(losses, c.losses, 1e-5, 'loss');
    const params = trainer.parameters();
    for (const [name, h] of Object.entries(c.final_parameters)) assertClose(params[name], f32(h), 1e-5, name);
    // the whole plan in one call takes the same steps
    if (!bundle.usesSeed) {
      const again = new LocalTrainer(bundle, trainer.session);  // a session is stateless
      again.setParameters(initial);
      const result = await again.train(() => examples, { batchSize: c.batch_size, lr: c.lr, maxSteps: c.losses.length });
      assert.equal(result.status, 'completed');
      assert.equal(result.steps, c.losses.length);
      assert.deepEqual(result.losses, losses);
      const delta = again.delta(initial);
      for (const name of Object.keys(delta)) {
        assertClose(delta[name], f32(c.final_parameters[name]).map((v, j) => v - initial[name][j]), 1e-5, `delta ${name}`);
      }
    }
  });
}
