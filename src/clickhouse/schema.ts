/**
 * The analytics schema as an ordered list of migrations, one schema for the
 * embedded engine and a server. `applyMigrations` records each applied version
 * in `schema_migrations`; running it again applies nothing. Every statement is
 * idempotent on its own (IF NOT EXISTS) too, so a crash between a statement and
 * its record only repeats harmless work.
 *
 * Deduplication: the raw tables are ReplacingMergeTree, which keeps one row per
 * ORDER BY key (after merges, or at once with FINAL). The key of `observations`
 * is (patient_id, code, effective_start, id). That is only correct because every
 * part of it is stable for one Observation id: our ids derive from the PHD
 * identifier (device, patient, type, device timestamp[, window]), so a new
 * version of the same Observation keeps patient, code and effective start. If
 * ids ever stop being derived that way, the key must become (id) alone.
 * The version column is fhir_committed_at: of two rows for one Observation the
 * later FHIR commit wins, even when a stale job is redelivered after a newer one
 * (equal versions: the last inserted wins). `observation_components` is keyed
 * the same way plus the component index, so "systolic pressure of patient X over
 * time" reads one key range; its codes are as stable as the parent's (the FHIR
 * template fixes them per Observation type). Later tables follow the same rule
 * (schema-tables.ts); the rollups and views are in schema-rollups.ts.
 *
 * One known gap: a component that a later version of its Observation no longer
 * has keeps its row (nothing deletes it). Our templates fix the components of
 * each Observation type, so this does not happen with them.
 */
import { PipelineError } from '../errors.js';
import { deviceAssociationsTable } from './associations.js';
import {
  assertClusterName,
  clusterAlter,
  clusterTable,
  localName,
  nodeTableName,
  onCluster,
  type ClusterLayout,
} from './schema-cluster.js';
import {
  latestViews,
  rollupMaterializedViews,
  rollupReadViews,
  rollupStatements,
  rollupTables,
  vitalPointsView,
  ROLLUP_HOUR_STATE,
  ROLLUP_MINUTE_STATE,
  VITAL_POINTS_VIEW,
} from './schema-rollups.js';
import {
  deviceMessagesTable,
  deviceUnitsTable,
  observationIdIndex,
  referenceRangesTable,
  samplesTable,
  seedReferenceRanges,
  DEVICE_MESSAGES_TABLE,
  SAMPLES_TABLE,
} from './schema-tables.js';

export interface Migration {
  readonly version: number;
  readonly description: string;
  readonly statements: readonly string[];
}

/** What applyMigrations needs from an adapter: one statement per call (HTTP refuses several). */
export interface MigrationExecutor {
  command(sql: string): Promise<void>;
  queryRows<T>(sql: string): Promise<T[]>;
}

export const OBSERVATIONS_TABLE = 'observations';
export const COMPONENTS_TABLE = 'observation_components';
export const MIGRATIONS_TABLE = 'schema_migrations';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Database names are interpolated into DDL, so only plain identifiers pass. */
export function assertDatabaseName(database: string): string {
  if (!IDENTIFIER.test(database)) {
    throw new PipelineError(
      'ConfigInvalid',
      `CLICKHOUSE_DATABASE: expected letters, digits and _ (not starting with a digit), got "${database}"`,
    );
  }
  return database;
}

const UTC_MS = "DateTime64(3, 'UTC')";
const LC = 'LowCardinality(String)';

// Code and value columns, shared by both tables (see flatten.ts CodeColumns / ValueColumns).
const CODE_AND_VALUE_COLUMNS = `
  code_system ${LC},
  code ${LC},
  code_display ${LC},
  loinc_code ${LC},
  mdc_code ${LC},
  value_num Nullable(Float64),
  value_unit ${LC},
  value_ucum ${LC},
  value_string String,
  value_code_system ${LC},
  value_code ${LC},
  data_absent_reason ${LC},`;

