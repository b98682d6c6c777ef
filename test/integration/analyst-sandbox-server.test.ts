/**
 * Analyst SQL on the server path (server.ts over @clickhouse/client), as the
 * analyst account that deploy/clickhouse/users.d/analyst.xml defines — its
 * grants and its settings profile enforced by the engine itself.
 *
 * No ClickHouse server runs here (Debian's is 18.16; no Docker), so the engine is
 * chdb, restarted with that file as its users file: chdb logs every connection
 * in as `default`, so the file's `analyst` user becomes `default` here, with an
 * empty password, and `changeable_in_readonly` is dropped (it needs
 * settings_constraints_replace_previous, which clickhouse-local does not read;
 * without it, max_execution_time is simply fixed). The client talks to it
 * through chdb-server-connection.ts. So every query below the guard runs with
 * exactly the deploy account's rights and limits:
 *  1. file(), url() and every other source fail on the engine for a query the
 *     guard has never seen, even where a subquery lifts readonly;
 *  2. writes and setting changes fail;
 *  3. the memory-hungry query of the issue is stopped by the profile's limit;
 *  4. through the store, the guard refuses the whole bypass corpus, and a
 *     reading query answers.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from '@clickhouse/client';
import { drainPending } from 'chdb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createAnalyticsStore,
  type AnalyticsStore,
  type ClickHouseDriver,
  type ServerClientFactory,
} from '../../src/clickhouse/index.js';
import { openServerDriver } from '../../src/clickhouse/server.js';
import { bypassCorpus } from '../support/analyst-bypass-corpus.js';
import { chdbServerConnection } from '../support/chdb-server-connection.js';

const dir = mkdtempSync(join(tmpdir(), 'iomt-sandbox-server-'));
const dataPath = join(dir, 'chdb');
const CANARY = `CANARY-${process.pid}-${Date.now()}`;
const canary = join(dir, 'canary.txt');
writeFileSync(canary, `${CANARY}\n`);
const outfile = join(dir, 'outfile.txt');
/** The database analyst.xml grants SELECT on. */
const DB = 'iomt';
const DEPLOY_USERS = new URL('../../deploy/clickhouse/users.d/analyst.xml', import.meta.url);

/** The deploy analyst account as the engine's one user (see the header); returns --config-file. */
function deployAnalystEngineConfig(): { arg: string; profile: Record<string, string> } {
  const deploy = readFileSync(DEPLOY_USERS, 'utf8');
  const users = deploy
    .replace(/<analyst>([\s\S]*?)<\/analyst>/, '<default>$1</default>')
    .replace(/<password from_env="[^"]*"\s*\/>/, '<password></password>')
    .replace(/<changeable_in_readonly\s*\/>/g, '')
    .replace('<profiles>', '<profiles><default/>')
    .replace(/<\/clickhouse>\s*$/, '<quotas><default/></quotas></clickhouse>\n');
  expect(users).toMatch(/<default>[\s\S]*<profile>analyst_readonly<\/profile>/);
  const usersFile = join(dir, 'deploy-analyst-users.xml');
  const configFile = join(dir, 'deploy-analyst-config.xml');
  writeFileSync(usersFile, users);
  writeFileSync(configFile, `<clickhouse><users_config>${usersFile}</users_config></clickhouse>`);
  const profileXml = /<analyst_readonly>([\s\S]*?)<constraints>/.exec(deploy)?.[1] ?? '';
  const profile = Object.fromEntries(
    [...profileXml.matchAll(/<(\w+)>([^<]*)<\/\1>/g)].map((m) => [m[1]!, m[2]!]),
  );
  return { arg: `--config-file=${configFile}`, profile };
}

let store: AnalyticsStore;
/** The server driver below the guard: its analyst side takes any text. */
let engine: ClickHouseDriver;
let profile: Record<string, string>;

beforeAll(async () => {
  // 1. the writer (embedded driver) creates the schema and a row, then the engine stops
  const writer = createAnalyticsStore({
    url: undefined,
    user: 'default',
    password: '',
    database: DB,
    dataPath,
  });
  await writer.migrate();
  await writer.execute(
    `INSERT INTO ${DB}.reference_ranges (code, label, low, high, unit) VALUES ('x-1', 'x', 1, 2, 'u')`,
  );
  await writer.close();
  await drainPending();
  // 2. it restarts with the deploy analyst account as its only user
  const config = deployAnalystEngineConfig();
  profile = config.profile;
  const factory: ServerClientFactory = () =>
    createClient({ connection: chdbServerConnection(dataPath, [config.arg]) });
  const connection = {
    url: 'http://in-process.invalid',
    user: 'writer-unused',
    password: '',
    database: DB,
    dataPath,
  };
  store = createAnalyticsStore(connection, undefined, { serverClientFactory: factory });
  engine = await openServerDriver(
    {
      url: connection.url,
      username: 'writer-unused',
      password: '',
      database: DB,
      analyst: { username: 'analyst', password: '', timeoutSeconds: 30 },
    },
    factory,
  );
}, 120_000);

afterAll(async () => {
  await engine?.close();
  await store?.close();
  await drainPending();
  rmSync(dir, { recursive: true, force: true });
});

type Outcome = { answered: string } | { refused: string; message: string };
const settle = (p: Promise<string>): Promise<Outcome> =>
  p.then(
    (answered) => ({ answered }),
    (err: { code: string; message: string }) => ({ refused: err.code, message: err.message }),
  );
