/**
 * The analytics schema as an ordered list of migrations, one schema for the
 * embedded engine and a server. `applyMigrations` records each applied version
 * in `schema_migrations`; running it again applies nothing. Every statement is
 * idempotent on its own (IF NOT EXISTS) too, so a crash between a statement and
 * its record only repeats harmless work.
 *
 * Deduplication: both tables are ReplacingMergeTree, which keeps one row per
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
 * template fixes them per Observation type).
 */
import { PipelineError } from '../errors.js';

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

/** The ordered migrations for `database`. Append new versions; never edit an applied one. */
export function migrations(database: string): readonly Migration[] {
  const db = `\`${assertDatabaseName(database)}\``;
  return [
    {
      version: 1,
      description: 'observations: one row per Observation (latest FHIR version wins)',
      statements: [
        `CREATE TABLE IF NOT EXISTS ${db}.${OBSERVATIONS_TABLE} (
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
ORDER BY (patient_id, code, effective_start, id)`,
      ],
    },
    {
      version: 2,
      description: 'observation_components: one row per Observation.component',
      statements: [
        `CREATE TABLE IF NOT EXISTS ${db}.${COMPONENTS_TABLE} (
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
ORDER BY (patient_id, code, effective_start, observation_id, component_index)`,
      ],
    },
  ];
}

/**
 * Retention hook, not applied by migrate: the statements that would expire rows
 * `days` after their effective start. When retention becomes a setting, run
 * these after applyMigrations (MODIFY TTL is idempotent).
 */
export function retentionStatements(database: string, days: number): string[] {
  const db = `\`${assertDatabaseName(database)}\``;
  if (!Number.isInteger(days) || days < 1)
    throw new RangeError(`retention days must be >= 1, got ${days}`);
  return [OBSERVATIONS_TABLE, COMPONENTS_TABLE].map(
    (t) => `ALTER TABLE ${db}.${t} MODIFY TTL toDateTime(effective_start) + INTERVAL ${days} DAY`,
  );
}

/** Creates the migrations table, then applies the pending versions in order. Returns those applied. */
export async function applyMigrations(
  exec: MigrationExecutor,
  database: string,
  list: readonly Migration[] = migrations(database),
): Promise<number[]> {
  const db = `\`${assertDatabaseName(database)}\``;
  await exec.command(`CREATE DATABASE IF NOT EXISTS ${db}`);
  // ReplacingMergeTree: two processes migrating at once record a version twice, FINAL shows one.
  await exec.command(`CREATE TABLE IF NOT EXISTS ${db}.${MIGRATIONS_TABLE} (
  version UInt32,
  description String,
  applied_at ${UTC_MS} DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version`);
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
