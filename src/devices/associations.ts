/**
 * Device–patient associations over time, after IHE Devices Point-of-Care
 * Identity Management (PCIM rev. 2.0): a device's history is an append-only
 * log of association records — assign (to a patient), unassign, the gateway
 * links it may be relayed through, and its credential lifecycle (registered,
 * secret rotated, removed) for the audit — each with the time it takes
 * effect, when it was recorded, its source (cli, api, feed) and its actor. A
 * record is never rewritten: a correction is a new record at the same
 * effective time, which wins because it was recorded later.
 *
 * PURE: data in, data out; the clock comes in as arguments.
 *
 * The rules (docs/associations.md):
 *  - Periods are half-open, [start, end): a reading taken exactly at a change
 *    belongs to the association that starts there.
 *  - Records fold in effective-time order; records with the same effective
 *    time fold in recording order (`seq`), so the later one wins.
 *  - A reading belongs to the patient whose period covers its own time, never
 *    to whoever holds the device when the job runs; none covers it → no
 *    patient (the pipeline dead-letters it as NoPatientAssociated).
 *  - A record that takes effect before it is recorded (back-dated) may only
 *    fill time that had no patient; moving time that already belonged to a
 *    patient is a correction and must say so (AssociationConflict otherwise),
 *    because readings of that time may already be charted.
 */
import { PipelineError } from '../errors.js';

export type AssociationSource = 'cli' | 'api' | 'feed' | 'migration';
export const ASSOCIATION_SOURCES: readonly AssociationSource[] = [
  'cli',
  'api',
  'feed',
  'migration',
];

export type AssociationChange =
  | {
      readonly kind: 'assign';
      readonly patientId: string;
      /** The operator said the Patient is new: the FHIR writer may create it. */
      readonly newPatient?: boolean;
    }
  | { readonly kind: 'unassign' }
  | { readonly kind: 'link'; readonly gatewayId: string }
  | { readonly kind: 'unlink'; readonly gatewayId: string }
  // Credential lifecycle, kept in the same log so that one history tells it all.
  | { readonly kind: 'registered' }
  | { readonly kind: 'secret-rotated' }
  | { readonly kind: 'removed' };

/** One record of a device's history, as stored. */
export type AssociationRecord = AssociationChange & {
  /** Position in the device's log, from 0: the recording order. */
  readonly seq: number;
  /** When it takes effect, epoch ms. */
  readonly at: number;
  /** When it was recorded, epoch ms. */
  readonly recordedAt: number;
  readonly source: AssociationSource;
  /** Who recorded it (an operator's name, a feed's system name); never patient data. */
  readonly actor: string;
  /** It knowingly replaces what was recorded for that time before. */
  readonly correction?: boolean;
  /** Free text such as "barcode scan at bed 12"; operator-written. */
  readonly note?: string;
};

/** A record before it has its place in the log. */
export type AssociationDraft = Omit<AssociationRecord, 'seq'>;

/** A time during which one patient was associated with the device. */
export interface AssociationPeriod {
  readonly patientId: string;
  /** epoch ms, inclusive */
  readonly start: number;
  /** epoch ms, exclusive; undefined while the association is open */
  readonly end: number | undefined;
  /** seq of the record that opened the period: its stable key (FHIR id, ClickHouse row). */
  readonly openedBy: number;
  /** seq of the record that closed it, if closed. */
  readonly closedBy: number | undefined;
  readonly newPatient: boolean;
}

function ordered(records: readonly AssociationRecord[]): AssociationRecord[] {
  return [...records].sort((a, b) => a.at - b.at || a.seq - b.seq);
}

/**
 * The patient periods of a history. Records are folded in effective-time
 * order; assigning the patient already associated continues the period.
 */
export function patientPeriods(records: readonly AssociationRecord[]): AssociationPeriod[] {
  const periods: AssociationPeriod[] = [];
  let open: { patientId: string; start: number; openedBy: number; newPatient: boolean } | undefined;
  const close = (at: number, by: number) => {
    if (!open) return;
    // A period of zero length (a correction at the same instant) is no period.
    if (at > open.start) periods.push({ ...open, end: at, closedBy: by });
    open = undefined;
  };
  for (const r of ordered(records)) {
    if (r.kind === 'assign') {
      if (open?.patientId === r.patientId) continue;
      close(r.at, r.seq);
      open = {
        patientId: r.patientId,
        start: r.at,
        openedBy: r.seq,
        newPatient: r.newPatient === true,
      };
    } else if (r.kind === 'unassign') {
      close(r.at, r.seq);
    }
  }
  if (open) periods.push({ ...open, end: undefined, closedBy: undefined });
  return periods;
}

