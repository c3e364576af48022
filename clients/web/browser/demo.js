// The keyboard demo's page (see demo.html; examples/web_demo.py serves it). One device:
// typed sentences -> examples in IndexedDB (the bundle's word vocabulary, tokenized as
// edge_sdk/vocabulary.py does); next-word suggestions from the newest model (a conditional
// GET with its ETag, infer.onnx in onnxruntime-web); a participation whenever the page
// policy allows (opt-in, and the tab hidden or the user idle). Query flags for a headless
// check: ?optin=1 (opted in), idle=S (seconds of inactivity that count as idle, default
// 30), sample=1 (store the sample sentences), text=... (typed text to suggest after).
import * as ort from 'onnxruntime-web';
import { Bundle } from '../src/bundle.js';
import { FederatedClient } from '../src/client.js';
import { generateSigningKey, publicKeyOf } from '../src/crypto.js';
import { PagePolicy, readPageState, trackActivity } from '../src/eligibility.js';
import { decodeParameters } from '../src/message.js';
import { IndexedDBStore } from '../src/store.js';
import { Transport } from '../src/transport.js';
import { initZstd } from '../src/zstd.js';

const BOS = 1; const EOS = 2; const OOV = 3; const SPECIALS = 4;
const MAX_IDS = 21;  // as examples/keyboard_app.py cuts a sentence
const WORD = /[a-z]+(?:'[a-z]+)*|'[a-z]+/g;  // edge_sdk/vocabulary.py's _WORD
const SENTENCE_END = /[.!?;:\n]+/;
const COLLECTION = 'default';
const SAMPLES = [
  'to be or not to be that is the question', 'i love you with all my heart',
  'what is the matter with you my lord', 'good night sweet prince',
  'i pray you tell me what you will', 'my lord i will go with you',
  'the king is dead long live the king', 'come let us go to the house',
];

const q = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const show = (id, text) => { $(id).textContent = text; };
const tokenize = (text) => text.toLowerCase().match(WORD) ?? [];

function log(event) {
  $('log').textContent = `${new Date().toLocaleTimeString()} ${JSON.stringify(event)}\n${$('log').textContent}`;
  fetch('/demo/log', { method: 'POST', body: JSON.stringify(event) }).catch(() => {});
}

class Keyboard {
  constructor(bundle, vocabulary, session) {
    this.bundle = bundle;
    this.words = vocabulary.tokens;
    this.ids = new Map(this.words.map((w, i) => [w, i]));
    this.session = session;
    this.model = null;  // {version, etag, parameters}
  }

  encode(text) { return tokenize(text).map((w) => this.ids.get(w) ?? OOV); }

  /** Training examples of `text`'s sentences, as examples/keyboard_app.py makes them. */
  examples(text) {
    const out = [];
    for (const sentence of text.split(SENTENCE_END)) {
      const ids = [BOS, ...this.encode(sentence), EOS].slice(0, MAX_IDS);
      if (ids.length >= 3) out.push({ tokens: ids.slice(0, -1), targets: ids.slice(1) });
    }
    return out;
  }

  /** Up to k [word, probability] after `text` (its last sentence), completing a partly
   * typed last word. */
  async suggest(text, k = 3) {
    if (!this.model) return [];
    const sentence = text.split(SENTENCE_END).pop();
    const partial = /\s$/.test(sentence) || sentence === '' ? '' : (tokenize(sentence.split(/\s+/).pop()).pop() ?? '');
    const context = partial ? sentence.replace(/\S*$/, '') : sentence;
    const ids = [BOS, ...this.encode(context)];
    const feeds = { [this.bundle.inputNames[0]]: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]) };
    for (const spec of this.bundle.parameterSpecs) {
      feeds[spec.name] = new ort.Tensor('float32', this.model.parameters[spec.name], spec.shape);
    }
    const wanted = Object.fromEntries(this.session.inputNames.map((n) => [n, feeds[n]]));
    const logits = (await this.session.run(wanted, ['logits'])).logits;
    const v = logits.dims[2];
    const last = logits.data.subarray((ids.length - 1) * v, ids.length * v);
    const top = Math.max(...last);
    const exp = Array.from(last, (x) => Math.exp(x - top));
    const total = exp.reduce((a, b) => a + b, 0);
    return exp.map((p, i) => [i, p / total])
      .filter(([i]) => i >= SPECIALS && this.words[i].startsWith(partial))
      .sort((a, b) => b[1] - a[1]).slice(0, k).map(([i, p]) => [this.words[i], p]);
  }
}

async function identity(store, transport, config) {
  let key = await store.getState('demo.key');
  let doc;
  try {
    if (!key) throw new Error('no key yet');
    doc = await transport.enroll(config.population, config.secret, publicKeyOf(key));
  } catch {
    key = generateSigningKey();  // first visit, or a server that no longer knows the key
    doc = await transport.enroll(config.population, config.secret, publicKeyOf(key));
    await store.putState('demo.key', key);
  }
  return { deviceId: doc.device_id, signingKey: key };
}

