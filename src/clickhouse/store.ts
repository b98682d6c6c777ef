/**
 * The analytics store: the one interface the mirror worker, the CLI and the
 * admin API use for ClickHouse, over two thin drivers that share one schema:
 *  - embedded (chdb, in process) when `config.url` is unset — embedded.ts;
 *  - a ClickHouse server through @clickhouse/client otherwise — server.ts.
 * The driver module is imported on first use, so a server deployment never maps
 * the ~550 MB embedded engine and an embedded one never loads the HTTP client.
 *
 * Errors: every failure is a PipelineError. Unreachable / IO / overload →
 * ClickHouseUnavailable (retryable); an analyst query the engine rejects →
 * QueryRefused with the engine's message, one stopped by its time limit →
 * QueryTimeout; an insert or DDL the engine rejects → Internal (stage analytics)
 * without the engine's message, which may quote row data (the engine error stays
 * on `cause`).
 *
 * Analysts' SQL runs on the engine's analyst side (`ClickHouseDriver.analyst`): a
 * read-only connection of its own (embedded) or the analyst user (server), with
 * limits the engine sets outside the query text, after the guard
 * (analyst-query.ts) has checked the engine's own parse of exactly that text.
 *
 * 64-bit integers come back as JSON strings on both engines (as a server does by
 * default), so `count()` reads as "1": convert with Number() where it is safe.
 */
