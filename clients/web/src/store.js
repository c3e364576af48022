/**
 * Where a device keeps its examples and its state (identity, error-feedback residuals,
 * cached models, participation history): IndexedDB in a browser, memory elsewhere. Both
 * keep values as structured clones, so typed arrays are stored as they are.
 *
 *   addExamples(collection, examples)   append (in order)
 *   examples(collection)                async iterable, in insertion order
 *   count(collection)
 *   getState(key) / putState(key, value) / deleteState(key)
 */
export class MemoryStore {
  constructor() {
    this.collections = new Map();
    this.state = new Map();
  }

  async addExamples(collection, examples) {
    if (!this.collections.has(collection)) this.collections.set(collection, []);
    this.collections.get(collection).push(...examples.map((e) => structuredClone(e)));
  }

  async* examples(collection) {
    yield* this.collections.get(collection) ?? [];
  }

  async count(collection) { return (this.collections.get(collection) ?? []).length; }

  async getState(key) { return this.state.has(key) ? structuredClone(this.state.get(key)) : null; }

  async putState(key, value) { this.state.set(key, structuredClone(value)); }

  async deleteState(key) { this.state.delete(key); }
}

const request = (r) => new Promise((resolve, reject) => {
  r.onsuccess = () => resolve(r.result);
  r.onerror = () => reject(r.error);
});

export class IndexedDBStore {
  constructor(db) { this.db = db; }

  /** The store in IndexedDB database `name` (created on first use). */
  static async open(name = 'edge-fl') {
    const open = indexedDB.open(name, 1);
    open.onupgradeneeded = () => {
      const examples = open.result.createObjectStore('examples', { autoIncrement: true });
      examples.createIndex('collection', 'collection');
      open.result.createObjectStore('state');
    };
    return new IndexedDBStore(await request(open));
  }

  tx(store, mode = 'readonly') { return this.db.transaction(store, mode).objectStore(store); }

  async addExamples(collection, examples) {
    const t = this.db.transaction('examples', 'readwrite');
    const s = t.objectStore('examples');
    for (const example of examples) s.add({ collection, example });
    await new Promise((resolve, reject) => {
      t.oncomplete = resolve;
      t.onerror = () => reject(t.error);
    });
  }

  async* examples(collection) {
    // one read transaction per call: a training step awaits between examples, and an
    // IndexedDB transaction does not outlive its event loop turn
    const rows = await request(this.tx('examples').index('collection').getAll(collection));
    for (const row of rows) yield row.example;
  }

  count(collection) { return request(this.tx('examples').index('collection').count(collection)); }

  async getState(key) { return (await request(this.tx('state').get(key))) ?? null; }

  putState(key, value) { return request(this.tx('state', 'readwrite').put(value, key)); }

  deleteState(key) { return request(this.tx('state', 'readwrite').delete(key)); }
}
