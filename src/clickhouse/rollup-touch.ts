/**
 * The buckets a write touched, as rows for `rollup_touch` (schema-rollups.ts
 * explains why rollups are recomputed per touched bucket). PURE.
 */
import type { ComponentRow, ObservationRow } from './flatten.js';

export interface TouchRow {
  readonly grain: 'minute' | 'hour';
  readonly patient_id: string;
  readonly code: string;
  /** 'YYYY-MM-DD hh:mm:00' (UTC), the DateTime('UTC') text form. */
  readonly bucket: string;
}

type Keyed = Pick<ObservationRow | ComponentRow, 'patient_id' | 'code' | 'effective_start'>;

/** effective_start is 'YYYY-MM-DD hh:mm:ss.SSS': its prefixes are the minute and the hour. */
function bucketOf(effectiveStart: string, grain: TouchRow['grain']): string {
  return grain === 'minute'
    ? `${effectiveStart.slice(0, 16)}:00`
    : `${effectiveStart.slice(0, 13)}:00:00`;
}

/** Distinct touched buckets of one grain, in a stable order. */
export function touchedBuckets(rows: readonly Keyed[], grain: TouchRow['grain']): TouchRow[] {
  const seen = new Map<string, TouchRow>();
  for (const r of rows) {
    const bucket = bucketOf(r.effective_start, grain);
    const key = `${r.patient_id}\u0000${r.code}\u0000${bucket}`;
    if (!seen.has(key)) seen.set(key, { grain, patient_id: r.patient_id, code: r.code, bucket });
  }
  return [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, v]) => v);
}