import type { ClickHouseClient } from '@clickhouse/client';
import { SETTINGS, type Config } from '../config.js';
import { PipelineError, toPipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { MessageOutcome, ObservationEnvelope } from '../queues.js';
import {
  checkAnalystStatement,
  parseExplainAst,
  type AnalystQueryLimits,
} from './analyst-query.js';
import {
  flattenObservation,
  type FlattenedObservation,
  type ComponentRow,
  type ObservationRow,
  type SampleRow,
} from './flatten.js';
import { DEVICE_ASSOCIATIONS_TABLE, type DeviceAssociationRow } from './associations.js';
import { deviceMessageRow } from './messages.js';
import { touchedBuckets } from './rollup-touch.js';
import { ROLLUP_TOUCH_TABLE } from './schema-rollups.js';
import { DEVICE_MESSAGES_TABLE, SAMPLES_TABLE } from './schema-tables.js';
import {
  applyMigrations,
  applyRetention,
  assertDatabaseName,
  wipeStatements,
  COMPONENTS_TABLE,
  FHIR_DERIVED_TABLES,
  OBSERVATIONS_TABLE,
  type RetentionOptions,
} from './schema.js';

export type QueryFormat = 'JSONEachRow' | 'JSON' | 'CSV' | 'TSV' | 'PrettyCompact';
type ClickHouseSettings = Config['clickhouse'];
/** The connection settings, and optionally retention, the analyst account and limits (config.ts defaults). */
export type ClickHouseConfig = Pick<
  ClickHouseSettings,
  'url' | 'user' | 'password' | 'database' | 'dataPath'
> &
  Partial<
    Pick<
      ClickHouseSettings,
      | 'cluster'
      | 'retentionDays'
      | 'rollupRetentionDays'
      | 'queryTimeoutS'
      | 'analystUser'
      | 'analystPassword'
      | 'analystMaxMemoryBytes'
      | 'analystMaxResultRows'
      | 'analystMaxResultBytes'
    >
  >;

export interface AnalyticsStore {
  /**
   * Creates the database, applies pending migrations and the retention TTLs; a
   * second call changes nothing.
   */
  migrate(): Promise<void>;
  /**
   * Flattens and inserts rows, samples included, then has the rollups of the
   * touched buckets recomputed (schema-rollups.ts). A re-insert of the same
   * Observations dedupes (ReplacingMergeTree) and leaves the rollups as they were.
   */
  insertObservations(envelopes: readonly ObservationEnvelope[], committedAt: number): Promise<void>;
  /** The same for Observations flattened already (flatten.ts: the mirror isolates bad ones first). */
  insertFlattened(flattened: readonly FlattenedObservation[]): Promise<void>;
  /** device_messages rows; a later outcome of the same message replaces an earlier one. */
  insertMessages(outcomes: readonly MessageOutcome[]): Promise<void>;
  /** device_associations rows (associations.ts): the latest history version wins. */
  insertAssociations(rows: readonly DeviceAssociationRow[]): Promise<void>;
  /** Our own SQL; unqualified table names resolve in the configured database. */
  query(sql: string, format?: QueryFormat): Promise<string>;
  queryRows<T>(sql: string): Promise<T[]>;
  /**
   * An analyst's SQL: one reading statement of the pipeline's database, checked
   * on the engine's parse of exactly this text (analyst-query.ts), then run as the
   * analyst — read-only, with the engine's limits (security.md "Analyst SQL").
   * QueryRefused or QueryTimeout otherwise.
   */
  analystQuery(sql: string, format?: QueryFormat): Promise<string>;
  /** Empties the tables that derive from FHIR (before a rebuild by backfill); device_messages stays. */
  wipeObservations(): Promise<void>;
  /** Our own statement without result rows (DDL, INSERT … SELECT / VALUES): never analysts' SQL. */
  execute(sql: string): Promise<void>;
  /** Throws PipelineError 'ClickHouseUnavailable' when the engine does not answer. */
  ping(): Promise<void>;
  /** Releases the session / connections; idempotent. */
  close(): Promise<void>;
}

/** What store.ts needs from an engine. Drivers throw PipelineErrors (see engineError). */
export interface ClickHouseDriver {
  /** Ensures `database` exists (DDL on a connection that does not need it yet). */
  createDatabase(database: string): Promise<void>;
  /** A statement without result rows (DDL, INSERT … VALUES). */
  command(sql: string): Promise<void>;
  /** Our own query answered as text in `format`; engine rejections are QueryRefused. */
  query(sql: string, format: QueryFormat): Promise<string>;
  /** The analysts' side of the engine, opened on first use. */
  readonly analyst: AnalystDriver;
  /** JSONEachRow insert of `rows` (column names as keys) into `table` (db-qualified). */
  insertRows(table: string, rows: readonly object[]): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The analysts' side of an engine: their own read-only connection (embedded) or
 * the analyst user (server). Every call takes the analyst's text unchanged; the
 * output format goes apart from it. Engine errors are QueryRefused or QueryTimeout.
 */
export interface AnalystDriver {
  /**
   * The engine's one-line rendering of `sql` (formatQuerySingleLine), with `sql`
   * a bound parameter: nothing of it runs, and more than one statement is a
   * syntax error.
   */
  format(sql: string): Promise<string>;
  /** `EXPLAIN AST <sql>`: the engine's syntax tree, one node per line; executes nothing. */
  explainAst(sql: string): Promise<string[]>;
  /** Runs exactly `sql` as the analyst, answered as text in `format`. */
  query(sql: string, format: QueryFormat): Promise<string>;
}

/** Builds a server client; tests inject one over chdb. */
export type ServerClientFactory = (options: {
  readonly url: string;
  readonly username: string;
  readonly password: string;
  /** undefined: the server's default database (used to create ours). */
  readonly database: string | undefined;
  /**
   * The analysts' client: sends no settings of its own (a read-only user may
   * change none), no compression, and ends a request after `requestTimeoutMs`.
   */
  readonly analyst?: { readonly requestTimeoutMs: number };
}) => ClickHouseClient;

export interface AnalyticsStoreOptions {
  /**
   * CLICKHOUSE_CLUSTER: the schema is laid out on this cluster (schema-cluster.ts);
   * reads and writes keep the plain names, which are the Distributed tables there.
   */
  readonly cluster?: string;
  /** Rows per INSERT statement (default 10 000): bounds one request's size. */
  readonly insertBatchRows?: number;
  /** TTLs applied by migrate (default: keep everything). */
  readonly retention?: RetentionOptions;
  /** Limits of analystQuery on the embedded engine (default: config.ts defaults). */
  readonly analystLimits?: AnalystQueryLimits;
  /** Server mode only: how to build the @clickhouse/client (default createClient). */
  readonly serverClientFactory?: ServerClientFactory;
}

/** 'analyst': an analyst's query, whose failures are the analyst's (QueryRefused, QueryTimeout). */
export type EngineOperation = 'read' | 'write' | 'ping' | 'analyst';

/** TIMEOUT_EXCEEDED: max_execution_time stopped the query. */
const TIMEOUT_EXCEEDED = 159;
/** MEMORY_LIMIT_EXCEEDED: for an analyst's query, its own limit (max_memory_usage). */
const MEMORY_LIMIT_EXCEEDED = 241;

/**
 * ClickHouse error codes meaning "the engine cannot serve now", not "this SQL is
 * wrong": IO, memory, space, timeouts, overload, network, authentication; on a
 * cluster also a replica set that cannot take a quorum insert now (285
 * TOO_FEW_LIVE_REPLICAS, 286 UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE, 319
 * UNKNOWN_STATUS_OF_INSERT: retried, the insert dedupes) and an ON CLUSTER
 * statement some host has not run in time (159).
 */
const UNAVAILABLE_CODES = new Set([
  74, 75, 76, 159, 192, 194, 202, 209, 210, 236, 241, 242, 243, 252, 279, 285, 286, 319, 394, 425,
  473, 516, 999, 1000, 1002,
]);

/** "Code: 60. DB::Exception: … (UNKNOWN_TABLE)" → "UNKNOWN_TABLE". */
function errorName(message: string): string | undefined {
  return /\(([A-Z][A-Z0-9_]+)\)\s*(?:\(version [^)]*\))?\s*$/.exec(message)?.[1];
}

/**
 * The one mapping from an engine failure to a PipelineError, for both drivers.
 * `clickhouseCode` undefined with `reachedEngine` false means the request never
 * got an answer from the engine (connection refused, closed session, timeout).
 */
export function engineError(
  err: unknown,
  op: EngineOperation,
  clickhouseCode: number | undefined,
  reachedEngine: boolean,
): PipelineError {
  const message = err instanceof Error ? err.message : String(err);
  const name = errorName(message);
  const details = { operation: op, clickhouseCode, clickhouseError: name };
  if (op === 'analyst' && reachedEngine) {
    if (clickhouseCode === TIMEOUT_EXCEEDED)
      return new PipelineError('QueryTimeout', message, { cause: err, details, stage: 'admin' });
    if (clickhouseCode === MEMORY_LIMIT_EXCEEDED || !UNAVAILABLE_CODES.has(clickhouseCode ?? 0))
      return new PipelineError('QueryRefused', message, { cause: err, details, stage: 'admin' });
  }
  const unavailable =
    op === 'ping' ||
    !reachedEngine ||
    (clickhouseCode !== undefined && UNAVAILABLE_CODES.has(clickhouseCode));
  if (unavailable) {
    return new PipelineError('ClickHouseUnavailable', `ClickHouse unavailable: ${message}`, {
      cause: err,
      details,
    });
  }
  if (op === 'read' || op === 'analyst')
    return new PipelineError('QueryRefused', message, { cause: err, details });
  const what = clickhouseCode === undefined ? 'an error' : `code ${clickhouseCode} ${name ?? ''}`;
  return new PipelineError(
    'ClickHouseRejected',
    `ClickHouse refused a write with ${what}`.trimEnd(),
    {
      cause: err,
      details,
      stage: 'analytics',
    },
  );
}

/**
 * The engine's refusal to parse an analyst's text, without the wrapper query it
 * was parsed in (formatQuerySingleLine): what the analyst wrote is what failed.
 */
function parseRefusal(err: unknown): PipelineError {
  const e = toPipelineError(err);
  if (e.code !== 'QueryRefused') return e;
  const text = e.message.replace(/\s*: In scope SELECT formatQuerySingleLine[\s\S]*$/, '');
  const message = /Multi-statements are not allowed/.test(text)
    ? `only one statement is allowed: ${text}`
    : `the query does not parse: ${text}`;
  return new PipelineError('QueryRefused', message, {
    cause: e,
    details: e.details,
    stage: 'admin',
  });
}

/** Splits JSONEachRow text into rows. */
export function parseJsonEachRow<T>(text: string): T[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as T);
}

