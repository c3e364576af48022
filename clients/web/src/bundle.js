/**
 * A training bundle (docs/bundle-format.md) read through a `fetchBytes(name)` function
 * that returns a file's bytes (Uint8Array): `fetch` under a URL in a browser, the file
 * system under Node. The manifest is checked as edge_sdk/bundle.py checks it.
 */
import { readNpz } from './npz.js';

export const SUPPORTED_FORMAT = 1;
const REQUIRED = ['format_version', 'model_id', 'model_name', 'task', 'parameters', 'inputs',
  'targets', 'optimizer', 'graphs', 'ignore_index', 'num_classes'];

export class BundleError extends Error {}

export class Bundle {
  constructor(manifest, fetchBytes) {
    this.manifest = manifest;
    this.fetchBytes = fetchBytes;
    this.modelId = manifest.model_id;
    this.parameterSpecs = manifest.parameters.map((p) => ({ name: p.name, shape: p.shape }));
    this.inputNames = Object.keys(manifest.inputs);
    [this.targetName] = Object.keys(manifest.targets);
    this.ignoreIndex = Number(manifest.ignore_index);
    // the parameters that are buffers (BatchNorm running statistics): the train step
    // updates them (`new.<name>`), the optimizer does not train them, eval uses them
    this.bufferNames = (manifest.buffers ?? []).map((b) => b?.name);
  }

  static async load(fetchBytes) {
    let manifest;
    try {
      manifest = JSON.parse(new TextDecoder().decode(await fetchBytes('manifest.json')));
    } catch (e) {
      throw new BundleError(`manifest.json is missing or not JSON: ${e.message}`);
    }
    const missing = REQUIRED.filter((k) => !(k in manifest));
    if (missing.length) throw new BundleError(`manifest.json lacks ${missing.join(', ')}`);
    if (manifest.format_version !== SUPPORTED_FORMAT) {
      throw new BundleError(`bundle format ${manifest.format_version} is not supported (this client reads ${SUPPORTED_FORMAT})`);
    }
    const params = new Set((manifest.parameters ?? []).map((p) => p.name));
    const buffers = manifest.buffers ?? [];
    const unknown = Array.isArray(buffers) ? buffers.map((b) => b?.name).filter((n) => !params.has(n)) : ['(not a list)'];
    if (unknown.length) {
      throw new BundleError(`manifest.json lists buffers ${unknown.join(', ')} that are not among its parameters (every buffer is also a parameter)`);
    }
    return new Bundle(manifest, fetchBytes);
  }

  get optimizerStateSpecs() { return this.manifest.optimizer.state; }

  get usesSeed() { return Boolean(this.manifest.uses_seed); }

  graph(kind) { return this.fetchBytes(this.manifest.graphs[kind]); }

  /** {name: Float32Array} of the bundle's parameters, checked against the manifest. */
  async initialParameters() {
    const arrays = await readNpz(await this.fetchBytes(this.manifest.parameters_file ?? 'parameters.npz'));
    const out = {};
    for (const spec of this.manifest.parameters) {
      const a = arrays[spec.name];
      if (a === undefined) throw new BundleError(`parameters.npz lacks ${spec.name}`);
      if (!(a.data instanceof Float32Array) || a.shape.join() !== spec.shape.join()) {
        throw new BundleError(`parameter ${spec.name} is ${a.data.constructor.name}[${a.shape}], the manifest says float32[${spec.shape}]`);
      }
      out[spec.name] = a.data;
    }
    return out;
  }
}
