// Train-step timing shared by tools/bench_train.mjs (Node) and browser/bench.js
// (Chromium): a case's batch as tensors, and its steps timed after the warm-up ones.
// A case is {model, batch: {name: {dtype, shape, hex}}, lr, warmup, steps}.
import * as ort from 'onnxruntime-web';

const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));

/** {name: ort.Tensor} of a case's batch (int64 or float32, little-endian hex). */
export function batchTensors(batch) {
  const tensors = {};
  for (const [name, t] of Object.entries(batch)) {
    const bytes = hex(t.hex);
    const data = t.dtype === 'int64' ? new BigInt64Array(bytes.buffer) : new Float32Array(bytes.buffer);
    tensors[name] = new ort.Tensor(t.dtype, data, t.shape);
  }
  return tensors;
}

/** Milliseconds of each of the case's `steps` train steps that follow its `warmup` ones. */
export async function timeSteps(trainer, c) {
  const batch = batchTensors(c.batch);
  const ms = [];
  for (let i = 0; i < c.warmup + c.steps; i++) {
    const t0 = performance.now();
    await trainer.trainStep(batch, c.lr, i);
    if (i >= c.warmup) ms.push(performance.now() - t0);
  }
  return ms;
}
