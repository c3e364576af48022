/**
 * Eligibility from what a web page can know: the user's opt-in, whether the tab is hidden
 * or the user idle, the Battery Status API (Chromium) and the Network Information API
 * where present. `readPageState` takes the snapshot (the only function touching
 * `document` and `navigator`); `PagePolicy.decide` is a pure predicate over it returning a
 * decision with reason codes, as edge_sdk/eligibility.py does. An API the browser lacks
 * says nothing, and so refuses nothing.
 */
export class Decision {
  constructor(codes = [], reasons = []) {
    this.codes = codes;
    this.reasons = reasons;
  }

  get allowed() { return this.codes.length === 0; }
}

let lastInput = Date.now();

/** Start tracking user input (call once on a page). */
export function trackActivity(target = globalThis) {
  for (const event of ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart']) {
    target.addEventListener?.(event, () => { lastInput = Date.now(); }, { passive: true });
  }
}

/** {optIn, hidden, idleMs, battery: {charging, level} | null, connection: {...} | null}. */
export async function readPageState({ optIn, now = Date.now() }) {
  const nav = globalThis.navigator ?? {};
  let battery = null;
  if (typeof nav.getBattery === 'function') {
    try {
      const b = await nav.getBattery();
      battery = { charging: b.charging, level: b.level };
    } catch { /* the API refused: unknown */ }
  }
  const c = nav.connection;
  return {
    optIn: Boolean(optIn),
    hidden: globalThis.document ? globalThis.document.visibilityState === 'hidden' : true,
    idleMs: now - lastInput,
    battery,
    connection: c ? { saveData: Boolean(c.saveData), type: c.type ?? null, effectiveType: c.effectiveType ?? null } : null,
  };
}

export class PagePolicy {
  constructor({ idleMs = 60_000, minBattery = 0.5, allowCellular = false } = {}) {
    Object.assign(this, { idleMs, minBattery, allowCellular });
  }

  decide(state) {
    const codes = [];
    const reasons = [];
    const deny = (code, reason) => { codes.push(code); reasons.push(reason); };
    if (!state.optIn) deny('no_opt_in', 'the user has not opted in');
    if (!state.hidden && state.idleMs < this.idleMs) {
      deny('user_active', `tab visible and the user active ${Math.round(state.idleMs / 1000)} s ago`);
    }
    const b = state.battery;
    if (b && !b.charging && b.level < this.minBattery) {
      deny('battery_low', `battery ${b.level.toFixed(2)} < ${this.minBattery.toFixed(2)}, not charging`);
    }
    const c = state.connection;
    if (c?.saveData) deny('save_data', 'the user asked to save data');
    if (c && !this.allowCellular && c.type === 'cellular') deny('metered', 'on a cellular connection');
    if (c && ['slow-2g', '2g'].includes(c.effectiveType)) deny('slow_network', `network ${c.effectiveType}`);
    return new Decision(codes, reasons);
  }
}

/** Counts of the reasons a device was not eligible since its last check-in. */
export class ReasonCounter {
  constructor() { this.counts = {}; }

  record(decision) {
    for (const code of decision.codes) this.counts[code] = (this.counts[code] ?? 0) + 1;
  }

  export() {
    const out = this.counts;
    this.counts = {};
    return out;
  }
}