function chunks<T>(rows: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < rows.length; i += size) out.push(rows.slice(i, i + size));
  return out;
}

/** The AnalyticsStore over a driver (resolved lazily, once). */
export function storeOverDriver(
  openDriver: () => Promise<ClickHouseDriver>,
  database: string,
  logger?: Logger,
  options: AnalyticsStoreOptions = {},
): AnalyticsStore {
  assertDatabaseName(database);
  const batchRows = options.insertBatchRows ?? 10_000;
  const retention = options.retention ?? { rawDays: 0, rollupDays: 0 };
  const cluster = options.cluster;
  const log = logger?.child({ component: 'clickhouse' });
  let pending: Promise<ClickHouseDriver> | undefined;
  let closed = false;

  const driver = (): Promise<ClickHouseDriver> => {
    if (closed) {
      return Promise.reject(
        new PipelineError('ClickHouseUnavailable', 'the analytics store is closed'),
      );
    }
    pending ??= openDriver().catch((err: unknown) => {
      pending = undefined; // a failed open (engine busy, server down) is retried on next use
      throw err instanceof PipelineError ? err : engineError(err, 'ping', undefined, false);
    });
    return pending;
  };

  const queryRows = async <T>(sql: string): Promise<T[]> =>
    parseJsonEachRow<T>(await (await driver()).query(sql, 'JSONEachRow'));

  return {
    async migrate() {
      const d = await driver();
      await d.createDatabase(database);
      const exec = { command: (sql: string) => d.command(sql), queryRows };
      const applied = await applyMigrations(exec, database, { cluster });
      const ttlChanged = await applyRetention(exec, database, { ...retention, cluster });
      log?.info(
        { database, applied, ttlChanged },
        applied.length || ttlChanged.length ? 'schema updated' : 'schema up to date',
      );
    },

    async insertObservations(envelopes, committedAt) {
      // Flatten everything first: a bad Observation fails the batch before any write.
      await this.insertFlattened(envelopes.map((env) => flattenObservation(env, committedAt)));
    },

    async insertFlattened(flattened) {
      if (flattened.length === 0) return;
      const observations: ObservationRow[] = [];
      const components: ComponentRow[] = [];
      const samples: SampleRow[] = [];
      for (const flat of flattened) {
        observations.push(flat.observation);
        components.push(...flat.components);
        samples.push(...flat.samples);
      }
      const d = await driver();
      const insert = async (table: string, rows: readonly object[]) => {
        // Unquoted qualified names: chdb's insert accepts only [A-Za-z0-9_.] (the name is validated).
        for (const part of chunks(rows, batchRows))
          await d.insertRows(`${database}.${table}`, part);
      };
      // Rows first; a retry after a partial write re-inserts everything, and dedupes.
      await insert(OBSERVATIONS_TABLE, observations);
      await insert(COMPONENTS_TABLE, components);
      await insert(SAMPLES_TABLE, samples);
      // Then the rollups of what this write touched, once the rows are committed:
      // minutes from the rows, then hours from the minutes (schema-rollups.ts).
      const points = [...observations, ...components];
      await insert(ROLLUP_TOUCH_TABLE, touchedBuckets(points, 'minute'));
      await insert(ROLLUP_TOUCH_TABLE, touchedBuckets(points, 'hour'));
      log?.debug(
        {
          observations: observations.length,
          components: components.length,
          samples: samples.length,
        },
        'rows inserted',
      );
    },

    async insertMessages(outcomes) {
      if (outcomes.length === 0) return;
      const rows = outcomes.map(deviceMessageRow);
      const d = await driver();
      for (const part of chunks(rows, batchRows)) {
        await d.insertRows(`${database}.${DEVICE_MESSAGES_TABLE}`, part);
      }
    },

    async insertAssociations(rows) {
      if (rows.length === 0) return;
      const d = await driver();
      for (const part of chunks(rows, batchRows))
        await d.insertRows(`${database}.${DEVICE_ASSOCIATIONS_TABLE}`, part);
    },

    async analystQuery(sql, format = 'JSONEachRow') {
      if (sql.trim() === '')
        throw new PipelineError('QueryRefused', 'the query is empty', { stage: 'admin' });
      const analyst = (await driver()).analyst;
      // 1. one statement, by the engine's parser (the text a bound parameter: nothing runs);
      // 2. its syntax tree, EXPLAIN AST of exactly this text (executes nothing);
      // 3. the guard decides on both; 4. exactly this text runs, as the analyst.
      const formatted = await analyst.format(sql).catch((err: unknown) => {
        throw parseRefusal(err);
      });
      const tree = parseExplainAst(await analyst.explainAst(sql));
      checkAnalystStatement({ formatted, tree, database });
      return analyst.query(sql, format);
    },

    async execute(sql) {
      await (await driver()).command(sql);
    },

    async wipeObservations() {
      const d = await driver();
      for (const sql of wipeStatements(database, cluster)) await d.command(sql);
      log?.warn(
        { event: 'mirror-wiped', tables: [...FHIR_DERIVED_TABLES] },
        'observation tables emptied',
      );
    },

    async query(sql, format = 'JSONEachRow') {
      return (await driver()).query(sql, format);
    },

    queryRows,

    async ping() {
      await (await driver()).ping();
    },

    async close() {
      if (closed) return;
      closed = true;
      const opening = pending;
      pending = undefined;
      if (opening) await (await opening.catch(() => undefined))?.close();
    },
  };
}

