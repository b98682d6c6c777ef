/**
 * Server driver: a ClickHouse server over HTTP through @clickhouse/client.
 *
 * Contract: in — db-qualified SQL and rows; out — text results, or a
 * PipelineError (store.ts engineError). Rows go as JSONEachRow (clickhouse-js
 * has no RowBinary insert). Any error that is not a ClickHouseError (numeric
 * code from the server) never reached the engine: connection refused, reset,
 * DNS, timeout → ClickHouseUnavailable.
 *
 * The main client (the writer account) names our database; a server refuses
 * every request naming a database that does not exist yet, so createDatabase
 * uses a short-lived client without one.
 *
 * Analysts' SQL goes through a client of its own, logged in as the analyst user
 * (CLICKHOUSE_ANALYST_USER): read-only, SELECT on the pipeline's database only,
 * no source grants, limits from its settings profile that a query cannot raise
 * (deploy/clickhouse/users.d/analyst.xml). It sends the analyst's text unchanged
 * as the request body and no settings but the output format (`default_format`, a
 * parameter the HTTP interface reads apart from the query), so a read-only user
 * may run it; the server stops a query at max_execution_time, and the client gives
 * up 10 s later (QueryTimeout either way).
 */
import {
  ClickHouseLogLevel,
  createClient,
  type ClickHouseClient,
  type ClickHouseSettings,
  type DataFormat,
} from '@clickhouse/client';
import { PipelineError } from '../errors.js';
import { assertDatabaseName } from './schema.js';
import {
  engineError,
  parseJsonEachRow,
  type ClickHouseDriver,
  type EngineOperation,
  type QueryFormat,
  type ServerClientFactory,
} from './store.js';

export interface ServerConnection {
  readonly url: string;
  readonly username: string;
  readonly password: string;
  readonly database: string;
  /** CLICKHOUSE_CLUSTER: the writer inserts through Distributed tables (see CLUSTER_WRITER_SETTINGS). */
  readonly cluster?: string | undefined;
  /** The analysts' account, and their time limit (the request ends 10 s after it). */
  readonly analyst: {
    readonly username: string;
    readonly password: string;
    readonly timeoutSeconds: number;
  };
}

/** Margin of the analysts' request timeout over the server's max_execution_time. */
const ANALYST_TIMEOUT_MARGIN_MS = 10_000;

// Both engines answer alike: 64-bit integers as JSON strings (the server default, made explicit).
const SETTINGS: ClickHouseSettings = { output_format_json_quote_64bit_integers: 1 };

/**
 * The writer's settings on a cluster (schema-cluster.ts, "Rollups"): an insert
 * into a Distributed table returns once every shard has the rows, not when they
 * are queued on the contacted node (so the rollup touch that follows finds
 * them, and an acknowledged write is stored), and goes to the first healthy
 * replica of each shard in the order of remote_servers (so the touch lands
 * where the rows did).
 */
export const CLUSTER_WRITER_SETTINGS: ClickHouseSettings = {
  insert_distributed_sync: 1,
  load_balancing: 'in_order',
};

const defaultFactory: ServerClientFactory = (o) =>
  createClient({
    url: o.url,
    username: o.username,
    password: o.password,
    ...(o.database === undefined ? {} : { database: o.database }),
    // A read-only user may change no setting: the analysts' client sends none
    // (their profile sets the same JSON quoting), and no compression, which is a setting too.
    ...(o.analyst
      ? {
          request_timeout: o.analyst.requestTimeoutMs,
          compression: { request: false, response: false },
        }
      : { clickhouse_settings: SETTINGS }),
    // Its default logger prints plain text to the console; every failure reaches our
    // caller as a PipelineError instead, logged once as JSON there.
    log: { level: ClickHouseLogLevel.OFF },
  });

function wrap(err: unknown, op: EngineOperation) {
  const code = (err as { code?: unknown }).code;
  const numeric = typeof code === 'string' && /^\d+$/.test(code) ? Number(code) : undefined;
  // The client's own request timeout: the analyst's query outlived its limit.
  if (op === 'analyst' && numeric === undefined && /^Timeout error/.test((err as Error).message))
    return new PipelineError('QueryTimeout', 'the query ran past its time limit', {
      cause: err,
      stage: 'admin',
    });
  return engineError(err, op, numeric, numeric !== undefined);
}