async function main() {
  trackActivity();
  await initZstd();
  const config = await (await fetch('/demo/config.json')).json();
  const fetchBytes = async (name) => {
    const r = await fetch(`/bundle/${name}`);
    if (!r.ok) throw new Error(`/bundle/${name}: ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
  };
  const bundle = await Bundle.load(fetchBytes);
  const vocabulary = JSON.parse(new TextDecoder().decode(await fetchBytes(bundle.manifest.vocabulary ?? 'vocabulary.json')));
  const session = await ort.InferenceSession.create(await bundle.graph('infer'), { executionProviders: ['wasm'] });
  const keyboard = new Keyboard(bundle, vocabulary, session);
  const store = await IndexedDBStore.open('edge-fl-demo');
  const transport = new Transport(location.origin);
  const id = await identity(store, transport, config);
  show('device', id.deviceId);
  log({ event: 'enrolled', device_id: id.deviceId, model: bundle.modelId });

  const countExamples = async () => show('count', String(await store.count(COLLECTION)));
  const addText = async (text) => {
    const examples = keyboard.examples(text);
    if (examples.length) await store.addExamples(COLLECTION, examples);
    await countExamples();
    return examples.length;
  };
  if (q.get('sample') === '1' && (await store.count(COLLECTION)) === 0) await addText(SAMPLES.join('.'));
  await countExamples();

  let suggesting = 0;
  const text = $('text');
  const suggest = async () => {
    const ticket = ++suggesting;
    const words = await keyboard.suggest(text.value);
    if (ticket !== suggesting) return;  // a newer keystroke asked again
    const box = $('suggestions');
    box.replaceChildren(...words.map(([w, p]) => {
      const b = document.createElement('button');
      b.textContent = w;
      b.title = `p = ${p.toFixed(3)}`;
      b.onclick = () => {
        text.value = `${text.value.replace(/[a-z']*$/i, '')}${w} `;
        text.focus();
        suggest();
      };
      return b;
    }));
    return words;
  };

  // the newest model: a conditional GET, 304 while the version is the same
  const cached = await store.getState('demo.model');
  if (cached) keyboard.model = { ...cached, parameters: decodeParameters(cached.bytes, bundle.parameterSpecs).parameters };
  const refreshModel = async () => {
    const headers = keyboard.model?.etag ? { 'If-None-Match': keyboard.model.etag } : {};
    const r = await transport.request('GET', `/v1/tasks/${encodeURIComponent(config.task)}/model`, { headers });
    if (r.status === 304) return;
    const { header, parameters } = decodeParameters(r.body, bundle.parameterSpecs);
    const kept = { version: header.model_version, etag: r.headers.get('ETag'), bytes: r.body };
    await store.putState('demo.model', kept);
    keyboard.model = { ...kept, parameters };
    show('version', String(header.model_version));
    log({ event: 'model', version: header.model_version, bytes: r.body.length });
    const words = await suggest();
    log({ event: 'suggestions', version: header.model_version, text: text.value, words: (words ?? []).map(([w, p]) => [w, Number(p.toFixed(4))]) });
  };
  if (keyboard.model) show('version', `${keyboard.model.version} (cached)`);
  if (q.has('text')) text.value = q.get('text');
  await refreshModel();
  text.disabled = false;
  text.addEventListener('input', suggest);
  text.addEventListener('keydown', async (e) => {
    if (e.key !== 'Enter') return;
    e.preventDefault();
    const n = await addText(text.value);
    log({ event: 'stored', examples: n });
    text.value = '';
    suggest();
  });
  $('sample').onclick = async () => log({ event: 'stored', examples: await addText(SAMPLES.join('.')) });
  const optIn = $('optin');
  optIn.checked = q.get('optin') === '1';

  const policy = new PagePolicy({ idleMs: 1000 * Number(q.get('idle') ?? 30), minBattery: 0.5 });
  const readState = () => readPageState({ optIn: optIn.checked });
  const client = new FederatedClient({ bundle, transport, store, identity: id, policy, readState });
  let nextTry = 0;
  const participateWhenAllowed = async () => {
    const decision = policy.decide(await readState());
    const stored = await store.count(COLLECTION);
    show('eligibility', decision.allowed ? (stored ? 'eligible' : 'eligible, but no examples stored yet')
      : decision.reasons.join('; '));
    if (!decision.allowed || stored === 0 || Date.now() < nextTry) return;
    show('outcome', 'checking in / training ...');
    let r;
    try {
      r = await client.participate(config.task);
    } catch (e) {
      r = { status: 'error', reason: String(e.message ?? e) };
    }
    nextTry = Date.now() + 1000 * (r.status === 'later' ? (r.retryAfterS ?? 10) : 5);
    const summary = { event: 'participation', status: r.status, reason: r.reason ?? null,
      trained_on: r.modelVersion ?? null, examples: r.examples ?? 0, bytes_up: r.bytesUp ?? 0,
      server: r.server?.status ?? null };
    show('outcome', `${r.status}${r.reason ? ` (${r.reason})` : ''}${r.modelVersion !== undefined
      ? `: version ${r.modelVersion}, ${r.examples} examples, ${r.bytesUp} bytes up` : ''}${r.retryAfterS ? `, again in ${r.retryAfterS} s` : ''}`);
    if (r.status !== 'later' && r.status !== 'ineligible') log(summary);
    if (r.status === 'completed') await refreshModel();
  };
  const tick = async () => {
    try {
      await participateWhenAllowed();
    } catch (e) {
      log({ event: 'error', error: String(e.stack ?? e) });
    }
    setTimeout(tick, 2000);
  };
  tick();
  setInterval(() => refreshModel().catch((e) => log({ event: 'error', error: String(e) })), 10_000);
}

main().catch((e) => { show('outcome', `error: ${e.message}`); log({ event: 'error', error: String(e.stack ?? e) }); });