/**
 * Embedded engine unless `config.url` is set. Nothing connects until the first
 * call, so this never throws for an unreachable engine (only for a bad database name).
 */
export function createAnalyticsStore(
  config: ClickHouseConfig,
  logger?: Logger,
  options: AnalyticsStoreOptions = {},
): AnalyticsStore {
  const url = config.url;
  const setting = <K extends keyof ClickHouseSettings>(key: K): ClickHouseSettings[K] =>
    (config as Partial<ClickHouseSettings>)[key] ??
    (SETTINGS.clickhouse[key].default as ClickHouseSettings[K]);
  const limits: AnalystQueryLimits = options.analystLimits ?? {
    timeoutSeconds: setting('queryTimeoutS'),
    maxResultRows: setting('analystMaxResultRows'),
    maxResultBytes: setting('analystMaxResultBytes'),
    maxMemoryBytes: setting('analystMaxMemoryBytes'),
  };
  const open =
    url === undefined
      ? async () =>
          (await import('./embedded.js')).openEmbeddedDriver(
            config.dataPath,
            config.database,
            limits,
          )
      : async () =>
          (await import('./server.js')).openServerDriver(
            {
              url,
              username: config.user,
              password: config.password,
              database: config.database,
              cluster: config.cluster,
              analyst: {
                username: setting('analystUser'),
                password: setting('analystPassword'),
                timeoutSeconds: limits.timeoutSeconds,
              },
            },
            options.serverClientFactory,
          );
  if (config.cluster !== undefined && url === undefined)
    throw new PipelineError(
      'ConfigInvalid',
      'CLICKHOUSE_CLUSTER needs CLICKHOUSE_URL: the embedded engine is one node',
    );
  return storeOverDriver(open, config.database, logger, {
    retention: { rawDays: config.retentionDays ?? 0, rollupDays: config.rollupRetentionDays ?? 0 },
    ...(config.cluster === undefined ? {} : { cluster: config.cluster }),
    ...options,
  });
}
