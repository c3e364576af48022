// Times train steps of bundles in onnxruntime-web (WASM, one thread). Run with
// `node --no-liftoff` (see src/trainer.js). Reads a job file written by tools/bench.py:
// {cases: [{model, bundle_dir, batch: {name: {dtype, shape, hex}}, lr, warmup, steps}]};
// prints {model: {ms: [per step], load_ms}} as JSON.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import * as ort from 'onnxruntime-web';

import { Bundle } from '../src/bundle.js';
import { LocalTrainer } from '../src/trainer.js';

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
const out = {};
for (const c of job.cases) {
  const started = performance.now();
  const bundle = await Bundle.load((name) => readFile(join(c.bundle_dir, name)).then((b) => new Uint8Array(b)));
  const trainer = await LocalTrainer.create(bundle);
  const loadMs = performance.now() - started;
  const batch = {};
  for (const [name, t] of Object.entries(c.batch)) {
    const bytes = hex(t.hex);
    const data = t.dtype === 'int64' ? new BigInt64Array(bytes.buffer) : new Float32Array(bytes.buffer);
    batch[name] = new ort.Tensor(t.dtype, data, t.shape);
  }
  const ms = [];
  for (let i = 0; i < c.warmup + c.steps; i++) {
    const t0 = performance.now();
    await trainer.trainStep(batch, c.lr, i);
    if (i >= c.warmup) ms.push(performance.now() - t0);
  }
  out[c.model] = { ms, load_ms: loadMs };
}
process.stdout.write(JSON.stringify(out));
