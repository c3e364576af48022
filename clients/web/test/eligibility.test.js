// Page eligibility as data: each rule's reason code, and unknown APIs refuse nothing.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PagePolicy, ReasonCounter } from '../src/eligibility.js';

const good = { optIn: true, hidden: true, idleMs: 0, battery: null, connection: null };

test('a hidden tab of an opted-in user with unknown battery and network may train', () => {
  assert.ok(new PagePolicy().decide(good).allowed);
});

test('each rule says why it refuses', () => {
  const p = new PagePolicy({ idleMs: 60_000, minBattery: 0.5 });
  const cases = [
    [{ optIn: false }, 'no_opt_in'],
    [{ hidden: false, idleMs: 5_000 }, 'user_active'],
    [{ battery: { charging: false, level: 0.2 } }, 'battery_low'],
    [{ connection: { saveData: true, type: null, effectiveType: '4g' } }, 'save_data'],
    [{ connection: { saveData: false, type: 'cellular', effectiveType: '4g' } }, 'metered'],
    [{ connection: { saveData: false, type: null, effectiveType: '2g' } }, 'slow_network'],
  ];
  for (const [change, code] of cases) {
    const d = p.decide({ ...good, ...change });
    assert.deepEqual(d.codes, [code]);
    assert.equal(d.allowed, false);
    assert.equal(d.reasons.length, 1);
  }
  assert.ok(p.decide({ ...good, hidden: false, idleMs: 120_000 }).allowed);
  assert.ok(p.decide({ ...good, battery: { charging: true, level: 0.1 } }).allowed);
});

test('reasons are counted until exported', () => {
  const counter = new ReasonCounter();
  const p = new PagePolicy();
  counter.record(p.decide({ ...good, optIn: false }));
  counter.record(p.decide({ ...good, optIn: false }));
  assert.deepEqual(counter.export(), { no_opt_in: 2 });
  assert.deepEqual(counter.export(), {});
});
