/**
 * A ClickHouse server's HTTP interface, emulated in process for @clickhouse/client:
 * a `Connection` over a chdb Session opened with `connectionArgs` (the account's
 * settings, as a server applies a user's profile). No real server runs where
 * the tests run (Debian's is 18.16; no Docker), so analyst tests of the server
 * driver go through this.
 *
 * What it keeps of a server: each request is independent (a failed query's
 * connection is replaced, so no state crosses requests); `default_format` and
 * `param_*` travel apart from the query text. What it cannot do: apply other
 * per-request settings out of band (it refuses them, so a test never passes by
 * accident), or log in as another user than the engine's (the caller chooses the
 * engine's users file, see analyst-sandbox-server.test.ts).
 */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  ClickHouseError,
  parseError,
  type ClickHouseClientConfigOptions,
} from '@clickhouse/client';
import { Session, type ChdbResult } from 'chdb';

type NodeConnection = NonNullable<ClickHouseClientConfigOptions['connection']>;
type Params = Parameters<NodeConnection['query']>[0];

const SUMMARY = {
  read_rows: '0',
  read_bytes: '0',
  written_rows: '0',
  written_bytes: '0',
  total_rows_to_read: '0',
  result_rows: '0',
  result_bytes: '0',
  elapsed_ns: '0',
};

function clickhouseError(err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  const parsed = parseError(message);
  return parsed instanceof ClickHouseError ? parsed : new Error(message, { cause: err });
}

async function text(values: unknown): Promise<string> {
  if (typeof values === 'string') return values;
  let out = '';
  for await (const chunk of values as AsyncIterable<string | Uint8Array>)
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
  return out;
}

/** A Connection whose every request runs on `path` with the given connect arguments. */
export function chdbServerConnection(
  path: string,
  connectionArgs: readonly string[],
): NodeConnection {
  let session: Session | undefined;
  const open = () => (session ??= new Session(path, { connectionArgs: [...connectionArgs] }));

  const run = async (params: Params, sql: string): Promise<ChdbResult> => {
    const { default_format: format, ...rest } = params.clickhouse_settings ?? {};
    const others = Object.keys(rest).filter((k) => rest[k as keyof typeof rest] !== undefined);
    if (others.length > 0)
      throw new Error(`the in-process server cannot apply per-request settings: ${others.join()}`);
    const s = open();
    const opts = format === undefined ? {} : { format: String(format) };
    try {
      return params.query_params && Object.keys(params.query_params).length > 0
        ? await s.queryBindAsync(sql, params.query_params, opts)
        : await s.queryAsync(sql, opts);
    } catch (err) {
      // A server forgets a failed request; this connection would not (partial output).
      s.close();
      session = undefined;
      throw clickhouseError(err);
    }
  };
  const base = () => ({ query_id: randomUUID(), response_headers: {}, http_status_code: 200 });

  const connection: NodeConnection = {
    async ping() {
      try {
        await open().queryAsync('SELECT 1');
        return { success: true as const };
      } catch (err) {
        return { success: false as const, error: clickhouseError(err) };
      }
    },
    async query(params: Params) {
      const result = await run(params, params.query);
      return { ...base(), stream: Readable.from([Buffer.from(result.bytes())]) };
    },
    async exec(params: Params & { values?: unknown }) {
      const body = params.values === undefined ? '' : await text(params.values);
      const result = await run(params, body === '' ? params.query : `${params.query}\n${body}`);
      return { ...base(), stream: Readable.from([Buffer.from(result.bytes())]), summary: SUMMARY };
    },
    async command(params: Params) {
      await run(params, params.query);
      return { ...base(), summary: SUMMARY };
    },
    async insert(params: Params & { values: unknown }) {
      await run(params, `${params.query}\n${await text(params.values)}`);
      return { ...base(), summary: SUMMARY };
    },
    close() {
      session?.close();
      session = undefined;
      return Promise.resolve();
    },
  };
  return connection;
}
