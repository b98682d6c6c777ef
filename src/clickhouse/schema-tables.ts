/**
 * DDL of the tables added after the first two migrations (schema.ts): waveform
 * samples, the raw-message audit trail and the reference data analysts join.
 * Every statement is idempotent (IF NOT EXISTS); names are db-qualified.
 *
 * Deduplication follows schema.ts: ReplacingMergeTree on a key whose parts are
 * stable for one row identity, versioned by the FHIR commit (samples) or by the
 * time an outcome was decided (device_messages), so a redelivered job is harmless
 * and a later outcome wins.
 */

export const SAMPLES_TABLE = 'samples';
export const DEVICE_MESSAGES_TABLE = 'device_messages';
export const REFERENCE_RANGES_TABLE = 'reference_ranges';
export const DEVICE_UNITS_TABLE = 'device_units';

const UTC_MS = "DateTime64(3, 'UTC')";
const LC = 'LowCardinality(String)';

/** One row per SampledData point; the point's own time is its sampling time. */
export function samplesTable(db: string): string {
  return `CREATE TABLE IF NOT EXISTS ${db}.${SAMPLES_TABLE} (
  observation_id String,
  component_index Int16,
  sample_index UInt32,
  dimension UInt16,
  patient_id String,
  device_id String,
  code ${LC},
  ts ${UTC_MS},
  value Nullable(Float64),
  flag ${LC},
  unit ${LC},
  template_version ${LC},
  fhir_committed_at ${UTC_MS},
  inserted_at ${UTC_MS} DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(fhir_committed_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (patient_id, code, ts, observation_id, component_index, sample_index)`;
}

/**
 * Every message the broker accepted, with its fate. The key (device, receipt,
 * message id) never changes for a message; outcome_at versions it, so the FHIR
 * stage's later verdict replaces the normalize stage's "processed".
 */
export function deviceMessagesTable(db: string): string {
  return `CREATE TABLE IF NOT EXISTS ${db}.${DEVICE_MESSAGES_TABLE} (
  message_id String,
  device_id String,
  mqtt_device_id String,
  patient_id String,
  topic String,
  qos UInt8,
  received_at ${UTC_MS},
  size_bytes UInt32,
  encoding ${LC},
  payload String CODEC(ZSTD(3)),
  outcome ${LC},
  error_code ${LC},
  error_stage ${LC},
  observation_count UInt32,
  template_version ${LC},
  outcome_at ${UTC_MS},
  inserted_at ${UTC_MS} DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(outcome_at)
PARTITION BY toYYYYMM(received_at)
ORDER BY (device_id, received_at, message_id)`;
}

/**
 * Screening limits per code for "out of range" analytics, one row per code
 * (ReplacingMergeTree: an INSERT of the same code replaces the limits). Adult
 * resting values close to the NEWS2 score bands (Royal College of Physicians,
 * 2017) — analytics thresholds, not alarm limits.
 */
export function referenceRangesTable(db: string): string {
  return `CREATE TABLE IF NOT EXISTS ${db}.${REFERENCE_RANGES_TABLE} (
  code ${LC},
  label String,
  low Float64,
  high Float64,
  unit ${LC},
  updated_at ${UTC_MS} DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY code`;
}

export const DEFAULT_REFERENCE_RANGES: readonly (readonly [
  string,
  string,
  number,
  number,
  string,
])[] = [
  ['8867-4', 'Heart rate', 50, 110, '/min'],
  ['59408-5', 'SpO2 (pulse oximetry)', 92, 100, '%'],
  ['2708-6', 'SpO2 (arterial)', 92, 100, '%'],
  ['8480-6', 'Systolic blood pressure', 100, 180, 'mm[Hg]'],
  ['8462-4', 'Diastolic blood pressure', 50, 110, 'mm[Hg]'],
  ['8310-5', 'Body temperature', 36, 38, 'Cel'],
  ['9279-1', 'Respiratory rate', 12, 20, '/min'],
];

/**
 * Seeds the defaults once (the migration runs once); codes already present are
 * left alone, so an operator's own limits survive.
 */
export function seedReferenceRanges(db: string): string {
  const rows = DEFAULT_REFERENCE_RANGES.map(
    ([code, label, low, high, unit]) => `('${code}', '${label}', ${low}, ${high}, '${unit}')`,
  ).join(',\n  ');
  return `INSERT INTO ${db}.${REFERENCE_RANGES_TABLE} (code, label, low, high, unit)
SELECT * FROM (SELECT * FROM values('code String, label String, low Float64, high Float64, unit String',
  ${rows}))
WHERE code NOT IN (SELECT code FROM ${db}.${REFERENCE_RANGES_TABLE})`;
}

/**
 * Where each device was: the care unit from `valid_from` until the device's next
 * row. Telemetry does not carry it; load it from the ADT or asset system
 * (docs/analytics.md). device_id is the FHIR Device id, as in observations.
 */
export function deviceUnitsTable(db: string): string {
  return `CREATE TABLE IF NOT EXISTS ${db}.${DEVICE_UNITS_TABLE} (
  device_id String,
  unit ${LC},
  valid_from ${UTC_MS},
  inserted_at ${UTC_MS} DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (device_id, valid_from)`;
}

/** Point lookups by Observation id (the sort key starts with the patient). */
export function observationIdIndex(db: string, table: string): string {
  return `ALTER TABLE ${db}.${table} ADD INDEX IF NOT EXISTS idx_id id TYPE bloom_filter(0.01) GRANULARITY 1`;
}
