/**
 * Device–patient associations over time (src/devices/associations.ts): the
 * periods a history gives, the edges, corrections, back-dating, gateway links,
 * and what FHIR and ClickHouse are given to follow it.
 */
import type { BundleEntry, Device, DeviceUseStatement } from 'fhir/r4.js';
import { describe, expect, it } from 'vitest';
import { deviceAssociationRows } from '../../src/clickhouse/associations.js';
import {
  checkChange,
  linkedAt,
  patientPeriods,
  periodAt,
  type AssociationChange,
  type AssociationDraft,
  type AssociationRecord,
} from '../../src/devices/associations.js';
import type { PipelineError } from '../../src/errors.js';
import { createAssociationSync } from '../../src/fhir/associations.js';

const T0 = Date.parse('2026-11-01T08:00:00Z');
const H = 3_600_000;
const who = { source: 'cli' as const, actor: 'nurse.kim' };

/** A history from drafts, in recording order. */
type Change = AssociationChange & { at: number; correction?: boolean };

function log(...drafts: Change[]) {
  return drafts.map((d, seq) => ({ ...who, recordedAt: T0 + 100 * H + seq, ...d, seq }));
}

const assign = (patientId: string, at: number, extra = {}) =>
  ({ kind: 'assign', patientId, at, ...extra }) as const;
const unassign = (at: number, extra = {}) => ({ kind: 'unassign', at, ...extra }) as const;

function refusal(fn: () => void): string {
  try {
    fn();
  } catch (err) {
    return (err as PipelineError).code;
  }
  return 'accepted';
}

describe('association periods', () => {
  it('a reassignment from A to B splits time at the change, half-open', () => {
    const periods = patientPeriods(log(assign('A', T0), assign('B', T0 + 2 * H)));
    expect(periods.map((p) => [p.patientId, p.start, p.end])).toEqual([
      ['A', T0, T0 + 2 * H],
      ['B', T0 + 2 * H, undefined],
    ]);
    expect(periodAt(periods, T0 + 2 * H - 1)?.patientId).toBe('A');
    // A reading exactly at the change belongs to the association that starts there.
    expect(periodAt(periods, T0 + 2 * H)?.patientId).toBe('B');
    expect(periodAt(periods, T0 - 1)).toBeUndefined();
  });

  it('an unassigned gap belongs to no one', () => {
    const periods = patientPeriods(log(assign('A', T0), unassign(T0 + H), assign('B', T0 + 3 * H)));
    expect(periodAt(periods, T0 + 2 * H)).toBeUndefined();
    expect(periodAt(periods, T0 + H)).toBeUndefined();
    expect(periodAt(periods, T0 + 3 * H)?.patientId).toBe('B');
  });

  it('records fold in effective-time order, whatever order they were recorded in', () => {
    // The gap fill (B, from 1 h) is recorded after the later assignment to C.
    const periods = patientPeriods(
      log(assign('A', T0), unassign(T0 + H), assign('C', T0 + 3 * H), assign('B', T0 + H)),
    );
    expect(periods.map((p) => [p.patientId, p.start, p.end])).toEqual([
      ['A', T0, T0 + H],
      ['B', T0 + H, T0 + 3 * H],
      ['C', T0 + 3 * H, undefined],
    ]);
  });

  it('a correction at the same time wins, because it was recorded later; the wrong period vanishes', () => {
    const h = log(assign('WRONG', T0), assign('RIGHT', T0, { correction: true }));
    const periods = patientPeriods(h);
    expect(periods.map((p) => [p.patientId, p.openedBy])).toEqual([['RIGHT', 1]]);
  });

  it('assigning the patient already associated continues the period', () => {
    const periods = patientPeriods(log(assign('A', T0), assign('A', T0 + H)));
    expect(periods).toHaveLength(1);
    expect(periods[0]).toMatchObject({ patientId: 'A', start: T0, openedBy: 0 });
  });

  it('gateway links hold over time, half-open like associations', () => {
    const h = log(
      { kind: 'link', gatewayId: 'hub', at: T0 },
      { kind: 'unlink', gatewayId: 'hub', at: T0 + H },
    );
    expect(linkedAt(h, 'hub', T0 - 1)).toBe(false);
    expect(linkedAt(h, 'hub', T0)).toBe(true);
    expect(linkedAt(h, 'hub', T0 + H)).toBe(false);
    expect(linkedAt(h, 'other', T0)).toBe(false);
  });
});

describe('recording a change', () => {
  const now = T0 + 10 * H;
  const draft = (d: Change): AssociationDraft => ({ ...who, recordedAt: now, ...d });
  const history = log(assign('A', T0), unassign(T0 + 2 * H), assign('B', T0 + 5 * H));

  it('a change taking effect now is always accepted', () => {
    expect(refusal(() => checkChange(history, draft(assign('C', now))))).toBe('accepted');
  });

  it('a back-dated change may fill a gap with no patient', () => {
    expect(refusal(() => checkChange(history, draft(assign('C', T0 + 3 * H))))).toBe('accepted');
  });

  it('a back-dated change over time that belonged to a patient is a conflict, unless it says it is a correction', () => {
    expect(refusal(() => checkChange(history, draft(assign('C', T0 + H))))).toBe(
      'AssociationConflict',
    );
    expect(refusal(() => checkChange(history, draft(unassign(T0 + 6 * H))))).toBe(
      'AssociationConflict',
    );
    expect(
      refusal(() => checkChange(history, draft(assign('C', T0 + H, { correction: true })))),
    ).toBe('accepted');
  });

  it('a change cannot take effect in the future', () => {
    expect(refusal(() => checkChange(history, draft(assign('C', now + 10 * 60_000))))).toBe(
      'InvalidArgument',
    );
  });
});

