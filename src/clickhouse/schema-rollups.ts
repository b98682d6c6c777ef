/**
 * Views for exact reads, and the per-minute / per-hour rollups kept by
 * materialized views. Every statement is idempotent; names are db-qualified.
 *
 * Why rollups are recomputed, not accumulated. The mirror is at least once and
 * an Observation may get a newer FHIR version, so the raw tables hold duplicates
 * and superseded versions until merges (FINAL hides them). A materialized view
 * that aggregates the inserted rows would count a redelivered row twice and keep
 * a superseded value in min/max forever. So the rollups are recomputed from the
 * deduplicated rows (`vital_points`, built on FINAL) for each bucket a write
 * touched:
 *
 *   1. the store inserts the rows and waits until they are committed;
 *   2. it inserts the touched (patient, code, minute) keys into `rollup_touch`
 *      (engine Null: nothing is stored); `vitals_1m_mv` fires on that insert and
 *      writes each touched minute's aggregates, recomputed from vital_points;
 *   3. then the touched hours; `vitals_1h_mv` recomputes them from the minutes.
 *
 * A bucket can be recomputed by several writers at once (several mirror
 * processes on a server). Each result is stored as argMax state versioned by
 * the sum, over the bucket's deduplicated rows, of their FHIR commit times (ms).
 * That sum only grows as the bucket's content grows or is superseded, so the
 * recomputation that saw the most recent content wins, whatever the order in
 * which the results arrive; the last recomputation to start saw every commit
 * before it. Reads merge the states (argMaxMerge) in the vitals_1m / vitals_1h
 * views: no FINAL, and right before any background merge.
 *
 * Scope: numeric values of Observations and of their components (blood-pressure
 * systolic and diastolic). SampledData waveforms are in `samples`, not rolled up.
 */

export const ROLLUP_TOUCH_TABLE = 'rollup_touch';
export const ROLLUP_MINUTE_STATE = 'vitals_1m_state';
export const ROLLUP_HOUR_STATE = 'vitals_1h_state';
export const ROLLUP_MINUTE_VIEW = 'vitals_1m';
export const ROLLUP_HOUR_VIEW = 'vitals_1h';

/**
 * The physical name of a table the materialized views read or write. On one node
 * every table is its own (the identity). On a cluster (schema-cluster.ts) the views
 * work on each shard's local tables, so that each shard recomputes the buckets of
 * its own patients.
 */
export type LocalName = (table: string) => string;
const SAME: LocalName = (t) => t;

/** The aggregates of one bucket, plus the content version `v` (see the header). */
const AGG_TUPLE = `Tuple(
    n UInt64, sum Float64, min Nullable(Float64), max Nullable(Float64),
    last Nullable(Float64), last_at DateTime64(3, 'UTC'), unit String, v UInt64)`;

/** Exact per-Observation reads, for analysts and for the rollups. */
export function latestViews(db: string): string[] {
  return [
    `CREATE VIEW IF NOT EXISTS ${db}.observations_latest AS
SELECT * FROM ${db}.observations FINAL`,
    `CREATE VIEW IF NOT EXISTS ${db}.components_latest AS
SELECT * FROM ${db}.observation_components FINAL`,
    vitalPointsView(db, 'vital_points'),
  ];
}

/**
 * Every numeric point: an Observation's value or one of its components'. Rows
 * without a number stay in, so that a version that loses its value still moves
 * the bucket's content version. `local` names the tables it reads (see LocalName).
 */
export function vitalPointsView(db: string, name: string, local: LocalName = SAME): string {
  return `CREATE VIEW IF NOT EXISTS ${db}.${name} AS
SELECT id AS point_id, id AS observation_id, patient_id, device_id, code, effective_start,
       value_num AS value, value_ucum AS unit, template_version, fhir_committed_at
FROM ${db}.${local('observations')} FINAL
UNION ALL
SELECT concat(c.observation_id, '#', toString(c.component_index)) AS point_id, c.observation_id,
       c.patient_id, c.device_id, c.code, c.effective_start, c.value_num AS value,
       c.value_ucum AS unit, c.template_version, c.fhir_committed_at
FROM ${db}.${local('observation_components')} AS c FINAL`;
}

/** The rollups' reading view on one node; a cluster's views read vital_points_local. */
export const VITAL_POINTS_VIEW = 'vital_points';

function stateTable(db: string, name: string): string {
  return `CREATE TABLE IF NOT EXISTS ${db}.${name} (
  patient_id String,
  code LowCardinality(String),
  bucket DateTime('UTC'),
  agg AggregateFunction(argMax, ${AGG_TUPLE}, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (patient_id, code, bucket)`;
}

/** The touched keys of one grain, from the inserted block (the MV's source). */
function touched(db: string, grain: 'minute' | 'hour', columns: string, local: LocalName): string {
  return `SELECT ${columns} FROM ${db}.${local(ROLLUP_TOUCH_TABLE)} WHERE grain = '${grain}'`;
}

/**
 * The MV's source must be the leftmost table: rollup_touch. ClickHouse reads
 * every occurrence of the source table in an MV's query as the inserted block,
 * while a view (vital_points) reads the real tables (long-standing behaviour,
 * ClickHouse issues 77006 / 77327; scalar subqueries over the source run per block
 * since PR 32811). So the recomputation reads the committed rows, limited by the
 * touched keys: the sort key prefix (patient_id, code) and a time range.
 */