/** The period covering `at` (epoch ms), if any: [start, end). */
export function periodAt(
  periods: readonly AssociationPeriod[],
  at: number,
): AssociationPeriod | undefined {
  return periods.find((p) => p.start <= at && (p.end === undefined || at < p.end));
}

/** Whether `gatewayId` could relay readings of this device at `at` (same half-open rule). */
export function linkedAt(
  records: readonly AssociationRecord[],
  gatewayId: string,
  at: number,
): boolean {
  let linked = false;
  for (const r of ordered(records)) {
    if (r.at > at) break;
    if ((r.kind === 'link' || r.kind === 'unlink') && r.gatewayId === gatewayId)
      linked = r.kind === 'link';
  }
  return linked;
}

/** Gateways linked now (for listings). */
export function currentGateways(records: readonly AssociationRecord[], now: number): string[] {
  const ids = new Set<string>();
  for (const r of records) if (r.kind === 'link') ids.add(r.gatewayId);
  return [...ids].filter((g) => linkedAt(records, g, now)).sort();
}

/** Every time at which either history may change patient within [from, to). */
function boundaries(
  a: readonly AssociationPeriod[],
  b: readonly AssociationPeriod[],
  from: number,
  to: number,
): number[] {
  const times = new Set<number>([from]);
  for (const p of [...a, ...b]) {
    for (const t of [p.start, p.end]) if (t !== undefined && t >= from && t < to) times.add(t);
  }
  return [...times].sort((x, y) => x - y);
}

export interface ChangeCheckOptions {
  /** Epoch ms: what "now" is for the check (the draft's recordedAt by default). */
  readonly now?: number;
  /** A change may take effect at most this far after it is recorded (clock skew), ms. */
  readonly maxFutureMs?: number;
}

/**
 * Refuses a draft that would silently move time already attributed to a patient.
 * A back-dated record (effective before it is recorded) may fill a gap with no
 * patient; changing who had the device during [at, now) needs `correction`:
 * readings of that time may already be charted on the patient recorded before,
 * and a correction does not move them (docs/associations.md says how to find them).
 */
export function checkChange(
  records: readonly AssociationRecord[],
  draft: AssociationDraft,
  options: ChangeCheckOptions = {},
): void {
  const now = options.now ?? draft.recordedAt;
  const maxFuture = options.maxFutureMs ?? 60_000;
  if (!Number.isFinite(draft.at)) {
    throw new PipelineError('InvalidArgument', 'the association time is not a valid time');
  }
  if (draft.at > now + maxFuture) {
    throw new PipelineError(
      'InvalidArgument',
      'an association cannot take effect in the future: record it when it happens',
    );
  }
  if (draft.kind !== 'assign' && draft.kind !== 'unassign') return;
  if (draft.at >= now || draft.correction === true) return;
  const before = patientPeriods(records);
  const after = patientPeriods([
    ...records,
    { ...draft, seq: records.length } as AssociationRecord,
  ]);
  for (const t of boundaries(before, after, draft.at, now)) {
    const was = periodAt(before, t)?.patientId;
    const becomes = periodAt(after, t)?.patientId;
    if (was !== undefined && was !== becomes) {
      throw new PipelineError(
        'AssociationConflict',
        `from ${new Date(t).toISOString()} the device was already associated with another patient; ` +
          'readings of that time may already be charted. Record it as a correction (--correction) ' +
          'if that association was wrong',
        { details: { at: draft.at } },
      );
    }
  }
}

/** The patient associated now, if any. */
export function currentPatient(
  records: readonly AssociationRecord[],
  now: number,
): string | undefined {
  return periodAt(patientPeriods(records), now)?.patientId;
}

/**
 * Whether `patientId` was associated with the device at some time in
 * [start, end) — for grouped Observations (windows), whose readings were each
 * attributed at their own time.
 */
export function associatedDuring(
  periods: readonly AssociationPeriod[],
  patientId: string,
  start: number,
  end: number,
): boolean {
  return periods.some(
    (p) =>
      p.patientId === patientId &&
      p.start < Math.max(end, start + 1) &&
      (p.end === undefined || p.end > start),
  );
}