/**
 * How each migration's statements are laid out: as written on one node, or for a
 * cluster (schema-cluster.ts). One list of migrations serves both.
 */
interface Layout {
  /** A CREATE TABLE of a builder. */
  table(statement: string): string[];
  /** An ALTER TABLE. */
  alter(statement: string): string[];
  /** The exact-read views and the rollups (migration 5). */
  views(db: string): string[];
}

const SINGLE_NODE: Layout = {
  table: (s) => [s],
  alter: (s) => [s],
  views: (db) => [...latestViews(db), ...rollupStatements(db)],
};

function clusterLayoutOf(layout: ClusterLayout): Layout {
  return {
    table: (s) => clusterTable(s, layout),
    alter: (s) => clusterAlter(s, layout),
    // Analysts' views read the Distributed tables; the rollups' own view and
    // materialized views work on each shard's local tables (schema-cluster.ts).
    views: (db) => [
      ...latestViews(db).map((s) => onCluster(s, layout)),
      onCluster(vitalPointsView(db, localName(VITAL_POINTS_VIEW), localName), layout),
      ...rollupTables(db).flatMap((s) => clusterTable(s, layout)),
      ...rollupMaterializedViews(db, localName).map((s) => onCluster(s, layout)),
      ...rollupReadViews(db).map((s) => onCluster(s, layout)),
    ],
  };
}

/**
 * The ordered migrations for `database`, on one node or on `cluster`
 * (CLICKHOUSE_CLUSTER). Append new versions; never edit an applied one.
 */
export function migrations(database: string, cluster?: string): readonly Migration[] {
  const db = `\`${assertDatabaseName(database)}\``;
  const L =
    cluster === undefined
      ? SINGLE_NODE
      : clusterLayoutOf({ database, cluster: assertClusterName(cluster) });
  return [
    {
      version: 1,
      description: 'observations: one row per Observation (latest FHIR version wins)',
      statements: L.table(`CREATE TABLE IF NOT EXISTS ${db}.${OBSERVATIONS_TABLE} (
  id String,
  identifier_system ${LC},
  identifier_value String,
  status ${LC},
  patient_id String,
  device_id String,
  gateway_id ${LC},
  encounter_id String,
  category ${LC},${CODE_AND_VALUE_COLUMNS}
  effective_start ${UTC_MS},
  effective_end ${UTC_MS},
  issued Nullable(${UTC_MS}),
  device_time ${UTC_MS},
  received_at ${UTC_MS},
  fhir_committed_at ${UTC_MS},
  template_name ${LC},
  template_version ${LC},
  fhir_version_id String,
  message_id String,
  resource String CODEC(ZSTD(3)),
  inserted_at ${UTC_MS} DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(fhir_committed_at)
PARTITION BY toYYYYMM(effective_start)
ORDER BY (patient_id, code, effective_start, id)`),
    },
    {
      version: 2,
      description: 'observation_components: one row per Observation.component',
      statements: L.table(`CREATE TABLE IF NOT EXISTS ${db}.${COMPONENTS_TABLE} (
  observation_id String,
  component_index UInt16,
  patient_id String,${CODE_AND_VALUE_COLUMNS}
  effective_start ${UTC_MS},
  template_version ${LC},
  fhir_committed_at ${UTC_MS},
  inserted_at ${UTC_MS} DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(fhir_committed_at)
PARTITION BY toYYYYMM(effective_start)
ORDER BY (patient_id, code, effective_start, observation_id, component_index)`),
    },
    {
      version: 3,
      description:
        'samples (one row per SampledData point); id index; component device; code displays',
      statements: [
        ...L.table(samplesTable(db)),
        ...L.alter(observationIdIndex(db, OBSERVATIONS_TABLE)),
        // Components carry their Observation's device, for per-device and per-unit analytics.
        ...L.alter(
          `ALTER TABLE ${db}.${COMPONENTS_TABLE} ADD COLUMN IF NOT EXISTS device_id String AFTER patient_id`,
        ),
        // The display of the LOINC and of the MDC coding, beside their codes.
        ...[OBSERVATIONS_TABLE, COMPONENTS_TABLE].flatMap((t) =>
          L.alter(
            `ALTER TABLE ${db}.${t} ADD COLUMN IF NOT EXISTS loinc_display LowCardinality(String) AFTER loinc_code, ` +
              `ADD COLUMN IF NOT EXISTS mdc_display LowCardinality(String) AFTER mdc_code`,
          ),
        ),
      ],
    },
    {
      version: 4,
      description: 'device_messages: every accepted MQTT message and its outcome',
      statements: L.table(deviceMessagesTable(db)),
    },
    {
      version: 5,
      description: 'exact-read views; per-minute and per-hour rollups kept by materialized views',
      statements: L.views(db),
    },
    {
      version: 6,
      description: 'reference data: screening ranges per code, device care units',
      statements: [
        ...L.table(referenceRangesTable(db)),
        seedReferenceRanges(db),
        ...L.table(deviceUnitsTable(db)),
      ],
    },
    {
      version: 7,
      description: 'device_associations: which patient each device served, and when',
      statements: L.table(deviceAssociationsTable(db)),
    },
  ];
}

