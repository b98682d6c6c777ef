/**
 * The analytics schema laid out on a ClickHouse cluster (CLICKHOUSE_CLUSTER,
 * src/clickhouse/schema-cluster.ts), checked with the real engine (chdb 26.7).
 * No ClickHouse cluster runs on this machine, so:
 *  1. every statement the cluster mode sends (database and migration record,
 *     every migration, retention TTLs, the wipe before a rebuild) is parsed by the
 *     engine (EXPLAIN AST: one statement, executes nothing), and its canonical
 *     form keeps ON CLUSTER and the Replicated engine with {shard}/{replica};
 *  2. the cluster migrations are applied to the engine with the two things only a
 *     cluster has taken out — ON CLUSTER (needs the DDL queue) and replication
 *     (needs Keeper: Replicated*MergeTree(path, replica, args…) runs as
 *     *MergeTree(args…)) — while the Distributed tables are real, on a cluster
 *     named in this engine's remote_servers. The result is compared with the
 *     single-node schema column by column (names, types, order), engines apart;
 *  3. the rollups' materialized views, wired to each shard's local tables,
 *     compute what the single-node ones compute from the same rows.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type ClickHouseClientConfigOptions } from '@clickhouse/client';
import { drainPending, Session } from 'chdb';
import { createChdbConnection } from 'chdb/connection';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  applyMigrations,
  applyRetention,
  migrations,
  migrationsTableStatements,
  wipeStatements,
  type MigrationExecutor,
} from '../../src/clickhouse/schema.js';
import { PLACEMENT } from '../../src/clickhouse/schema-cluster.js';
import { openServerDriver } from '../../src/clickhouse/server.js';
import { loadConfig } from '../../src/config.js';

const CLUSTER = 'iomt-cluster'; // a '-' in the name: quoting is exercised
const SINGLE = 'iomt_single';
const CLUSTERED = 'iomt_clustered';

const dataPath = mkdtempSync(join(tmpdir(), 'iomt-cluster-schema-'));
const configFile = join(dataPath, 'cluster.xml');
// The macros a cluster node has, and the cluster itself (never contacted here).
writeFileSync(
  configFile,
  `<clickhouse>
  <macros><shard>01</shard><replica>node-1</replica></macros>
  <remote_servers><${CLUSTER}><shard><replica><host>127.0.0.1</host><port>9000</port></replica></shard></${CLUSTER}></remote_servers>
</clickhouse>`,
);
let session: Session;

async function run(sql: string): Promise<string> {
  return (await session.queryAsync(sql, { format: 'JSONEachRow' })).text();
}
const rows = async <T>(sql: string): Promise<T[]> =>
  (await run(sql))
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as T);

/** Records every statement; answers queries with `answer`. */
function recorder(answer: (sql: string) => unknown[] = () => []) {
  const sent: string[] = [];
  const exec: MigrationExecutor = {
    command: (sql) => {
      sent.push(sql);
      return Promise.resolve();
    },
    queryRows: <T>(sql: string) => Promise.resolve(answer(sql) as T[]),
  };
  return { sent, exec };
}

/** Every statement cluster mode sends, from a fresh cluster to a wipe. */
async function everyClusterStatement(): Promise<string[]> {
  const migrate = recorder();
  await applyMigrations(migrate.exec, CLUSTERED, { cluster: CLUSTER });
  // Retention as the store applies it: the contacted node reports its tables without TTL.
  const nodeTables = Object.keys(PLACEMENT).map((t) =>
    PLACEMENT[t]!.kind === 'sharded' ? `${t}_local` : t,
  );
  const ttl = recorder(() => nodeTables.map((name) => ({ name, engine_full: 'MergeTree' })));
  await applyRetention(ttl.exec, CLUSTERED, { rawDays: 30, rollupDays: 365, cluster: CLUSTER });
  return [...migrate.sent, ...ttl.sent, ...wipeStatements(CLUSTERED, CLUSTER)];
}

