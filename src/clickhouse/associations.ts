/**
 * A device's association history → `device_associations` rows. PURE.
 *
 * Every assign record of the history has one row, keyed (device_id,
 * period_seq): a live row when that record opens a period of the current
 * timeline, a tombstone (is_deleted = 1) when it does not (it continued a
 * period, or a later correction superseded it). All rows of one computation
 * carry history_version = the history's length. Because the log is append-only,
 * a later computation covers every key an earlier one did, with a higher
 * version, so ReplacingMergeTree(history_version, is_deleted) keeps the latest
 * whatever order the jobs run in, and a replayed job changes nothing.
 */
import { patientPeriods, type AssociationRecord } from '../devices/associations.js';
import { deviceResourceId } from '../mapping/identity.js';
import { toClickHouseDateTime } from './time.js';

export const DEVICE_ASSOCIATIONS_TABLE = 'device_associations';

export interface DeviceAssociationRow {
  /** The FHIR Device id, as in observations.device_id (the join key). */
  readonly device_id: string;
  readonly mqtt_device_id: string;
  /** seq of the assign record (the period's key). */
  readonly period_seq: number;
  readonly patient_id: string;
  readonly valid_from: string;
  /** null while the association is open. */
  readonly valid_to: string | null;
  readonly source: string;
  readonly actor: string;
  readonly recorded_at: string;
  /** Who ended it ('' while open). */
  readonly ended_source: string;
  readonly ended_actor: string;
  readonly correction: number;
  readonly history_version: number;
  readonly is_deleted: number;
}

export function deviceAssociationRows(
  deviceId: string,
  history: readonly AssociationRecord[],
): DeviceAssociationRow[] {
  const periods = new Map(patientPeriods(history).map((p) => [p.openedBy, p]));
  const bySeq = new Map(history.map((r) => [r.seq, r]));
  const rows: DeviceAssociationRow[] = [];
  for (const r of history) {
    if (r.kind !== 'assign') continue;
    const p = periods.get(r.seq);
    const end = p?.closedBy === undefined ? undefined : bySeq.get(p.closedBy);
    rows.push({
      device_id: deviceResourceId(deviceId),
      mqtt_device_id: deviceId,
      period_seq: r.seq,
      patient_id: r.patientId,
      valid_from: toClickHouseDateTime(p?.start ?? r.at),
      valid_to: p?.end === undefined ? null : toClickHouseDateTime(p.end),
      source: r.source,
      actor: r.actor,
      recorded_at: toClickHouseDateTime(r.recordedAt),
      ended_source: end?.source ?? '',
      ended_actor: end?.actor ?? '',
      correction: r.correction ? 1 : 0,
      history_version: history.length,
      is_deleted: p ? 0 : 1,
    });
  }
  return rows;
}

export function deviceAssociationsTable(db: string): string {
  return `CREATE TABLE IF NOT EXISTS ${db}.${DEVICE_ASSOCIATIONS_TABLE} (
  device_id String,
  mqtt_device_id String,
  period_seq UInt32,
  patient_id String,
  valid_from DateTime64(3, 'UTC'),
  valid_to Nullable(DateTime64(3, 'UTC')),
  source LowCardinality(String),
  actor String,
  recorded_at DateTime64(3, 'UTC'),
  ended_source LowCardinality(String),
  ended_actor String,
  correction UInt8,
  history_version UInt32,
  is_deleted UInt8,
  inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(history_version, is_deleted)
ORDER BY (device_id, period_seq)`;
}
