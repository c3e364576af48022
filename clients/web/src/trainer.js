/**
 * Local training of a bundle in onnxruntime-web (WASM, one thread), as edge_sdk's
 * LocalTrainer does it: the train-step graph runs one optimizer step; its outputs
 * `new.<name>` (parameters and optimizer state) are fed back as `<name>` next step, and
 * stay onnxruntime tensors in between. To time steps under Node, run it with
 * `--no-liftoff`: without it V8 keeps the WASM kernels on its baseline compiler for the
 * first steps (with it, start-up compiles everything optimized first: seconds).
 *
 * Examples are objects holding the bundle's inputs and target, one sample each:
 * Float32Array / number arrays for float inputs, numbers, bigints or Int32Array /
 * BigInt64Array for int64 ones (a language model: tokens and targets of length T).
 */
import * as ort from 'onnxruntime-web';

export const PAD_MULTIPLE = 8;

ort.env.wasm.numThreads = 1;

/** Configure where the browser fetches onnxruntime-web's .wasm files from (a URL ending
 * in "/"); Node finds them itself. */
export function setWasmPaths(prefix) {
  ort.env.wasm.wasmPaths = prefix;
}

const flat = (v) => (ArrayBuffer.isView(v) ? v : Array.isArray(v) ? v.flat(Infinity) : [v]);

/** examples -> {name: ort.Tensor}, padded as edge_sdk/batching.py pads: sequences to
 * the longest, rounded up to PAD_MULTIPLE, inputs with 0 and targets with the ignore index. */
export function collate(bundle, examples) {
  const specs = { ...bundle.manifest.inputs, ...bundle.manifest.targets };
  const batch = {};
  for (const [name, spec] of Object.entries(specs)) {
    const items = examples.map((e) => {
      if (!(name in e)) throw new Error(`example lacks '${name}'; the bundle needs ${Object.keys(specs)}`);
      return flat(e[name]);
    });
    const int64 = spec.dtype === 'int64';
    let shape;
    let length;
    if (spec.shape.includes('seq')) {
      length = Math.ceil(Math.max(...items.map((i) => i.length)) / PAD_MULTIPLE) * PAD_MULTIPLE;
      shape = [items.length, length];
    } else {
      length = items[0].length;
      shape = [items.length, ...spec.shape.slice(1)];
      if (items.some((i) => i.length !== length)) throw new Error(`examples' '${name}' differ in shape`);
    }
    const fill = spec.shape.includes('seq') && name === bundle.targetName ? bundle.ignoreIndex : 0;
    const data = int64 ? new BigInt64Array(items.length * length) : new Float32Array(items.length * length);
    data.fill(int64 ? BigInt(fill) : fill);
    items.forEach((item, row) => {
      for (let j = 0; j < item.length; j++) data[row * length + j] = int64 ? BigInt(item[j]) : Number(item[j]);
    });
    batch[name] = new ort.Tensor(int64 ? 'int64' : spec.dtype, data, shape);
  }
  return batch;
}

/** Batches of `batchSize` examples (the last may be smaller), from a sync or async iterable. */
export async function* iterBatches(bundle, examples, batchSize) {
  let pending = [];
  for await (const e of examples) {
    pending.push(e);
    if (pending.length === batchSize) {
      yield [collate(bundle, pending), pending.length];
      pending = [];
    }
  }
  if (pending.length) yield [collate(bundle, pending), pending.length];
}

export function summarize(sums) {
  const out = { ...sums };
  const { count } = sums;
  if (count) {
    out.mean_loss = sums.loss_sum / count;
    out.accuracy = sums.correct / count;
    if ('correct_top3' in sums) out.top3_accuracy = sums.correct_top3 / count;
  }
  return out;
}

export class LocalTrainer {
  constructor(bundle, session) {
    this.bundle = bundle;
    this.session = session;
    this.step = 0;
    this.carried = {};
  }

  /** A trainer of `bundle` starting from `parameters` ({name: Float32Array}; default the
   * bundle's initial parameters). */
  static async create(bundle, parameters = null) {
    const session = await ort.InferenceSession.create(await bundle.graph('train_step'), {
      executionProviders: ['wasm'], graphOptimizationLevel: 'all',
    });
    const trainer = new LocalTrainer(bundle, session);
    trainer.setParameters(parameters ?? await bundle.initialParameters());
    return trainer;
  }