/** Days to keep; 0 keeps forever. Raw tables and rollups separately. */
export interface RetentionOptions {
  readonly rawDays: number;
  readonly rollupDays: number;
  /** CLICKHOUSE_CLUSTER: the TTLs go on each node's tables, ON CLUSTER. */
  readonly cluster?: string;
}

/** Each table with a TTL and the DateTime column it counts from. */
function retentionTargets(o: RetentionOptions): { table: string; column: string; days: number }[] {
  return [
    { table: OBSERVATIONS_TABLE, column: 'effective_start', days: o.rawDays },
    { table: COMPONENTS_TABLE, column: 'effective_start', days: o.rawDays },
    { table: SAMPLES_TABLE, column: 'ts', days: o.rawDays },
    { table: DEVICE_MESSAGES_TABLE, column: 'received_at', days: o.rawDays },
    { table: ROLLUP_MINUTE_STATE, column: 'bucket', days: o.rollupDays },
    { table: ROLLUP_HOUR_STATE, column: 'bucket', days: o.rollupDays },
  ];
}

/** The table TTL in days as the engine reports it (system.tables.engine_full), 0 if none. */
function currentTtlDays(engineFull: string): number | undefined {
  if (!/\bTTL\b/.test(engineFull)) return 0;
  const m = /\bTTL toDateTime\(\w+\) \+ toIntervalDay\((\d+)\)/.exec(engineFull);
  return m ? Number(m[1]) : undefined; // undefined: a TTL someone else set, in another form
}

/**
 * Makes each table's TTL match `options`, and touches nothing that already does:
 * MODIFY TTL rewrites parts, so a restart must not repeat it. Returns the tables altered.
 */
export async function applyRetention(
  exec: MigrationExecutor,
  database: string,
  options: RetentionOptions,
): Promise<string[]> {
  const db = `\`${assertDatabaseName(database)}\``;
  const rows = await exec.queryRows<{ name: string; engine_full: string }>(
    `SELECT name, engine_full FROM system.tables WHERE database = '${database}'`,
  );
  const engines = new Map(rows.map((r) => [r.name, r.engine_full]));
  const { cluster } = options;
  const altered: string[] = [];
  for (const t of retentionTargets(options)) {
    if (!Number.isInteger(t.days) || t.days < 0)
      throw new RangeError(`retention days must be >= 0, got ${t.days}`);
    // On a cluster the rows, hence the TTL, are in the node tables (the contacted node's tell).
    const engine = engines.get(cluster === undefined ? t.table : nodeTableName(t.table));
    if (engine === undefined || currentTtlDays(engine) === t.days) continue;
    const statement =
      t.days === 0
        ? `ALTER TABLE ${db}.${t.table} REMOVE TTL`
        : `ALTER TABLE ${db}.${t.table} MODIFY TTL toDateTime(${t.column}) + INTERVAL ${t.days} DAY`;
    const laidOut =
      cluster === undefined ? [statement] : clusterAlter(statement, { database, cluster });
    for (const sql of laidOut) await exec.command(sql);
    altered.push(t.table);
  }
  return altered;
}