function rollupView(
  db: string,
  grain: 'minute' | 'hour',
  name: string,
  target: string,
  recompute: string,
  local: LocalName,
): string {
  return `CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.${name} TO ${db}.${local(target)} AS
SELECT t.patient_id AS patient_id, t.code AS code, t.bucket AS bucket,
       argMaxState(CAST((r.n, r.sum, r.min, r.max, r.last, r.last_at, r.unit, r.v) AS ${AGG_TUPLE}), r.v) AS agg
FROM (${touched(db, grain, 'DISTINCT patient_id, code, bucket', local)}) AS t
INNER JOIN (
${recompute}
) AS r ON r.patient_id = t.patient_id AND r.code = t.code AND r.bucket = t.bucket
GROUP BY patient_id, code, bucket`;
}

const MINUTE_RECOMPUTE = (
  db: string,
  local: LocalName,
) => `  SELECT patient_id, code, toDateTime(toStartOfMinute(effective_start), 'UTC') AS bucket,
         count(value) AS n,
         ifNull(sum(value), 0) AS sum,
         min(value) AS min,
         max(value) AS max,
         argMaxIf(value, (effective_start, point_id), value IS NOT NULL) AS last,
         maxIf(effective_start, value IS NOT NULL) AS last_at,
         anyIf(unit, value IS NOT NULL) AS unit,
         sum(toUInt64(toUnixTimestamp64Milli(fhir_committed_at))) AS v
  FROM ${db}.${local(VITAL_POINTS_VIEW)}
  WHERE (patient_id, code) IN (${touched(db, 'minute', 'patient_id, code', local)})
    AND effective_start >= (${touched(db, 'minute', 'min(bucket)', local)})
    AND effective_start < (${touched(db, 'minute', 'max(bucket)', local)}) + INTERVAL 1 MINUTE
    AND (patient_id, code, toDateTime(toStartOfMinute(effective_start), 'UTC')) IN (${touched(db, 'minute', 'patient_id, code, bucket', local)})
  GROUP BY patient_id, code, bucket`;

const HOUR_RECOMPUTE = (
  db: string,
  local: LocalName,
) => `  SELECT patient_id, code, toStartOfHour(minute) AS bucket,
         sum(a.n) AS n,
         sum(a.sum) AS sum,
         min(a.min) AS min,
         max(a.max) AS max,
         argMaxIf(a.last, a.last_at, a.n > 0) AS last,
         maxIf(a.last_at, a.n > 0) AS last_at,
         anyIf(a.unit, a.n > 0) AS unit,
         sum(a.v) AS v
  FROM (
    SELECT patient_id, code, bucket AS minute, argMaxMerge(agg) AS a
    FROM ${db}.${local(ROLLUP_MINUTE_STATE)}
    WHERE (patient_id, code) IN (${touched(db, 'hour', 'patient_id, code', local)})
      AND bucket >= (${touched(db, 'hour', 'min(bucket)', local)})
      AND bucket < (${touched(db, 'hour', 'max(bucket)', local)}) + INTERVAL 1 HOUR
      AND (patient_id, code, toStartOfHour(bucket)) IN (${touched(db, 'hour', 'patient_id, code, bucket', local)})
    GROUP BY patient_id, code, bucket
  )
  GROUP BY patient_id, code, bucket`;

/** What analysts read: one row per bucket with count, min, max, avg, last. */
function readView(db: string, name: string, state: string, bucketName: string): string {
  return `CREATE VIEW IF NOT EXISTS ${db}.${name} AS
SELECT patient_id, code, bucket AS ${bucketName},
       a.n AS count, a.min AS min, a.max AS max, a.sum / a.n AS avg, a.last AS last,
       a.last_at AS last_at, a.unit AS unit, a.sum AS sum
FROM (
  SELECT patient_id, code, bucket, argMaxMerge(agg) AS a
  FROM ${db}.${state}
  GROUP BY patient_id, code, bucket
)
WHERE a.n > 0`;
}

/** The tables of the rollups: the touch table (engine Null) and the two state tables. */
export function rollupTables(db: string): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${db}.${ROLLUP_TOUCH_TABLE} (
  grain LowCardinality(String),
  patient_id String,
  code LowCardinality(String),
  bucket DateTime('UTC')
)
ENGINE = Null`,
    stateTable(db, ROLLUP_MINUTE_STATE),
    stateTable(db, ROLLUP_HOUR_STATE),
  ];
}

/** The materialized views that recompute touched buckets; `local` names what they read and write. */
export function rollupMaterializedViews(db: string, local: LocalName = SAME): string[] {
  return [
    rollupView(
      db,
      'minute',
      'vitals_1m_mv',
      ROLLUP_MINUTE_STATE,
      MINUTE_RECOMPUTE(db, local),
      local,
    ),
    rollupView(db, 'hour', 'vitals_1h_mv', ROLLUP_HOUR_STATE, HOUR_RECOMPUTE(db, local), local),
  ];
}

/** What analysts read: vitals_1m and vitals_1h. */
export function rollupReadViews(db: string): string[] {
  return [
    readView(db, ROLLUP_MINUTE_VIEW, ROLLUP_MINUTE_STATE, 'minute'),
    readView(db, ROLLUP_HOUR_VIEW, ROLLUP_HOUR_STATE, 'hour'),
  ];
}

export function rollupStatements(db: string): string[] {
  return [...rollupTables(db), ...rollupMaterializedViews(db), ...rollupReadViews(db)];
}
