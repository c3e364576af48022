/**
 * Error feedback (Seide et al. 2014; Stich et al. 2018): what compression dropped this
 * round is added to the next round's delta. The residual is float32 arrays by tensor
 * name; keep it (IndexedDB stores Float32Arrays as they are) and move it on only once the
 * server acknowledged the upload, as edge_sdk does.
 */
export class ErrorFeedback {
  constructor(residual = {}) {
    this.residual = { ...residual };
  }

  /** delta + residual, new Float32Arrays (binary32 sums); delta is not mutated. */
  corrected(delta) {
    const out = {};
    for (const [name, v] of Object.entries(delta)) {
      const r = this.residual[name];
      const c = Float32Array.from(v);
      if (r !== undefined) for (let j = 0; j < c.length; j++) c[j] = v[j] + r[j];
      out[name] = c;
    }
    return out;
  }

  /** residual = what we meant to send - what the server will reconstruct. */
  remember(sent, reconstructed) {
    const residual = {};
    for (const [name, v] of Object.entries(sent)) {
      const rec = reconstructed[name];
      const r = new Float32Array(v.length);
      for (let j = 0; j < v.length; j++) r[j] = v[j] - rec[j];
      residual[name] = r;
    }
    this.residual = residual;
  }
}