async function readAll(stream: AsyncIterable<unknown>): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) {
    parts.push(typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk as Uint8Array));
  }
  return Buffer.concat(parts).toString('utf8');
}

/** Creates the client; nothing is sent until the first call. */
export function openServerDriver(
  conn: ServerConnection,
  factory: ServerClientFactory = defaultFactory,
): Promise<ClickHouseDriver> {
  assertDatabaseName(conn.database);
  const { analyst: analystAccount, cluster, ...writer } = conn;
  const writerSettings: ClickHouseSettings =
    cluster === undefined ? SETTINGS : { ...SETTINGS, ...CLUSTER_WRITER_SETTINGS };
  const client: ClickHouseClient = factory({ ...writer });
  let analystClient: ClickHouseClient | undefined;
  const analyst = () =>
    (analystClient ??= factory({
      url: conn.url,
      username: analystAccount.username,
      password: analystAccount.password,
      database: conn.database,
      analyst: {
        requestTimeoutMs: analystAccount.timeoutSeconds * 1000 + ANALYST_TIMEOUT_MARGIN_MS,
      },
    }));

  const guard = async <T>(op: EngineOperation, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw wrap(err, op);
    }
  };

  const driver: ClickHouseDriver = {
    async createDatabase(name) {
      const bootstrap = factory({ ...writer, database: undefined });
      try {
        await guard('write', () =>
          bootstrap.command({
            query: `CREATE DATABASE IF NOT EXISTS \`${assertDatabaseName(name)}\``,
          }),
        );
      } finally {
        await bootstrap.close();
      }
    },
    async command(sql) {
      await guard('write', () =>
        client.command({ query: sql, clickhouse_settings: writerSettings }),
      );
    },
    query(sql: string, format: QueryFormat) {
      // exec with our own FORMAT clause: clickhouse-js's query() does not know PrettyCompact.
      const statement = `${sql.trim().replace(/;+\s*$/, '')}\nFORMAT ${format}`;
      return guard('read', async () => {
        const res = await client.exec({ query: statement, clickhouse_settings: writerSettings });
        return readAll(res.stream);
      });
    },
    analyst: {
      format: (sql) =>
        guard('analyst', async () => {
          // Our own statement; the analyst's text travels as a bound parameter (param_sql).
          const res = await analyst().query({
            query: 'SELECT formatQuerySingleLine({sql:String}) AS f',
            query_params: { sql },
            format: 'JSONEachRow',
          });
          return (await res.json<{ f: string }>())[0]?.f ?? '';
        }),
      explainAst: (sql) =>
        // The format as HTTP default_format: a FORMAT clause would join the explained statement.
        guard('analyst', async () => {
          const res = await analyst().exec({
            query: `EXPLAIN AST ${sql}`,
            clickhouse_settings: { default_format: 'JSONEachRow' },
          });
          return parseJsonEachRow<{ explain: string }>(await readAll(res.stream)).map(
            (r) => r.explain,
          );
        }),
      query: (sql, format) =>
        guard('analyst', async () => {
          const res = await analyst().exec({
            query: sql,
            // Any format name the server knows; clickhouse-js types only those it parses.
            clickhouse_settings: { default_format: format as DataFormat },
          });
          return readAll(res.stream);
        }),
    },
    async insertRows(table, rows) {
      if (rows.length === 0) return;
      await guard('write', () =>
        client.insert({
          table,
          values: [...rows],
          format: 'JSONEachRow',
          clickhouse_settings: writerSettings,
        }),
      );
    },
    async ping() {
      // select: true checks credentials too (the /ping endpoint answers anyone).
      const result = await guard('ping', () => client.ping({ select: true }));
      if (!result.success) throw wrap(result.error, 'ping');
    },
    async close() {
      await analystClient?.close();
      await client.close();
    },
  };
  return Promise.resolve(driver);
}