export interface ApplyMigrationsOptions {
  /** CLICKHOUSE_CLUSTER: DDL ON CLUSTER, the record replicated to every node. */
  readonly cluster?: string;
  /** Default: migrations(database, cluster). */
  readonly list?: readonly Migration[];
}

/**
 * The statements that create the database and the migrations table. On a
 * cluster both are ON CLUSTER and the table is replicated to every node, so a
 * version applied from any node is recorded cluster-wide.
 */
export function migrationsTableStatements(database: string, cluster?: string): string[] {
  const db = `\`${assertDatabaseName(database)}\``;
  const createDatabase = `CREATE DATABASE IF NOT EXISTS ${db}`;
  // ReplacingMergeTree: two processes migrating at once record a version twice, FINAL shows one.
  const createTable = `CREATE TABLE IF NOT EXISTS ${db}.${MIGRATIONS_TABLE} (
  version UInt32,
  description String,
  applied_at ${UTC_MS} DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version`;
  if (cluster === undefined) return [createDatabase, createTable];
  const layout = { database, cluster: assertClusterName(cluster) };
  return [onCluster(createDatabase, layout), ...clusterTable(createTable, layout)];
}

/** Creates the migrations table, then applies the pending versions in order. Returns those applied. */
export async function applyMigrations(
  exec: MigrationExecutor,
  database: string,
  options: ApplyMigrationsOptions = {},
): Promise<number[]> {
  const db = `\`${assertDatabaseName(database)}\``;
  const list = options.list ?? migrations(database, options.cluster);
  for (const sql of migrationsTableStatements(database, options.cluster)) await exec.command(sql);
  const rows = await exec.queryRows<{ version: number | string }>(
    `SELECT version FROM ${db}.${MIGRATIONS_TABLE} FINAL`,
  );
  const done = new Set(rows.map((r) => Number(r.version)));
  const applied: number[] = [];
  for (const m of [...list].sort((a, b) => a.version - b.version)) {
    if (done.has(m.version)) continue;
    for (const statement of m.statements) await exec.command(statement);
    // Values are ours (an integer and a fixed description), quoted for the description's sake.
    const description = m.description.replace(/\\/g, '\\\\').replace(/'/g, "\\'");
    await exec.command(
      `INSERT INTO ${db}.${MIGRATIONS_TABLE} (version, description) VALUES (${m.version}, '${description}')`,
    );
    applied.push(m.version);
  }
  return applied;
}

/** The tables that derive from FHIR, emptied before a rebuild by backfill (device_messages stays). */
export const FHIR_DERIVED_TABLES = [
  OBSERVATIONS_TABLE,
  COMPONENTS_TABLE,
  SAMPLES_TABLE,
  ROLLUP_MINUTE_STATE,
  ROLLUP_HOUR_STATE,
] as const;

/** TRUNCATE statements for FHIR_DERIVED_TABLES; on a cluster, each node's tables ON CLUSTER. */
export function wipeStatements(database: string, cluster?: string): string[] {
  const db = `\`${assertDatabaseName(database)}\``;
  return FHIR_DERIVED_TABLES.map((t) =>
    cluster === undefined
      ? `TRUNCATE TABLE IF EXISTS ${db}.${t}`
      : onCluster(`TRUNCATE TABLE IF EXISTS ${db}.${nodeTableName(t)}`, {
          database,
          cluster: assertClusterName(cluster),
        }),
  );
}
