// Train-step timing in the browser (see bench.html): the same loop as tools/bench_train.mjs.
import * as ort from 'onnxruntime-web';

import { Bundle } from '../src/bundle.js';
import { LocalTrainer } from '../src/trainer.js';

const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
const log = (line) => { document.getElementById('log').textContent += `\n${line}`; };

async function run() {
  const job = await (await fetch('/job.json')).json();
  const out = {};
  for (const c of job.cases) {
    const bundle = await Bundle.load(async (name) => new Uint8Array(await (await fetch(`/bundles/${c.model}/${name}`)).arrayBuffer()));
    const trainer = await LocalTrainer.create(bundle);
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
    out[c.model] = { ms };
    log(`${c.model} done`);
  }
  await fetch('/results', { method: 'POST', body: JSON.stringify(out) });
}

run().catch((e) => fetch('/results', { method: 'POST', body: JSON.stringify({ error: String(e.stack ?? e) }) }));
