/**
 * The engines an analytics test runs against, one suite each:
 *  - embedded (chdb) on a fresh temp directory (always);
 *  - the server driver over chdb/connection: server.ts's @clickhouse/client
 *    calls answered in process by the same engine (always; no HTTP). The
 *    connection ignores the client's database: only qualified names work;
 *  - a real ClickHouse server when CLICKHOUSE_TEST_URL is set (user and
 *    password from CLICKHOUSE_TEST_USER / CLICKHOUSE_TEST_PASSWORD), in a
 *    database of its own that is dropped afterwards. Analyst queries run as
 *    CLICKHOUSE_TEST_ANALYST_USER / _PASSWORD (default: the same user, since
 *    the analyst account's grant names one database and these tests make their own).
 * chdb binds one data directory per process (vitest runs each file in its own
 * process), so the in-process targets of a file share one temp directory, and the
 * engine takes its users and grants from whichever connection opens it first: a
 * keeper session opens it with the embedded driver's config (source grants
 * revoked) and holds it until cleanup. The server driver's analyst client runs
 * on a read-only connection with the embedded analyst limits
 * (chdb-server-connection.ts); analyst-sandbox-server.test.ts runs the deploy
 * analyst account itself.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type ClickHouseClientConfigOptions } from '@clickhouse/client';
import { drainPending, Session } from 'chdb';
import { createChdbConnection } from 'chdb/connection';
import type { AnalyticsStoreOptions, ClickHouseConfig } from '../../src/clickhouse/index.js';
import { analystConnectionArgs, writeEngineConfig } from '../../src/clickhouse/embedded-config.js';
import { loadConfig } from '../../src/config.js';
import { chdbServerConnection } from './chdb-server-connection.js';

export interface ClickHouseTarget {
  readonly name: string;
  readonly enabled: boolean;
  readonly config: ClickHouseConfig;
  readonly options?: AnalyticsStoreOptions;
  /** False where the client's database is ignored (qualify every name). */
  readonly unqualifiedNames: boolean;
  /** Cleanup of a server database. */
  readonly dropDatabase?: () => Promise<void>;
}

export interface ClickHouseTargets {
  readonly dataPath: string;
  readonly all: readonly ClickHouseTarget[];
  /** Closes the keeper session and removes the temp directory (after every store is closed). */
  cleanup(): Promise<void>;
}

/** The embedded analyst limits, as config.ts defaults them. */
export function defaultAnalystLimits() {
  const c = loadConfig({}).clickhouse;
  return {
    timeoutSeconds: c.queryTimeoutS,
    maxResultRows: c.analystMaxResultRows,
    maxResultBytes: c.analystMaxResultBytes,
    maxMemoryBytes: c.analystMaxMemoryBytes,
  };
}

export function clickhouseTargets(label: string): ClickHouseTargets {
  const dataPath = mkdtempSync(join(tmpdir(), `iomt-${label}-`));
  const engineConfig = writeEngineConfig(dataPath);
  const keeper = new Session(dataPath, { connectionArgs: [engineConfig] });
  const serverUrl = process.env.CLICKHOUSE_TEST_URL;
  const base = { user: 'default', password: '', dataPath } as const;
  const serverDb = `iomt_${label.replace(/\W/g, '_')}_${process.pid}_${Date.now()}`;
  const server = {
    ...base,
    url: serverUrl,
    user: process.env.CLICKHOUSE_TEST_USER ?? 'default',
    password: process.env.CLICKHOUSE_TEST_PASSWORD ?? '',
    database: serverDb,
  };
  const serverAnalyst = {
    analystUser: process.env.CLICKHOUSE_TEST_ANALYST_USER ?? server.user,
    analystPassword: process.env.CLICKHOUSE_TEST_ANALYST_PASSWORD ?? server.password,
  };
  // chdb types its Connection against @clickhouse/client-common, which @clickhouse/client
  // bundles as its own copy: the shapes are the same, the declarations differ.
  const inProcess = () =>
    createChdbConnection({
      path: dataPath,
    }) as unknown as ClickHouseClientConfigOptions['connection'];
  return {
    dataPath,
    all: [
      {
        name: 'embedded (chdb)',
        enabled: true,
        config: { ...base, url: undefined, database: `${label}_embedded` },
        unqualifiedNames: true,
      },
      {
        name: 'server driver over chdb/connection',
        enabled: true,
        config: { ...base, url: 'http://in-process.invalid', database: `${label}_server_driver` },
        unqualifiedNames: false,
        options: {
          serverClientFactory: (o) =>
            createClient({
              connection: o.analyst
                ? chdbServerConnection(dataPath, analystConnectionArgs(defaultAnalystLimits()))
                : inProcess(),
            }),
        },
      },
      {
        name: 'server (CLICKHOUSE_TEST_URL)',
        enabled: serverUrl !== undefined,
        config: { ...server, ...serverAnalyst },
        unqualifiedNames: true,
        dropDatabase: async () => {
          const c = createClient({
            url: serverUrl,
            username: server.user,
            password: server.password,
          });
          await c.command({ query: `DROP DATABASE IF EXISTS ${serverDb}` });
          await c.close();
        },
      },
    ],
    async cleanup() {
      keeper.close();
      await drainPending();
      rmSync(dataPath, { recursive: true, force: true });
    },
  };
}
