/**
 * Server driver: a ClickHouse server over HTTP through @clickhouse/client.
 *
 * Contract: in — db-qualified SQL and rows; out — text results, or a
 * PipelineError (store.ts engineError). Rows go as JSONEachRow (clickhouse-js
 * has no RowBinary insert). Any error that is not a ClickHouseError (numeric
 * code from the server) never reached the engine: connection refused, reset,
 * DNS, timeout → ClickHouseUnavailable.
 *
 * The main client names our database, so analysts' unqualified table names
 * resolve there; a server refuses every request naming a database that does not
 * exist yet, so createDatabase uses a short-lived client without one.
 */
import {
  ClickHouseLogLevel,
  createClient,
  type ClickHouseClient,
  type ClickHouseSettings,
} from '@clickhouse/client';
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
}

// Both engines answer alike: 64-bit integers as JSON strings (the server default, made explicit).
const SETTINGS: ClickHouseSettings = { output_format_json_quote_64bit_integers: 1 };

const defaultFactory: ServerClientFactory = (o) =>
  createClient({
    url: o.url,
    username: o.username,
    password: o.password,
    ...(o.database === undefined ? {} : { database: o.database }),
    clickhouse_settings: SETTINGS,
    // Its default logger prints plain text to the console; every failure reaches our
    // caller as a PipelineError instead, logged once as JSON there.
    log: { level: ClickHouseLogLevel.OFF },
  });

function wrap(err: unknown, op: EngineOperation) {
  const code = (err as { code?: unknown }).code;
  const numeric = typeof code === 'string' && /^\d+$/.test(code) ? Number(code) : undefined;
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
  const client: ClickHouseClient = factory({ ...conn });

  const guard = async <T>(op: EngineOperation, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw wrap(err, op);
    }
  };

  const driver: ClickHouseDriver = {
    async createDatabase(name) {
      const bootstrap = factory({ ...conn, database: undefined });
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
      await guard('write', () => client.command({ query: sql, clickhouse_settings: SETTINGS }));
    },
    query(sql: string, format: QueryFormat) {
      // exec with our own FORMAT clause: clickhouse-js's query() does not know PrettyCompact.
      const statement = `${sql.trim().replace(/;+\s*$/, '')}\nFORMAT ${format}`;
      return guard('read', async () => {
        const res = await client.exec({ query: statement, clickhouse_settings: SETTINGS });
        return readAll(res.stream);
      });
    },
    explainAst(sql: string) {
      // The format as a setting (HTTP default_format): a FORMAT clause would join the explained statement.
      return guard('read', async () => {
        const res = await client.exec({
          query: `EXPLAIN AST ${sql}`,
          clickhouse_settings: { ...SETTINGS, default_format: 'JSONEachRow' },
        });
        return parseJsonEachRow<{ explain: string }>(await readAll(res.stream)).map(
          (r) => r.explain,
        );
      });
    },
    async insertRows(table, rows) {
      if (rows.length === 0) return;
      await guard('write', () =>
        client.insert({
          table,
          values: [...rows],
          format: 'JSONEachRow',
          clickhouse_settings: SETTINGS,
        }),
      );
    },
    async ping() {
      // select: true checks credentials too (the /ping endpoint answers anyone).
      const result = await guard('ping', () => client.ping({ select: true }));
      if (!result.success) throw wrap(result.error, 'ping');
    },
    close: () => client.close(),
  };
  return Promise.resolve(driver);
}
