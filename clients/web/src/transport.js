/**
 * The aggregator's HTTP API (docs/protocol.md section 6) over `fetch`, with the SDK's
 * retry rules: connection failures, 429 and 5xx are retried with exponential backoff and
 * full jitter, waiting at least the server's Retry-After; any other 4xx is final and
 * raised as ServerRejected with the server's error code. Time and randomness are
 * injected (`sleep`, `random`) so tests need not wait.
 */
import { sha256 } from './crypto.js';

export class TransportError extends Error {}

/** The server answered 4xx: retrying the same request will not help. */
export class ServerRejected extends TransportError {
  constructor(status, code, message, details) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const DEFAULT_RETRY = Object.freeze({ attempts: 6, baseS: 0.2, capS: 30 });

const b64 = (bytes) => btoa(String.fromCharCode(...bytes));
const hexOf = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

export class Transport {
  constructor(baseUrl, { token = null, retry = DEFAULT_RETRY, fetchImpl = globalThis.fetch.bind(globalThis),
    sleep = (s) => new Promise((r) => setTimeout(r, s * 1000)), random = Math.random,
    singleRequestBytes = 1 << 20, chunkBytes = 256 << 10 } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, '');
    Object.assign(this, { token, retry, fetchImpl, sleep, random, singleRequestBytes, chunkBytes });
    this.attemptsMade = 0;
    this.lastAttempts = 0;  // attempts of the last request that succeeded (> 1: retried)
    this.deviceId = null;
  }

  backoff(attempt) {
    return this.random() * Math.min(this.retry.capS, this.retry.baseS * 2 ** attempt);
  }

  /** One API call with retries: {status, body (Uint8Array), headers}. */
  async request(method, path, { json, data, headers = {} } = {}) {
    const h = { ...headers };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    let body;
    if (json !== undefined) {
      h['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    } else if (data !== undefined) {
      h['Content-Type'] = 'application/octet-stream';
      body = data;
    }
    let last = null;
    for (let attempt = 0; attempt < this.retry.attempts; attempt++) {
      this.attemptsMade += 1;
      let r;
      try {
        r = await this.fetchImpl(this.baseUrl + path, { method, headers: h, body });
      } catch (e) {  // connection refused or reset, DNS: transient
        last = e;
        await this.sleep(this.backoff(attempt));
        continue;
      }
      const bytes = new Uint8Array(await r.arrayBuffer());
      if (r.status < 400) {
        this.lastAttempts = attempt + 1;
        return { status: r.status, body: bytes, headers: r.headers };
      }
      const error = parseJson(bytes)?.error ?? {};
      if (r.status === 429 || r.status >= 500) {
        last = new TransportError(`${r.status} ${error.code ?? ''}`.trim());
        const wait = Number(r.headers.get('Retry-After') ?? 0) || 0;
        await this.sleep(Math.max(wait, this.backoff(attempt)));
        continue;
      }
      throw new ServerRejected(r.status, error.code ?? 'unknown', error.message ?? '', error);
    }
    throw new TransportError(`${method} ${path} failed after ${this.retry.attempts} attempts: ${last}`);
  }

  async call(method, path, options) {
    const { status, body } = await this.request(method, path, options);
    return status === 204 ? null : parseJson(body);
  }

  // -- the API ----------------------------------------------------------------------------
  async enroll(population, secret, publicKey) {
    const doc = await this.call('POST', '/v1/enroll', { json: { population, secret, public_key: b64(publicKey) } });
    this.token = doc.token;
    this.deviceId = doc.device_id;
    return doc;
  }

  checkIn(taskId = null, eligibility = {}, sdkVersion = 'web-0.1') {
    return this.call('POST', '/v1/checkin', { json: { task_id: taskId, eligibility, sdk_version: sdkVersion } });
  }

  /** A model version's bytes. With `cached` ({etag, bytes}) the request is conditional
   * and a 304 answers with the cached bytes. Returns {bytes, etag, fromCache}. */
  async downloadModel(taskId, version, cached = null) {
    const headers = cached?.etag ? { 'If-None-Match': cached.etag } : {};
    const { status, body, headers: h } = await this.request('GET',
      `/v1/tasks/${encodeURIComponent(taskId)}/model?version=${version}`, { headers });
    if (status === 304) return { bytes: cached.bytes, etag: cached.etag, fromCache: true };
    return { bytes: body, etag: h.get('ETag'), fromCache: false };
  }

  /** Small updates in one request; larger ones resumably, in chunks. */
  upload(taskId, data) {
    if (data.length <= this.singleRequestBytes) {
      return this.call('POST', `/v1/tasks/${encodeURIComponent(taskId)}/updates`, { data });
    }
    return this.uploadResumable(taskId, data);
  }

  /** Send `data` in chunks; after a failure ask the server how much it holds and go on
   * from there. The commit is idempotent like a single-request upload. */
  async uploadResumable(taskId, data) {
    const session = await this.call('POST', `/v1/tasks/${encodeURIComponent(taskId)}/uploads`,
      { json: { size: data.length, sha256: hexOf(sha256(data)) } });
    const path = `/v1/uploads/${session.upload_id}`;
    let { received } = session;
    let failures = 0;
    while (received < data.length) {
      const chunk = data.subarray(received, received + this.chunkBytes);
      try {
        received = (await this.call('PUT', `${path}?offset=${received}`, { data: chunk })).received;
      } catch (e) {
        if (e instanceof ServerRejected) {
          if (e.code !== 'upload_offset_mismatch') throw e;
          received = Number(e.details.received);
        } else {
          failures += 1;
          if (failures > this.retry.attempts) throw e;
          received = (await this.call('GET', path)).received;
        }
      }
    }
    return this.call('POST', `${path}/commit`);
  }

  submitEvaluation(taskId, modelVersion, sums) {
    return this.call('POST', `/v1/tasks/${encodeURIComponent(taskId)}/evaluations`, { json: { model_version: modelVersion, sums } });
  }

  reportFailure(taskId, reason) {
    return this.call('POST', `/v1/tasks/${encodeURIComponent(taskId)}/failures`, { json: { reason } });
  }
}

function parseJson(bytes) {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}
