// Times train steps of bundles in onnxruntime-web (WASM, one thread). Run with
// `node --no-liftoff` (see src/trainer.js). Reads a job file written by tools/bench.py:
// {cases: [{model, bundle_dir, batch: {name: {dtype, shape, hex}}, lr, warmup, steps}]};
// prints {model: {ms: [per step], load_ms}} as JSON.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { Bundle } from '../src/bundle.js';
import { LocalTrainer } from '../src/trainer.js';
import { timeSteps } from './step_timing.mjs';

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = {};
for (const c of job.cases) {
  const started = performance.now();
  const bundle = await Bundle.load((name) => readFile(join(c.bundle_dir, name)).then((b) => new Uint8Array(b)));
  const trainer = await LocalTrainer.create(bundle);
  const loadMs = performance.now() - started;
  out[c.model] = { ms: await timeSteps(trainer, c), load_ms: loadMs };
}
process.stdout.write(JSON.stringify(out));
