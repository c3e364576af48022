/**
 * A device's own buffer values (BatchNorm running statistics), kept between
 * participations when a task's plan says `buffers: "local"` (FedBN, Li et al. 2021), as
 * edge_sdk/local_buffers.py keeps them: per task in the store's state, tagged with the
 * bundle's model_id (values of another bundle, or that do not fit, are dropped, never
 * fed to a graph). The device trains from its kept values (the server's the first
 * time), sends zeros as their deltas, and keeps the values its training reached once
 * the server acknowledged the update; federated evaluation uses them too.
 */
export const bufferKey = (task) => `client.buffers.${task}`;

export class LocalBuffers {
  /** `store`: getState/putState/deleteState (MemoryStore, IndexedDBStore). */
  constructor(store, bundle) {
    this.store = store;
    this.bundle = bundle;
    const names = new Set(bundle.bufferNames ?? []);  // none: nothing is ever kept
    this.shapes = Object.fromEntries(bundle.parameterSpecs
      .filter(({ name }) => names.has(name))
      .map(({ name, shape }) => [name, shape]));
  }

  /** The kept values {name: Float32Array}, or null: nothing kept, or what is kept does
   * not fit this bundle (then it is dropped). */
  async load(taskId) {
    const kept = await this.store.getState(bufferKey(taskId));
    if (kept === null) return null;
    const arrays = kept?.arrays ?? {};
    const names = Object.keys(this.shapes);
    const fits = kept?.model_id === this.bundle.modelId
      && Object.keys(arrays).length === names.length
      && names.every((n) => arrays[n] instanceof Float32Array
        && arrays[n].length === this.shapes[n].reduce((a, b) => a * b, 1)
        && arrays[n].every(Number.isFinite));
    if (!fits) {
      await this.store.deleteState(bufferKey(taskId));
      return null;
    }
    return arrays;
  }

  /** Keep the buffers of `parameters` ({name: Float32Array}; copied, other names ignored). */
  async save(taskId, parameters) {
    const names = Object.keys(this.shapes);
    if (!names.length) return;
    const arrays = Object.fromEntries(names.map((n) => [n, Float32Array.from(parameters[n])]));
    await this.store.putState(bufferKey(taskId), { model_id: this.bundle.modelId, arrays });
  }

  async forget(taskId) {
    if (Object.keys(this.shapes).length) await this.store.deleteState(bufferKey(taskId));
  }

  /** `parameters` (not mutated) with this device's kept buffer values in place of the
   * server's, when it keeps any for the task: for training and evaluation alike. */
  async apply(taskId, parameters) {
    const kept = await this.load(taskId);
    return kept === null ? parameters : { ...parameters, ...kept };
  }

  /** [the buffer values a run from `parameters` reached (parameters + delta, float32),
   * `delta` with zeros for the buffers: what leaves the device]; neither is mutated. */
  split(parameters, delta) {
    const reached = {};
    const sent = { ...delta };
    for (const name of Object.keys(this.shapes)) {
      const r = new Float32Array(delta[name].length);
      for (let j = 0; j < r.length; j++) r[j] = parameters[name][j] + delta[name][j];
      reached[name] = r;
      sent[name] = new Float32Array(delta[name].length);
    }
    return [reached, sent];
  }
}