const onEngine = (sql: string) => settle(engine.analyst.query(sql, 'CSV'));
const ask = (sql: string) => settle(store.analystQuery(sql, 'CSV'));

describe('the deploy analyst account on the engine (guard bypassed)', () => {
  it('is the account analyst.xml defines: its grant and profile', async () => {
    expect(await onEngine('SHOW GRANTS')).toEqual({
      answered: `"GRANT SELECT ON ${DB}.* TO default"\n`,
    });
    const settings = await onEngine(
      "SELECT getSetting('readonly'), getSetting('max_memory_usage'), getSetting('max_result_rows'), getSetting('max_result_bytes')",
    );
    expect(settings).toEqual({
      answered: `1,${profile.max_memory_usage},${profile.max_result_rows},${profile.max_result_bytes}\n`,
    });
  });

  it('fails file(), url() and every other source, even where a subquery lifts readonly', async () => {
    const lift = (from: string) => `SELECT * FROM (SELECT * FROM ${from} SETTINGS readonly = 0)`;
    const sources = [
      `file('${canary}', 'LineAsString')`,
      "url('http://127.0.0.1:9/x', 'LineAsString')",
      "s3('http://127.0.0.1:9/bucket/x.csv', 'CSV', 'x String')",
      "remote('127.0.0.1:9', system.one)",
      "remoteSecure('127.0.0.1:9', system.one)",
      "mysql('127.0.0.1:9', 'd', 't', 'u', 'p')",
      "postgresql('127.0.0.1:9', 'd', 't', 'u', 'p')",
      "hdfs('hdfs://127.0.0.1:9/x', 'CSV', 'x String')",
      "azureBlobStorage('http://127.0.0.1:9', 'c', 'b', 'CSV')",
      "jdbc('x', 'y', 'z')",
      "odbc('d', 't')",
      "mongodb('127.0.0.1:9', 'd', 'c', 'u', 'p', 'x String')",
      "redis('127.0.0.1:9', 'k', 'k String')",
      `sqlite('${canary}', 't')`,
    ];
    for (const from of sources) {
      for (const sql of [`SELECT * FROM ${from}`, lift(from)]) {
        const outcome = await onEngine(sql);
        expect(outcome, sql).toMatchObject({ refused: 'QueryRefused' });
        expect('message' in outcome ? outcome.message : '', sql).toMatch(
          /Not enough privileges|readonly mode/,
        );
        expect(JSON.stringify(outcome), sql).not.toContain(CANARY);
      }
    }
  });

  it('fails writes, DDL and setting changes', async () => {
    for (const sql of [
      `INSERT INTO ${DB}.device_units (device_id) VALUES ('x')`,
      `ALTER TABLE ${DB}.observations DELETE WHERE 1`,
      `DROP TABLE ${DB}.observations`,
      'CREATE TABLE t (x UInt8) ENGINE = Memory',
      'SET max_memory_usage = 0',
      'SELECT 1 SETTINGS max_result_rows = 0',
      'SELECT 1 SETTINGS readonly = 0',
    ]) {
      const outcome = await onEngine(sql);
      expect(outcome, sql).toMatchObject({ refused: 'QueryRefused' });
      expect('message' in outcome ? outcome.message : '', sql).toMatch(
        /Not enough privileges|readonly mode/,
      );
    }
    expect(await onEngine(`SELECT count() FROM ${DB}.device_units`)).toEqual({ answered: '0\n' });
  });

  it("stops the issue's memory-hungry query with the profile's limit, even when a subquery asks otherwise", async () => {
    for (const sql of [
      "SELECT length(groupArray(repeat('x', 1000000))) FROM numbers(2000)",
      "SELECT * FROM (SELECT length(groupArray(repeat('x', 1000000))) FROM numbers(2000) SETTINGS max_memory_usage = 0)",
    ]) {
      const outcome = await onEngine(sql);
      expect(outcome, sql).toMatchObject({ refused: 'QueryRefused' });
      expect('message' in outcome ? outcome.message : '', sql).toMatch(/memory limit exceeded/i);
    }
  });
});

describe('the guard on the server path', () => {
  it('refuses every bypass shape of the corpus, and nothing leaks', async () => {
    const answered: string[] = [];
    for (const [shape, sql] of bypassCorpus({ canary, outfile, database: DB })) {
      const outcome = await ask(sql);
      if ('answered' in outcome) answered.push(shape);
      else expect(outcome.refused, shape).toBe('QueryRefused');
      expect(JSON.stringify(outcome), shape).not.toContain(CANARY);
    }
    expect(answered).toEqual([]);
  });

  it('answers a reading query of the pipeline database, and the one after a refusal', async () => {
    expect(await ask(`SELECT code FROM ${DB}.reference_ranges FINAL WHERE code = 'x-1'`)).toEqual({
      answered: '"x-1"\n',
    });
    expect(await ask('SELECT number FROM numbers(10000000)')).toMatchObject({
      refused: 'QueryRefused',
    });
    expect(await ask(`SELECT * FROM ${DB}.device_units`)).toEqual({ answered: '' });
    // (Qualified: the in-process connection ignores the client's database.)
    expect(await ask(`SELECT count() FROM ${DB}.observations FINAL`)).toEqual({ answered: '0\n' });
  });
});
