/**
 * Embedded driver: the ClickHouse engine in this process (chdb), on a data
 * directory that one process owns.
 *
 * Contract: in — db-qualified SQL and rows; out — text results, or a
 * PipelineError (store.ts engineError). Only async chdb calls (queryAsync,
 * insert) run here, on the libuv pool, so the event loop never waits on the engine.
 *
 * chdb facts this relies on (chdb 3.4, engine 26.7):
 *  - one data directory per process: a Session on another path throws while one
 *    is open; after close(), drainPending() must settle before another path opens.
 *    Sessions on the same path share one connection.
 *  - a second process on the same directory fails to connect; the engine prints
 *    "Cannot lock file …/status" to stderr, the error only says "Failed to
 *    create connection": ClickHouseUnavailable, naming CHDB_PATH and the cause.
 *  - one session runs one query at a time (parallel queryAsync calls queue up).
 *  - `USE db` persists for the session, so analysts' unqualified names resolve.
 *  - JSONEachRow quotes 64-bit integers only with the connect-time argument
 *    below (off by default, unlike a server).
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { drainPending, Session } from 'chdb';
import { assertDatabaseName } from './schema.js';
import {
  engineError,
  parseJsonEachRow,
  type ClickHouseDriver,
  type EngineOperation,
  type QueryFormat,
} from './store.js';

/** chdb error codes for "the engine is not there" (closed, connect, timeout, abort, native). */
const UNREACHED = new Set([
  'CHDB_CONNECTION',
  'CHDB_CLOSED',
  'CHDB_TIMEOUT',
  'CHDB_ABORT',
  'CHDB_INTERNAL',
  'CHDB_PLATFORM',
  'CHDB_ABI',
]);

function wrap(err: unknown, op: EngineOperation) {
  const e = err as { code?: unknown; clickhouseCode?: unknown; cause?: unknown };
  const code = typeof e.code === 'string' ? e.code : undefined;
  // A connect failure carries the engine's own error (e.g. code 76, directory locked) as cause.
  const engineCode = typeof e.clickhouseCode === 'number' ? e.clickhouseCode : undefined;
  const reached = code !== undefined && !UNREACHED.has(code);
  return engineError(err, op, engineCode, reached);
}

// Same JSON output as a server by default: 64-bit integers as strings (no precision loss).
const CONNECTION_ARGS = ['--output_format_json_quote_64bit_integers=1'];

/** Opens (creating the directory if missing) a session with `database` created and in use. */
export async function openEmbeddedDriver(
  dataPath: string,
  database: string,
): Promise<ClickHouseDriver> {
  const db = `\`${assertDatabaseName(database)}\``;
  const path = resolve(dataPath);
  let session: Session;
  try {
    mkdirSync(path, { recursive: true });
    session = new Session(path, { connectionArgs: CONNECTION_ARGS });
  } catch (err) {
    // The engine prints the reason (e.g. "Cannot lock file …/status") to stderr only;
    // the error says just "Failed to create connection", so name the usual cause.
    const reason = err instanceof Error ? err.message : String(err);
    throw engineError(
      new Error(
        `cannot open the embedded engine at ${path} (CHDB_PATH): ${reason}. ` +
          'Is another process using this directory? One process owns it; ' +
          'several processes need a ClickHouse server (CLICKHOUSE_URL).',
        { cause: err },
      ),
      'ping',
      undefined,
      false,
    );
  }

  const run = async (sql: string, op: EngineOperation, format = 'CSV'): Promise<string> => {
    try {
      return (await session.queryAsync(sql, { format })).text();
    } catch (err) {
      throw wrap(err, op);
    }
  };

  try {
    // The engine owns the directory: creating our database here lets `USE` work before migrate.
    await run(`CREATE DATABASE IF NOT EXISTS ${db}`, 'write');
    await run(`USE ${db}`, 'write');
  } catch (err) {
    session.close();
    await drainPending();
    throw err;
  }

  let closed = false;
  return {
    async createDatabase(name) {
      await run(`CREATE DATABASE IF NOT EXISTS \`${assertDatabaseName(name)}\``, 'write');
    },
    async command(sql) {
      await run(sql, 'write');
    },
    query: (sql: string, format: QueryFormat) => run(sql, 'read', format),
    async explainAst(sql) {
      const text = await run(`EXPLAIN AST ${sql}`, 'read', 'JSONEachRow');
      return parseJsonEachRow<{ explain: string }>(text).map((r) => r.explain);
    },
    async insertRows(table, rows) {
      if (rows.length === 0) return;
      // Raw JSONEachRow passthrough: one INSERT, parsed by the engine, not by JS.
      const payload = rows.map((r) => JSON.stringify(r)).join('\n');
      try {
        await session.insert({ table, values: payload, format: 'JSONEachRow' });
      } catch (err) {
        throw wrap(err, 'write');
      }
    },
    async ping() {
      await run('SELECT 1', 'ping');
    },
    async close() {
      if (closed) return;
      closed = true;
      session.close();
      // close() defers destroying a busy connection; wait, so the next open (any path) succeeds.
      await drainPending();
    },
  };
}
