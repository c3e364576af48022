/**
 * One participation of a browser device, orchestrated from the client's parts, as
 * edge_sdk/client.py does it: eligibility -> check-in -> model download (ETag) ->
 * training in onnxruntime-web (eligibility re-checked between batches) -> eligibility
 * again -> encode (error feedback, the default codec, signature) -> upload with retries.
 * The residual and the participation history move on only once the server acknowledged
 * the upload. No maths and no bytes here.
 *
 * Idempotency (the rule of docs/aggregator.md, "Idempotency"; the server scopes keys to
 * the device and the task): each participation draws a random 128-bit nonce, kept in the
 * store while the participation is open, which is its update's key. A retry of the same
 * participation (same task, round and model version, after a lost answer or a reload)
 * reuses it and is counted once; a new participation is a new update. A `duplicate`
 * answer is success only when the key went out before (the transport retried, or an
 * earlier attempt of this participation sent it); otherwise the participation ends
 * `rejected` with reason `unexpected_duplicate`.
 *
 * Buffers (BatchNorm running statistics, bundle.bufferNames): the train step updates
 * them like parameters. With the plan's `buffers: "local"` (FedBN) the device trains
 * from its own kept values instead of the server's, sends zeros as their deltas and
 * keeps the values its training reached once the server acknowledged the update
 * (local_buffers.js; federated evaluation uses them too). With "average" (the default)
 * they travel as parameters do, and what a device kept for the task is forgotten.
 */
import { DEFAULT_CODEC } from './codec.js';
import { ErrorFeedback } from './error_feedback.js';
import { decodeParameters, encodeUpdate } from './message.js';
import { ReasonCounter } from './eligibility.js';
import { LocalBuffers } from './local_buffers.js';
import { Evaluator, LocalTrainer } from './trainer.js';
import { ServerRejected } from './transport.js';

export const HISTORY_KEY = 'client.participation_history';
const residualKey = (task) => `client.error_feedback.${task}`;
const participationKey = (task) => `client.participation.${task}`;
const modelKey = (task) => `client.model.${task}`;

const hexOf = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/** The open participation of assignment `a` as kept in `store` (a retry after a reload
 * continues it), or a new one with a fresh nonce from the platform's CSPRNG:
 * {round_id, model_version, nonce, uploads}. */
export async function openParticipation(store, a) {
  const kept = await store.getState(participationKey(a.task_id));
  if (kept && kept.round_id === a.round_id && kept.model_version === a.model_version
      && typeof kept.nonce === 'string' && Number.isInteger(kept.uploads)) return kept;
  const nonce = hexOf(crypto.getRandomValues(new Uint8Array(16)));
  return { round_id: a.round_id, model_version: a.model_version, nonce, uploads: 0 };
}

export class FederatedClient {
  /**
   * bundle (Bundle), transport (Transport, enrolled), store (IndexedDBStore or
   * MemoryStore), identity {deviceId, signingKey}, policy (PagePolicy), readState (async
   * () -> page state), collection (examples' collection), codec (default: the SDK's).
   */
  constructor({ bundle, transport, store, identity, policy, readState, collection = 'default',
    codec = DEFAULT_CODEC, random = Math.random, now = () => Date.now() / 1000 }) {
    Object.assign(this, { bundle, transport, store, identity, policy, readState, collection, codec, random, now });
    this.reasons = new ReasonCounter();
    this.buffers = new LocalBuffers(store, bundle);
    this.trainer = null;
    this.evaluator = null;
  }

  async eligible() {
    const decision = this.policy.decide(await this.readState());
    if (!decision.allowed) this.reasons.record(decision);
    return decision;
  }

  /** One participation: {status: "ineligible" | "later" | "completed" | "evaluated" |
   * "aborted" | "rejected", reason, taskId, modelVersion, examples, bytesDown, bytesUp,
   * server (the server's answer), delta and update (what was sent)}. */
  async participate(taskId = null) {
    const decision = await this.eligible();
    if (!decision.allowed) return { status: 'ineligible', reason: decision.codes.join(',') };
    const answer = await this.transport.checkIn(taskId, this.reasons.export());
    if (answer.evaluation) return this.evaluate(answer.evaluation);
    if (!answer.assignment) return { status: 'later', retryAfterS: answer.retry_after_s };
    const a = answer.assignment;
    const result = { status: 'aborted', taskId: a.task_id, modelVersion: a.model_version, examples: 0, bytesDown: 0, bytesUp: 0 };
    const fail = async (reason) => {
      await this.transport.reportFailure(a.task_id, reason);
      return { ...result, reason };
    };
    if (a.model_id !== this.bundle.modelId) return fail('bundle_mismatch');
    const downloaded = await this.model(a.task_id, a.model_version);
    result.bytesDown = downloaded.bytes;
    const plan = a.plan ?? {};
    const local = plan.buffers === 'local';
    let parameters = downloaded.parameters;
    if (local) parameters = await this.buffers.apply(a.task_id, parameters);
    else await this.buffers.forget(a.task_id);
    if (this.trainer === null) this.trainer = await LocalTrainer.create(this.bundle, parameters);
    else this.trainer.setParameters(parameters);
    const stopCheck = async () => {
      const d = await this.eligible();
      return d.allowed ? null : d.codes[0];
    };
    const training = await this.trainer.train(() => this.store.examples(this.collection), {
      epochs: plan.epochs ?? 1, batchSize: plan.batch_size ?? 16, maxSteps: plan.max_steps ?? null,
      lr: plan.lr ?? 0.1,
    }, stopCheck);
    if (training.status !== 'completed' || training.examples === 0) {
      return fail(training.stopReason ?? 'no_examples');
    }
    let delta = this.trainer.delta(parameters);
    if (!Object.values(delta).every((v) => v.every(Number.isFinite))) return fail('diverged');
    const reason = await stopCheck();  // once more, before spending the uplink
    if (reason) return fail(reason);
    result.examples = training.examples;
    if (a.secagg) return fail('secagg_unsupported');
    let kept = null;
    if (local) [kept, delta] = this.buffers.split(parameters, delta);  // they stay here
    return this.upload(a, delta, training, result, kept);
  }

