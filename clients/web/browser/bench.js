// Train-step timing in the browser (see bench.html), by the same code as tools/bench_train.mjs.
import { Bundle } from '../src/bundle.js';
import { LocalTrainer } from '../src/trainer.js';
import { timeSteps } from '../tools/step_timing.mjs';

const log = (line) => { document.getElementById('log').textContent += `\n${line}`; };

async function run() {
  const job = await (await fetch('/job.json')).json();
  const out = {};
  for (const c of job.cases) {
    const bundle = await Bundle.load(async (name) => new Uint8Array(await (await fetch(`/bundles/${c.model}/${name}`)).arrayBuffer()));
    const trainer = await LocalTrainer.create(bundle);
    out[c.model] = { ms: await timeSteps(trainer, c) };
    log(`${c.model} done`);
  }
  await fetch('/results', { method: 'POST', body: JSON.stringify(out) });
}

run().catch((e) => fetch('/results', { method: 'POST', body: JSON.stringify({ error: String(e.stack ?? e) }) }));