describe('device_associations rows', () => {
  it('one row per assign record: live where it opens a period, a tombstone where a correction superseded it, all at the history version', () => {
    const h = log(
      assign('WRONG', T0),
      assign('A', T0, { correction: true }),
      assign('A', T0 + H),
      unassign(T0 + 2 * H),
    );
    const rows = deviceAssociationRows('monitor-1', h);
    expect(rows.map((r) => [r.period_seq, r.patient_id, r.is_deleted, r.history_version])).toEqual([
      [0, 'WRONG', 1, 4],
      [1, 'A', 0, 4],
      [2, 'A', 1, 4],
    ]);
    expect(rows[1]).toMatchObject({
      device_id: 'dev-monitor-1',
      valid_from: '2026-11-01 08:00:00.000',
      valid_to: '2026-11-01 10:00:00.000',
      ended_actor: 'nurse.kim',
      correction: 1,
    });
  });
});

describe('FHIR follows the history', () => {
  /** A FHIR store in memory: enough to see what the sync writes. */
  function fakeStore(initial: Record<string, unknown> = {}) {
    const resources = new Map<string, unknown>(Object.entries(initial));
    const transactions: BundleEntry[][] = [];
    return {
      resources,
      transactions,
      ensurePatients: () => Promise.resolve(),
      read: <T>(type: string, id: string) => Promise.resolve(resources.get(`${type}/${id}`) as T),
      search: <T>(type: string) =>
        Promise.resolve(
          [...resources.entries()].filter(([k]) => k.startsWith(`${type}/`)).map(([, v]) => v as T),
        ),
      transaction: (entries: readonly BundleEntry[]) => {
        transactions.push([...entries]);
        for (const e of entries) resources.set(e.request!.url, e.resource);
        return Promise.resolve({
          resourceType: 'Bundle' as const,
          type: 'transaction-response' as const,
        });
      },
    };
  }

  function syncOf(history: AssociationRecord[], store: ReturnType<typeof fakeStore>, now: number) {
    return createAssociationSync({
      fhir: store,
      patients: store,
      reader: {
        history: () => Promise.resolve(history),
        histories: () => Promise.resolve(new Map()),
        length: () => Promise.resolve(history.length),
      },
      deviceIdentifierSystem: 'urn:iomt:device',
      createPatients: false,
      now: () => now,
    });
  }

  it('Device.patient is the patient now; each period is a DeviceUseStatement; a superseded one is entered-in-error', async () => {
    const store = fakeStore();
    const history = log(assign('A', T0), assign('B', T0 + 2 * H));
    await syncOf(history, store, T0 + 3 * H).sync('monitor-1');
    const device = store.resources.get('Device/dev-monitor-1') as Device;
    expect(device.patient).toEqual({ reference: 'Patient/B' });
    const statements = [...store.resources.values()].filter(
      (r) => (r as { resourceType: string }).resourceType === 'DeviceUseStatement',
    ) as DeviceUseStatement[];
    expect(
      statements.map((s) => [
        s.subject.reference,
        s.status,
        s.timingPeriod?.start,
        s.timingPeriod?.end,
      ]),
    ).toEqual([
      ['Patient/A', 'completed', '2026-11-01T08:00:00.000Z', '2026-11-01T10:00:00.000Z'],
      ['Patient/B', 'active', '2026-11-01T10:00:00.000Z', undefined],
    ]);

    // A correction: the move to B was wrong, it was C. B's statement stays, marked.
    history.push({
      ...who,
      ...assign('C', T0 + 2 * H),
      correction: true,
      recordedAt: T0 + 3 * H,
      seq: history.length,
    });
    await syncOf(history, store, T0 + 3 * H).sync('monitor-1');
    const after = [...store.resources.values()].filter(
      (r) => (r as { resourceType: string }).resourceType === 'DeviceUseStatement',
    ) as DeviceUseStatement[];
    expect(after.map((s) => [s.subject.reference, s.status]).sort()).toEqual([
      ['Patient/A', 'completed'],
      ['Patient/B', 'entered-in-error'],
      ['Patient/C', 'active'],
    ]);
    expect((store.resources.get('Device/dev-monitor-1') as Device).patient).toEqual({
      reference: 'Patient/C',
    });

    // Written again with nothing new: nothing is sent.
    const sent = store.transactions.length;
    await syncOf(history, store, T0 + 3 * H).sync('monitor-1');
    expect(store.transactions).toHaveLength(sent);
  });

  it('after an unassignment the Device names no patient', async () => {
    const store = fakeStore();
    await syncOf(log(assign('A', T0), unassign(T0 + H)), store, T0 + 2 * H).sync('m-2');
    expect((store.resources.get('Device/dev-m-2') as Device).patient).toBeUndefined();
  });
});