  /** `kept`: the buffer values to keep once the server acknowledged (null: none). */
  async upload(a, delta, training, result, kept = null) {
    const feedback = new ErrorFeedback((await this.store.getState(residualKey(a.task_id))) ?? {});
    const metrics = {};
    for (const k of ['mean_loss', 'accuracy']) {
      if (Number.isFinite(training.metrics[k])) metrics[k] = training.metrics[k];
    }
    const participation = await openParticipation(this.store, a);
    const meta = {
      task_id: a.task_id, model_id: this.bundle.modelId, model_version: a.model_version,
      device_id: this.identity.deviceId, idempotency_key: participation.nonce,
      num_examples: training.examples, metrics,
    };
    const update = encodeUpdate(delta, this.bundle.parameterSpecs, meta, {
      codec: this.codec, signingKey: this.identity.signingKey, feedback, random: this.random,
    });
    const sentBefore = participation.uploads > 0;  // an earlier attempt may have arrived
    participation.uploads += 1;
    await this.store.putState(participationKey(a.task_id), participation);
    try {
      result.server = await this.transport.upload(a.task_id, update);
    } catch (e) {
      if (e instanceof ServerRejected) {
        await this.store.deleteState(participationKey(a.task_id));  // the participation is over
        return { ...result, status: 'rejected', reason: e.code };
      }
      throw e;  // transient: the participation stays open, a retry reuses its nonce
    }
    await this.store.deleteState(participationKey(a.task_id));
    if (result.server?.status === 'duplicate' && !(sentBefore || this.transport.lastAttempts > 1)) {
      // the key never went out before: the server holds some other update under it
      return { ...result, status: 'rejected', reason: 'unexpected_duplicate' };
    }
    // only an acknowledged upload moves the residual, the kept buffers and the history on
    await this.store.putState(residualKey(a.task_id), feedback.residual);
    if (kept !== null) await this.buffers.save(a.task_id, kept);
    const history = (await this.store.getState(HISTORY_KEY)) ?? [];
    await this.store.putState(HISTORY_KEY, [...history.slice(-99), this.now()]);
    return { ...result, status: 'completed', bytesUp: update.length, delta, update };
  }

  /** Federated evaluation: metric sums of the given model on the local examples. */
  async evaluate(e) {
    const result = { status: 'evaluated', taskId: e.task_id, modelVersion: e.model_version, examples: 0, bytesDown: 0, bytesUp: 0 };
    if (e.model_id !== this.bundle.modelId) return { ...result, status: 'aborted', reason: 'bundle_mismatch' };
    const { parameters: served, bytes } = await this.model(e.task_id, e.model_version);
    result.bytesDown = bytes;
    const parameters = await this.buffers.apply(e.task_id, served);  // kept only for "local" tasks
    this.evaluator ??= await Evaluator.create(this.bundle);
    const metrics = await this.evaluator.evaluate(parameters, this.store.examples(this.collection));
    const sums = {};
    for (const k of ['loss_sum', 'correct', 'correct_top3', 'count']) if (k in metrics) sums[k] = metrics[k];
    result.examples = sums.count ?? 0;
    result.server = await this.transport.submitEvaluation(e.task_id, e.model_version, sums);
    return result;
  }

  /** The model of (task, version): a conditional GET when this version is cached (a
   * version's bytes never change); decoded and checked. {parameters, bytes, fromCache}. */
  async model(taskId, version) {
    const cached = await this.store.getState(modelKey(taskId));
    const hit = cached && cached.version === version ? cached : null;
    const got = await this.transport.downloadModel(taskId, version, hit);
    if (!got.fromCache) await this.store.putState(modelKey(taskId), { version, etag: got.etag, bytes: got.bytes });
    const { parameters } = decodeParameters(got.bytes, this.bundle.parameterSpecs);
    return { parameters, bytes: got.fromCache ? 0 : got.bytes.length, fromCache: got.fromCache };
  }
}