/** What a cluster has and one engine cannot run: the DDL queue and Keeper (see the header). */
function withoutClusterServices(sql: string): string {
  return sql
    .replace(/ ON CLUSTER `[^`]+`/g, '')
    .replace(/Replicated(\w*MergeTree)\('[^']*', '[^']*'(?:, )?/g, '$1(');
}

interface Column {
  table: string;
  name: string;
  type: string;
  position: string;
}
interface Table {
  name: string;
  engine: string;
}

beforeAll(async () => {
  session = new Session(dataPath, { connectionArgs: [`--config-file=${configFile}`] });
  const single: MigrationExecutor = {
    command: async (sql) => void (await run(sql)),
    queryRows: rows,
  };
  const clustered: MigrationExecutor = {
    command: async (sql) => void (await run(withoutClusterServices(sql))),
    queryRows: rows,
  };
  await applyMigrations(single, SINGLE);
  await applyMigrations(clustered, CLUSTERED, { cluster: CLUSTER });
}, 300_000);

afterAll(async () => {
  session?.close();
  await drainPending();
  rmSync(dataPath, { recursive: true, force: true });
});

describe('ClickHouse cluster schema (CLICKHOUSE_CLUSTER)', () => {
  it('parses every statement of cluster mode in the real engine, each ON CLUSTER and replicated', async () => {
    const statements = await everyClusterStatement();
    expect(statements.length).toBeGreaterThan(40);
    for (const sql of statements) {
      // 1. one statement, parsed (EXPLAIN AST executes nothing): a single root node.
      const tree = (await rows<{ explain: string }>(`EXPLAIN AST ${sql}`)).map((r) => r.explain);
      expect(
        tree.filter((line) => !line.startsWith(' ')),
        sql,
      ).toHaveLength(1);
      // 2. the engine's own rendering keeps what makes it a cluster statement.
      const [{ f }] = (await session
        .queryBindAsync(
          'SELECT formatQuerySingleLine({sql:String}) AS f',
          { sql },
          { format: 'JSONEachRow' },
        )
        .then((r) => JSON.parse(r.text()) as { f: string })
        .then((r) => [r])) as [{ f: string }];
      if (/^(CREATE|ALTER|TRUNCATE)/.test(sql))
        expect(f, sql).toContain(`ON CLUSTER \`${CLUSTER}\``);
      else expect(f, sql).toMatch(/^INSERT INTO /);
      if (/ENGINE = \w*MergeTree/.test(sql)) {
        expect(f, sql).toMatch(
          /ENGINE = Replicated\w*MergeTree\('\/clickhouse\/tables\/(\{shard\}|all)\//,
        );
        expect(f, sql).toMatch(/\{replica\}/);
      }
    }
  });

  it('keeps the ReplacingMergeTree version and is_deleted arguments in the replicated engines', () => {
    const text = migrations(CLUSTERED, CLUSTER)
      .flatMap((m) => m.statements)
      .join('\n');
    expect(text).toContain(
      `ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/${CLUSTERED}/observations_local', '{replica}', fhir_committed_at)`,
    );
    expect(text).toContain(
      `ReplicatedReplacingMergeTree('/clickhouse/tables/all/${CLUSTERED}/device_associations', '{shard}-{replica}', history_version, is_deleted)`,
    );
    expect(text).toContain(
      `ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/${CLUSTERED}/vitals_1m_state_local', '{replica}')`,
    );
    expect(text).toContain(
      `ENGINE = Distributed('${CLUSTER}', '${CLUSTERED}', 'observations_local', cityHash64(patient_id))`,
    );
    expect(migrationsTableStatements(CLUSTERED, CLUSTER).join('\n')).toContain(
      `ReplicatedReplacingMergeTree('/clickhouse/tables/all/${CLUSTERED}/schema_migrations', '{shard}-{replica}')`,
    );
  });

  it('has the single-node schema column by column: names, types, order', async () => {
    const columns = (db: string) =>
      rows<Column>(
        `SELECT table, name, type, toString(position) AS position FROM system.columns
         WHERE database = '${db}' ORDER BY table, position`,
      );
    const tables = (db: string) =>
      rows<Table>(`SELECT name, engine FROM system.tables WHERE database = '${db}' ORDER BY name`);
    const single = await columns(SINGLE);
    const clustered = await columns(CLUSTERED);
    const of = (cols: Column[], table: string) =>
      cols
        .filter((c) => c.table === table)
        .map(({ name, type, position }) => ({ name, type, position }));

    const singleTables = await tables(SINGLE);
    const clusteredTables = new Map((await tables(CLUSTERED)).map((t) => [t.name, t.engine]));
    expect(singleTables.length).toBeGreaterThan(10);
    for (const { name, engine } of singleTables) {
      // Every table and view under its own name, with the same columns in the same order.
      expect(of(clustered, name), name).toEqual(of(single, name));
      expect(of(single, name).length, name).toBeGreaterThan(0);
      const placement = PLACEMENT[name];
      if (placement?.kind === 'sharded') {
        // The plain name is the Distributed table; the rows are in <name>_local, same columns.
        expect(clusteredTables.get(name), name).toBe('Distributed');
        expect(clusteredTables.get(`${name}_local`), name).toBe(engine);
        expect(of(clustered, `${name}_local`), name).toEqual(of(single, name));
      } else {
        // Views stay views; tables on every node keep their engine (replication removed here).
        expect(clusteredTables.get(name), name).toBe(engine);
      }
    }
    // The rollups' own view reads the local tables, with the columns of vital_points.
    expect(of(clustered, 'vital_points_local')).toEqual(of(single, 'vital_points'));
    // Nothing else: the cluster adds only the local tables and that view.
    const extra = [...clusteredTables.keys()].filter(
      (n) =>
        !singleTables.some(
          (t) => t.name === n || (PLACEMENT[t.name]?.kind === 'sharded' && `${t.name}_local` === n),
        ),
    );
    expect(extra).toEqual(['vital_points_local']);
  });

  it('recomputes the rollups on a shard from its local tables, as one node does', async () => {
    const points = [
      ['obs-1', 'pat-1', '8867-4', '2025-03-01 10:00:05.000', 70],
      ['obs-2', 'pat-1', '8867-4', '2025-03-01 10:00:35.000', 90],
      ['obs-3', 'pat-1', '8867-4', '2025-03-01 10:01:10.000', 80],
      ['obs-4', 'pat-2', '59408-5', '2025-03-01 10:00:20.000', 97],
    ] as const;
    const values = points
      .map(
        ([id, patient, code, at, value]) =>
          `('${id}', '${patient}', '${code}', '${at}', ${value}, '${at}')`,
      )
      .join(', ');
    const touches = (grain: string, trunc: string) =>
      `SELECT DISTINCT '${grain}', patient_id, code, ${trunc}(effective_start) FROM `;
    for (const [db, suffix] of [
      [SINGLE, ''],
      [CLUSTERED, '_local'],
    ] as const) {
      await run(
        `INSERT INTO ${db}.observations${suffix} (id, patient_id, code, effective_start, value_num, fhir_committed_at) VALUES ${values}`,
      );
      for (const [grain, trunc] of [
        ['minute', 'toStartOfMinute'],
        ['hour', 'toStartOfHour'],
      ] as const)
        await run(
          `INSERT INTO ${db}.rollup_touch${suffix} ${touches(grain, trunc)}${db}.observations${suffix}`,
        );
    }
    const rollup = (db: string, state: string) =>
      rows(
        `SELECT patient_id, code, toString(bucket) AS bucket, toJSONString(argMaxMerge(agg)) AS agg
         FROM ${db}.${state} GROUP BY patient_id, code, bucket ORDER BY patient_id, code, bucket`,
      );
    const minutes = await rollup(SINGLE, 'vitals_1m_state');
    expect(minutes).toHaveLength(3);
    expect(await rollup(CLUSTERED, 'vitals_1m_state_local')).toEqual(minutes);
    const hours = await rollup(SINGLE, 'vitals_1h_state');
    expect(hours).toHaveLength(2);
    expect(await rollup(CLUSTERED, 'vitals_1h_state_local')).toEqual(hours);
  });

  it('takes CLICKHOUSE_CLUSTER with a server only, and a plain cluster name only', () => {
    const url = 'http://ch-1:8123';
    expect(
      loadConfig({ CLICKHOUSE_URL: url, CLICKHOUSE_CLUSTER: 'iomt-cluster' }).clickhouse.cluster,
    ).toBe('iomt-cluster');
    expect(loadConfig({}).clickhouse.cluster).toBeUndefined();
    expect(() => loadConfig({ CLICKHOUSE_CLUSTER: 'iomt' })).toThrow(
      /CLICKHOUSE_CLUSTER: needs CLICKHOUSE_URL/,
    );
    expect(() => loadConfig({ CLICKHOUSE_URL: url, CLICKHOUSE_CLUSTER: 'a`; DROP' })).toThrow(
      /CLICKHOUSE_CLUSTER: expected a cluster name/,
    );
    expect(() => migrations('iomt', "x', 'y")).toThrow(/CLICKHOUSE_CLUSTER/);
  });
});

describe('the writer on a cluster', () => {
  it('inserts synchronously through the Distributed tables, to the first replica of each shard', async () => {
    const connection = () =>
      createChdbConnection({
        path: dataPath,
      }) as unknown as ClickHouseClientConfigOptions['connection'];
    const open = (cluster: string | undefined) =>
      openServerDriver(
        {
          url: 'http://in-process.invalid',
          username: 'default',
          password: '',
          database: SINGLE,
          cluster,
          analyst: { username: 'analyst', password: '', timeoutSeconds: 30 },
        },
        () => createClient({ connection: connection() }),
      );
    const settings = async (cluster: string | undefined) => {
      const driver = await open(cluster);
      try {
        return JSON.parse(
          await driver.query(
            "SELECT toString(getSetting('insert_distributed_sync')) AS sync, toString(getSetting('load_balancing')) AS lb",
            'JSONEachRow',
          ),
        ) as unknown;
      } finally {
        await driver.close();
      }
    };
    expect(await settings(CLUSTER)).toEqual({ sync: 'true', lb: 'in_order' });
    // One server: the engine's defaults, as before.
    expect(await settings(undefined)).toEqual({ sync: 'false', lb: 'random' });
  });
});