  /** Start from `parameters` (copied, not mutated) with fresh optimizer state. */
  setParameters(parameters) {
    const shapes = Object.fromEntries(this.bundle.parameterSpecs.map((s) => [s.name, s.shape]));
    this.carried = {};
    for (const { name, shape } of this.bundle.parameterSpecs) {
      const values = parameters[name];
      if (!values || values.length !== shape.reduce((a, b) => a * b, 1)) {
        throw new Error(`parameter ${name} is missing or not of shape [${shape}]`);
      }
      this.carried[name] = new ort.Tensor('float32', Float32Array.from(values), shape);
    }
    for (const s of this.bundle.optimizerStateSpecs) {
      const shape = shapes[s.like];
      this.carried[s.name] = new ort.Tensor('float32', new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
    }
    this.step = 0;
  }

  /** Copies of the parameters, {name: Float32Array}. */
  parameters() {
    return Object.fromEntries(this.bundle.parameterSpecs.map(({ name }) => [name, Float32Array.from(this.carried[name].data)]));
  }

  /** Local minus global, per parameter (float32 differences). */
  delta(globalParameters) {
    const out = {};
    for (const [name, local] of Object.entries(this.parameters())) {
      const g = globalParameters[name];
      const d = new Float32Array(local.length);
      for (let j = 0; j < d.length; j++) d[j] = local[j] - g[j];
      out[name] = d;
    }
    return out;
  }

  /** One optimizer step on a collated batch; the scalar outputs (loss, metric sums). */
  async trainStep(batch, lr, seed = 0) {
    const feeds = { ...batch, ...this.carried };
    feeds.lr = new ort.Tensor('float32', Float32Array.of(lr), []);
    feeds.step = new ort.Tensor('int64', BigInt64Array.of(BigInt(this.step + 1)), []);
    if (this.bundle.usesSeed) feeds.seed = new ort.Tensor('int64', BigInt64Array.of(BigInt(seed)), []);
    const wanted = Object.fromEntries(this.session.inputNames.map((n) => [n, feeds[n]]));
    const out = await this.session.run(wanted);
    const scalars = {};
    for (const name of this.session.outputNames) {
      if (name.startsWith('new.')) this.carried[name.slice(4)] = out[name];
      else scalars[name] = Number(out[name].data[0]);
    }
    this.step += 1;
    return scalars;
  }

  /**
   * Run a plan: `epochs` passes over `examples(epoch)` (an iterable per epoch) in batches
   * of `batchSize`, at most `maxSteps` steps, learning rate `lr` (a number or a function
   * of the step); `stopCheck()` returning a reason between batches stops the run
   * (status "stopped": do not upload); it may be async. Returns {status, steps, examples, metrics, losses}.
   */
  async train(examples, { epochs = 1, batchSize = 16, maxSteps = null, lr = 0.1 }, stopCheck = () => null) {
    const sums = {};
    const losses = [];
    let steps = 0;
    let seen = 0;
    const result = (status, stopReason = null) => ({ status, steps, examples: seen, metrics: summarize(sums), losses, stopReason });
    for (let epoch = 0; epoch < epochs; epoch++) {
      for await (const [batch, n] of iterBatches(this.bundle, examples(epoch), batchSize)) {
        const reason = await stopCheck();
        if (reason) return result('stopped', reason);
        const rate = typeof lr === 'function' ? lr(this.step) : lr;
        const seed = Math.floor(Math.random() * 2 ** 31);
        const scalars = await this.trainStep(batch, rate, seed);
        steps += 1;
        seen += n;
        losses.push(scalars.loss);
        for (const [k, v] of Object.entries(scalars)) if (k !== 'loss') sums[k] = (sums[k] ?? 0) + v;
        if (maxSteps !== null && steps >= maxSteps) return result('completed');
      }
    }
    return result('completed');
  }
}

/** Metric sums of parameters on examples with the bundle's eval graph (no training). */
export class Evaluator {
  constructor(bundle, session) {
    this.bundle = bundle;
    this.session = session;
  }

  static async create(bundle) {
    const session = await ort.InferenceSession.create(await bundle.graph('eval'), {
      executionProviders: ['wasm'], graphOptimizationLevel: 'all',
    });
    return new Evaluator(bundle, session);
  }

  /** The metric sums plus mean_loss and accuracy over every non-padding target. */
  async evaluate(parameters, examples, batchSize = 64) {
    const params = Object.fromEntries(this.bundle.parameterSpecs.map(({ name, shape }) => [
      name, new ort.Tensor('float32', parameters[name], shape)]));
    const sums = {};
    for await (const [batch] of iterBatches(this.bundle, examples, batchSize)) {
      const feeds = { ...batch, ...params };
      const out = await this.session.run(Object.fromEntries(this.session.inputNames.map((n) => [n, feeds[n]])));
      for (const name of this.session.outputNames) sums[name] = (sums[name] ?? 0) + Number(out[name].data[0]);
    }
    return summarize(sums);
  }
}
