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
 * QueryRefused with the engine's message; an insert or DDL the engine rejects →
 * Internal (stage analytics) without the engine's message, which may quote row
 * data (the engine error stays on `cause`).
 *
 * 64-bit integers come back as JSON strings on both engines (as a server does by
 * default), so `count()` reads as "1": convert with Number() where it is safe.
 */
import type { ClickHouseClient } from '@clickhouse/client';
import type { Config } from '../config.js';
import { PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ObservationEnvelope } from '../queues.js';
import { flattenObservation, type ComponentRow, type ObservationRow } from './flatten.js';
import {
  applyMigrations,
  assertDatabaseName,
  COMPONENTS_TABLE,
  OBSERVATIONS_TABLE,
} from './schema.js';

export type QueryFormat = 'JSONEachRow' | 'JSON' | 'CSV' | 'TSV' | 'PrettyCompact';
export type ClickHouseConfig = Config['clickhouse'];

export interface AnalyticsStore {
  /** Creates the database and applies pending migrations; a second call changes nothing. */
  migrate(): Promise<void>;
  /** Flattens and inserts; a re-insert of the same Observations dedupes (ReplacingMergeTree). */
  insertObservations(envelopes: readonly ObservationEnvelope[], committedAt: number): Promise<void>;
  /** Runs analyst SQL; unqualified table names resolve in the configured database. */
  query(sql: string, format?: QueryFormat): Promise<string>;
  queryRows<T>(sql: string): Promise<T[]>;
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
  /** A query answered as text in `format`; engine rejections are QueryRefused. */
  query(sql: string, format: QueryFormat): Promise<string>;
  /** JSONEachRow insert of `rows` (column names as keys) into `table` (db-qualified). */
  insertRows(table: string, rows: readonly object[]): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Builds a server client; tests inject one over chdb/connection. */
export type ServerClientFactory = (options: {
  readonly url: string;
  readonly username: string;
  readonly password: string;
  /** undefined: the server's default database (used to create ours). */
  readonly database: string | undefined;
}) => ClickHouseClient;

export interface AnalyticsStoreOptions {
  /** Rows per INSERT statement (default 10 000): bounds one request's size. */
  readonly insertBatchRows?: number;
  /** Server mode only: how to build the @clickhouse/client (default createClient). */
  readonly serverClientFactory?: ServerClientFactory;
}

export type EngineOperation = 'read' | 'write' | 'ping';

/**
 * ClickHouse error codes meaning "the engine cannot serve now", not "this SQL is
 * wrong": IO, memory, space, timeouts, overload, network, authentication.
 */
const UNAVAILABLE_CODES = new Set([
  74, 75, 76, 159, 192, 194, 202, 209, 210, 236, 241, 242, 243, 252, 279, 394, 425, 473, 516, 999,
  1000, 1002,
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
  if (op === 'read') return new PipelineError('QueryRefused', message, { cause: err, details });
  const what = clickhouseCode === undefined ? 'an error' : `code ${clickhouseCode} ${name ?? ''}`;
  return new PipelineError('Internal', `ClickHouse refused a write with ${what}`.trimEnd(), {
    cause: err,
    details,
    stage: 'analytics',
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
      const applied = await applyMigrations(
        { command: (sql) => d.command(sql), queryRows },
        database,
      );
      log?.info({ database, applied }, applied.length ? 'migrations applied' : 'schema up to date');
    },

    async insertObservations(envelopes, committedAt) {
      if (envelopes.length === 0) return;
      // Flatten everything first: a bad Observation fails the batch before any write.
      const observations: ObservationRow[] = [];
      const components: ComponentRow[] = [];
      for (const env of envelopes) {
        const flat = flattenObservation(env, committedAt);
        observations.push(flat.observation);
        components.push(...flat.components);
      }
      const d = await driver();
      // Observations before components; a retry after a partial write re-inserts both, and dedupes.
      // Unquoted qualified names: chdb's insert accepts only [A-Za-z0-9_.] (the name is validated).
      for (const part of chunks(observations, batchRows)) {
        await d.insertRows(`${database}.${OBSERVATIONS_TABLE}`, part);
      }
      for (const part of chunks(components, batchRows)) {
        await d.insertRows(`${database}.${COMPONENTS_TABLE}`, part);
      }
      log?.debug(
        { observations: observations.length, components: components.length },
        'rows inserted',
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
  const open =
    url === undefined
      ? async () =>
          (await import('./embedded.js')).openEmbeddedDriver(config.dataPath, config.database)
      : async () =>
          (await import('./server.js')).openServerDriver(
            { url, username: config.user, password: config.password, database: config.database },
            options.serverClientFactory,
          );
  return storeOverDriver(open, config.database, logger, options);
}
