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
 *  - each Session is a connection of its own on the shared engine, with its own
 *    settings and state (`USE db`, SET), and connections run queries in parallel;
 *    one connection runs one query at a time (queryAsync calls queue up).
 *  - a query that fails leaves its partial output on its connection: the next
 *    query there that produces no output of its own answers with the failed
 *    query's rows (reproduced in docs/security.md). So a connection whose query
 *    failed is closed, and the next call opens a fresh one (connectionSlot).
 *  - a second process on the same directory fails to connect; the engine prints
 *    "Cannot lock file …/status" to stderr, the error only says "Failed to
 *    create connection": ClickHouseUnavailable, naming CHDB_PATH and the cause.
 *  - the engine's users and grants come from the config of its first connection
 *    (embedded-config.ts); analysts get a read-only connection of their own.
 *  - JSONEachRow quotes 64-bit integers only with a connect-time argument (off by
 *    default, unlike a server).
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { drainPending, Session } from 'chdb';
import { PipelineError } from '../errors.js';
import type { AnalystQueryLimits } from './analyst-query.js';
import {
  accessProbePath,
  analystConnectionArgs,
  OUTPUT_ARGS,
  writeEngineConfig,
} from './embedded-config.js';
import { assertDatabaseName } from './schema.js';
import {
  engineError,
  parseJsonEachRow,
  type AnalystDriver,
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

/** ClickHouse ACCESS_DENIED: what file() must answer once the source grants are revoked. */
const ACCESS_DENIED = 497;

function wrap(err: unknown, op: EngineOperation) {
  const e = err as { code?: unknown; clickhouseCode?: unknown; cause?: unknown };
  const code = typeof e.code === 'string' ? e.code : undefined;
  // A connect failure carries the engine's own error (e.g. code 76, directory locked) as cause.
  const engineCode = typeof e.clickhouseCode === 'number' ? e.clickhouseCode : undefined;
  const reached = code !== undefined && !UNREACHED.has(code);
  return engineError(err, op, engineCode, reached);
}

function openSession(path: string, args: readonly string[]): Session {
  try {
    mkdirSync(path, { recursive: true });
    return new Session(path, { connectionArgs: [...args] });
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
}

/**
 * One connection used one call at a time, and never again after a call on it
 * failed: the next call opens a fresh one (see the header). `open` runs the
 * connection's setup (e.g. `USE db`) and closes the session if that fails.
 */
interface ConnectionSlot {
  use<T>(op: EngineOperation, fn: (s: Session) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

function connectionSlot(open: () => Promise<Session>): ConnectionSlot {
  let current: Promise<Session> | undefined;
  let tail: Promise<unknown> = Promise.resolve();
  let closed = false;
  const retire = async (pending: Promise<Session> | undefined) => {
    if (current === pending) current = undefined;
    (await pending?.catch(() => undefined))?.close();
  };
  return {
    use(op, fn) {
      const run = async () => {
        if (closed)
          throw engineError(new Error('the embedded engine is closed'), op, undefined, false);
        const opening = (current ??= open());
        let session: Session;
        try {
          session = await opening;
        } catch (err) {
          await retire(opening);
          throw err;
        }
        try {
          return await fn(session);
        } catch (err) {
          await retire(opening);
          throw err;
        }
      };
      const result = tail.then(run, run);
      tail = result.catch(() => undefined);
      return result;
    },
    async close() {
      closed = true;
      await tail;
      await retire(current);
    },
  };
}

async function query(session: Session, sql: string, op: EngineOperation, format = 'CSV') {
  try {
    return (await session.queryAsync(sql, { format })).text();
  } catch (err) {
    throw wrap(err, op);
  }
}

/**
 * Opens (creating the directory if missing) the engine with `database` created
 * and in use; the analysts' read-only connection opens on first use.
 */
export async function openEmbeddedDriver(
  dataPath: string,
  database: string,
  limits: AnalystQueryLimits,
): Promise<ClickHouseDriver> {
  const db = `\`${assertDatabaseName(database)}\``;
  const path = resolve(dataPath);
  mkdirSync(path, { recursive: true });
  const configArg = writeEngineConfig(path);

  const openMain = async () => {
    const session = openSession(path, [configArg, ...OUTPUT_ARGS]);
    try {
      // The engine owns the directory: creating our database here lets `USE` work before migrate.
      await query(session, `CREATE DATABASE IF NOT EXISTS ${db}`, 'write');
      await query(session, `USE ${db}`, 'write');
      return session;
    } catch (err) {
      session.close();
      throw err;
    }
  };
  const main = connectionSlot(openMain);
  const analyst = connectionSlot(async () => {
    // The config argument too, in case this is the engine's first connection.
    const session = openSession(path, [configArg, ...analystConnectionArgs(limits)]);
    try {
      await query(session, `USE ${db}`, 'analyst');
      return session;
    } catch (err) {
      session.close();
      throw err;
    }
  });

  const closeAll = async () => {
    await analyst.close();
    await main.close();
    // close() defers destroying a busy connection; wait, so the next open (any path) succeeds.
    await drainPending();
  };

  // The engine's grants are the first connection's config, ignored once the engine
  // runs: refuse to serve if another part of this process opened it without ours.
  // The probe fails by design, so it runs on a connection of its own, closed after.
  try {
    await main.use('ping', (s) => query(s, 'SELECT 1', 'ping'));
    const probe = openSession(path, [configArg]);
    const file = accessProbePath(path).replace(/\\/g, '\\\\').replace(/'/g, "\\'");
    const denied = await probe.queryAsync(`SELECT 1 FROM file('${file}', 'LineAsString')`).then(
      () => false,
      (err: unknown) => (err as { clickhouseCode?: unknown }).clickhouseCode === ACCESS_DENIED,
    );
    probe.close();
    if (!denied) {
      throw new PipelineError(
        'ConfigInvalid',
        `the embedded engine at ${path} runs without the pipeline's access configuration ` +
          '(another chdb session in this process opened it first): it would let analysts read files',
      );
    }
  } catch (err) {
    await closeAll();
    throw err;
  }

  const analystDriver: AnalystDriver = {
    format: (sql) =>
      analyst.use('analyst', async (s) => {
        try {
          // The text as a bound parameter: the engine parses it, nothing of it runs.
          const res = await s.queryBindAsync(
            'SELECT formatQuerySingleLine({sql:String}) AS f',
            { sql },
            { format: 'JSONEachRow' },
          );
          return parseJsonEachRow<{ f: string }>(res.text())[0]?.f ?? '';
        } catch (err) {
          throw wrap(err, 'analyst');
        }
      }),
    explainAst: (sql) =>
      analyst.use('analyst', async (s) => {
        const text = await query(s, `EXPLAIN AST ${sql}`, 'analyst', 'JSONEachRow');
        return parseJsonEachRow<{ explain: string }>(text).map((r) => r.explain);
      }),
    query: (sql, format: QueryFormat) =>
      analyst.use('analyst', (s) => query(s, sql, 'analyst', format)),
  };

  let closed = false;
  return {
    async createDatabase(name) {
      await main.use('write', (s) =>
        query(s, `CREATE DATABASE IF NOT EXISTS \`${assertDatabaseName(name)}\``, 'write'),
      );
    },
    async command(sql) {
      await main.use('write', (s) => query(s, sql, 'write'));
    },
    query: (sql: string, format: QueryFormat) =>
      main.use('read', (s) => query(s, sql, 'read', format)),
    analyst: analystDriver,
    async insertRows(table, rows) {
      if (rows.length === 0) return;
      // Raw JSONEachRow passthrough: one INSERT, parsed by the engine, not by JS.
      const payload = rows.map((r) => JSON.stringify(r)).join('\n');
      await main.use('write', async (s) => {
        try {
          await s.insert({ table, values: payload, format: 'JSONEachRow' });
        } catch (err) {
          throw wrap(err, 'write');
        }
      });
    },
    async ping() {
      await main.use('ping', (s) => query(s, 'SELECT 1', 'ping'));
    },
    async close() {
      if (closed) return;
      closed = true;
      await closeAll();
    },
  };
}
