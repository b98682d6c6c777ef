/**
 * The analyst SQL sandbox on the embedded engine (issue 9), end to end through
 * store.analystQuery and, below the guard, on the analysts' connection itself:
 *  1. the nested-comment query of the issue and a corpus of bypass shapes are
 *     refused, and a canary file's content appears in no answer and no error;
 *  2. with the guard bypassed, the engine alone refuses every source, writes and
 *     setting changes on the analysts' connection — and what it lets through
 *     (a subquery's SETTINGS lifting readonly, the scalar file(), INTO OUTFILE)
 *     is what the guard refuses;
 *  3. a memory-hungry query is stopped by its limit and the process RSS stays
 *     bounded; a long one by its time limit (QueryTimeout);
 *  4. the query after a refused one answers with its own rows (chdb leaves a
 *     failed query's output on its connection: reproduced on a bare Session).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { drainPending, Session } from 'chdb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AnalystQueryLimits } from '../../src/clickhouse/analyst-query.js';
import { analystConnectionArgs } from '../../src/clickhouse/embedded-config.js';
import { openEmbeddedDriver } from '../../src/clickhouse/embedded.js';
import {
  createAnalyticsStore,
  type AnalyticsStore,
  type ClickHouseDriver,
} from '../../src/clickhouse/index.js';
import { defaultAnalystLimits } from '../support/clickhouse-targets.js';

const dir = mkdtempSync(join(tmpdir(), 'iomt-sandbox-'));
const dataPath = join(dir, 'chdb');
const CANARY = `CANARY-${process.pid}-${Date.now()}`;
const canary = join(dir, 'canary.txt');
writeFileSync(canary, `${CANARY}\n`);
const outfile = join(dir, 'outfile.txt');
const DB = 'iomt';
const defaults = defaultAnalystLimits();

const storeWith = (limits: Partial<AnalystQueryLimits> = {}) =>
  createAnalyticsStore(
    { url: undefined, user: 'default', password: '', database: DB, dataPath },
    undefined,
    { analystLimits: { ...defaults, ...limits } },
  );

let store: AnalyticsStore;
/** The engine below the guard: a driver of its own on the same engine. */
let engine: ClickHouseDriver;

beforeAll(async () => {
  store = storeWith();
  await store.migrate();
  await store.execute(
    `INSERT INTO ${DB}.reference_ranges (code, label, low, high, unit) VALUES ('x-1', 'x', 1, 2, 'u')`,
  );
  engine = await openEmbeddedDriver(dataPath, DB, defaults);
});

afterAll(async () => {
  await engine?.close();
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

type Outcome = { answered: string } | { refused: string; message: string };

async function ask(s: AnalyticsStore, sql: string): Promise<Outcome> {
  return s.analystQuery(sql, 'CSV').then(
    (answered) => ({ answered }),
    (err: { code: string; message: string }) => ({ refused: err.code, message: err.message }),
  );
}

async function onEngine(sql: string): Promise<Outcome> {
  return engine.analyst.query(sql, 'CSV').then(
    (answered) => ({ answered }),
    (err: { code: string; message: string }) => ({ refused: err.code, message: err.message }),
  );
}

/** Asserts a refusal with `code`, its message matching `message`. */
function expectRefused(outcome: Outcome, code: string, message?: RegExp, label?: string): void {
  expect('refused' in outcome ? outcome.refused : `answered ${outcome.answered}`, label).toBe(code);
  if (message) expect('message' in outcome ? outcome.message : '', label).toMatch(message);
}

const file = `file('${canary}', 'LineAsString')`;
const url = `url('http://127.0.0.1:9/x', 'LineAsString')`;

/** [shape, SQL]: each must be refused, and the canary must not leak. */
const BYPASS_CORPUS: readonly (readonly [string, string])[] = [
  // nested comments: the query, and variants
  ['issue 9 nested comment', `/* /* */ SELECT 1 AS "*/ SELECT * FROM ${file} -- "`],
  [
    'nested comment, subquery SETTINGS',
    `/* /* */ SELECT 1 AS "*/ SELECT * FROM (SELECT * FROM ${file} SETTINGS readonly = 0) -- "`,
  ],
  ['doubly nested comment', `/* /* /* */ */ SELECT 1 AS "*/ SELECT * FROM ${file} -- "`],
  ['unterminated comment', `SELECT * FROM ${file} /*`],
  ['trailing line comment', `SELECT * FROM ${file} --`],
  ['hash comment', `SELECT 1 # \nFROM ${file}`],
  // comments in every position
  ['comments between tokens', `SELECT/**/*/**/FROM/**/${file}/**/`],
  ['line comments between tokens', `SELECT -- a\n * -- b\nFROM -- c\n${file} -- d`],
  ['comment inside the call', `SELECT * FROM file(/* x */ '${canary}' /* y */, 'LineAsString')`],
  ['comment before the call paren', `SELECT * FROM file /* x */ ('${canary}', 'LineAsString')`],
  // quoting
  ['backticked table function', `SELECT * FROM \`file\`('${canary}', 'LineAsString')`],
  ['double-quoted table function', `SELECT * FROM "file"('${canary}', 'LineAsString')`],
  ['escaped quote in a string', `SELECT 'a\\'' FROM ${file}`],
  ['doubled quote in a string', `SELECT 'it''s' FROM ${file}`],
  ['heredoc string', `SELECT $x$;$x$ FROM ${file}`],
  ['semicolon in a string, then a statement', `SELECT ';'; SELECT * FROM ${file}`],
  ['quoted system table', 'SELECT * FROM `system`.`processes`'],
  ['double-quoted system table', 'SELECT * FROM "system"."users"'],
  // unicode
  ['homoglyph function name (Cyrillic і)', `SELECT * FROM f\u0456le('${canary}', 'LineAsString')`],
  ['zero-width space in the name', `SELECT * FROM fi\u200Ble('${canary}', 'LineAsString')`],
  ['fullwidth semicolon', `SELECT 1\uFF1BSELECT * FROM ${file}`],
  ['fullwidth parentheses', `SELECT * FROM file\uFF08'${canary}', 'LineAsString'\uFF09`],
  ['no-break space', `SELECT\u00A0*\u00A0FROM\u00A0${file}`],
  ['right-to-left override', `SELECT * FROM \u202E${file}`],
  ['homoglyph system database', 'SELECT * FROM \u0455ystem.one'],
  // table functions in every clause
  ['FROM', `SELECT * FROM ${file}`],
  ['JOIN', `SELECT * FROM numbers(1) AS n JOIN ${file} AS f ON 1`],
  ['GLOBAL JOIN', `SELECT * FROM numbers(1) AS n GLOBAL JOIN ${file} AS f ON 1`],
  ['subquery', `SELECT * FROM (SELECT * FROM ${file})`],
  ['IN (SELECT …)', `SELECT 1 WHERE 'x' IN (SELECT line FROM ${file})`],
  ['IN table function', `SELECT 'x' IN ${file}`],
  ['WITH / CTE', `WITH f AS (SELECT * FROM ${file}) SELECT * FROM f`],
  ['scalar subquery', `SELECT (SELECT any(line) FROM ${file})`],
  ['arrayJoin of a subquery', `SELECT arrayJoin((SELECT groupArray(line) FROM ${file}))`],
  ['EXISTS', `SELECT EXISTS (SELECT * FROM ${url})`],
  ['UNION ALL', `SELECT 'a' UNION ALL SELECT * FROM ${file}`],
  ['WHERE', `SELECT 1 WHERE (SELECT count() FROM ${file}) > 0`],
  ['HAVING', `SELECT count() FROM numbers(1) HAVING (SELECT count() FROM ${file}) > 0`],
  ['ORDER BY', `SELECT 1 ORDER BY (SELECT any(line) FROM ${file})`],
  ['LIMIT', `SELECT 1 LIMIT (SELECT count() FROM ${file})`],
  ['generator argument', `SELECT * FROM numbers((SELECT count() FROM ${file}))`],
  ['DESCRIBE', `DESCRIBE ${file}`],
  ['EXPLAIN', `EXPLAIN SELECT * FROM ${file}`],
  ['dictGet', `SELECT dictGet('d', 'a', toUInt64(1))`],
  ['joinGet', `SELECT joinGet('j', 'v', 1)`],
  // every source and table-reading function
  ['scalar file()', `SELECT file('${canary}')`],
  ['scalar FILE()', `SELECT FILE('${canary}')`],
  ['url', `SELECT * FROM ${url}`],
  ['s3', `SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv', 'CSV', 'x String')`],
  ['remote', "SELECT * FROM remote('127.0.0.1:9', system.one)"],
  ['remoteSecure', "SELECT * FROM remoteSecure('127.0.0.1:9', system.one)"],
  ['mysql', `SELECT * FROM mysql('127.0.0.1:9', 'd', 't', 'u', 'p')`],
  ['postgresql', `SELECT * FROM postgresql('127.0.0.1:9', 'd', 't', 'u', 'p')`],
  ['executable', `SELECT * FROM executable('cat ${canary}', 'TSV', 'x String')`],
  ['input', `SELECT * FROM input('x String')`],
  ['jdbc', `SELECT * FROM jdbc('x', 'y', 'z')`],
  ['odbc', `SELECT * FROM odbc('d', 't')`],
  ['hdfs', `SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'CSV', 'x String')`],
  ['azureBlobStorage', `SELECT * FROM azureBlobStorage('http://127.0.0.1:9', 'c', 'b', 'CSV')`],
  ['sqlite', `SELECT * FROM sqlite('${canary}', 't')`],
  ['mongodb', `SELECT * FROM mongodb('127.0.0.1:9', 'd', 'c', 'u', 'p', 'x String')`],
  ['view()', `SELECT * FROM view(SELECT * FROM ${file})`],
  ['merge() over system', "SELECT * FROM merge('system', '^processes$')"],
  ['cluster()', "SELECT * FROM cluster('default', system.one)"],
  ['clusterAllReplicas()', "SELECT * FROM clusterAllReplicas('default', system.one)"],
  ['loop()', `SELECT * FROM loop(${file}) LIMIT 1`],
  ['dictionary()', "SELECT * FROM dictionary('d')"],
  ['format()', `SELECT * FROM format(CSV, 'x String', 'a')`],
  ['generateRandom()', "SELECT * FROM generateRandom('x String') LIMIT 1"],
  ['fileCluster', `SELECT * FROM fileCluster('default', '${canary}')`],
  ['iceberg', "SELECT * FROM iceberg('http://127.0.0.1:9/bucket/t')"],
  ['deltaLake', "SELECT * FROM deltaLake('http://127.0.0.1:9/bucket/t')"],
  ['mergeTreeIndex', `SELECT * FROM mergeTreeIndex(${DB}, observations)`],
  ['getServerSetting', "SELECT getServerSetting('path')"],
  ['hasColumnInTable', "SELECT hasColumnInTable('system', 'users', 'name')"],
  // other databases
  ['system table', 'SELECT * FROM system.processes'],
  ['system table, upper case', 'SELECT * FROM SYSTEM.ONE'],
  ['INFORMATION_SCHEMA', 'SELECT * FROM INFORMATION_SCHEMA.tables'],
  ['information_schema', 'SELECT * FROM information_schema.columns'],
  ['IN a system table', 'SELECT 1 IN system.one'],
  ['SHOW PROCESSLIST', 'SHOW PROCESSLIST'],
  ['SHOW TABLES FROM system', 'SHOW TABLES FROM system'],
  ['SHOW GRANTS', 'SHOW GRANTS'],
  ['SHOW USERS', 'SHOW USERS'],
  ['SHOW SETTINGS', "SHOW SETTINGS LIKE '%'"],
  ['DESCRIBE a system table', 'DESCRIBE system.users'],
  ['SHOW CREATE of a system table', 'SHOW CREATE TABLE system.users'],
  ['EXISTS a system table', 'EXISTS system.one'],
  ['USE system', 'USE system'],
  // SETTINGS injection
  ['top-level SETTINGS', 'SELECT 1 SETTINGS readonly = 0'],
  ['subquery SETTINGS', 'SELECT * FROM (SELECT 1 SETTINGS readonly = 0)'],
  ['CTE SETTINGS', 'WITH c AS (SELECT 1 SETTINGS max_memory_usage = 0) SELECT * FROM c'],
  ['IN subquery SETTINGS', 'SELECT 1 WHERE 1 IN (SELECT 1 SETTINGS readonly = 0)'],
  ['scalar subquery SETTINGS', "SELECT (SELECT getSetting('readonly') SETTINGS readonly = 0)"],
  ['SETTINGS after FORMAT', 'SELECT 1 FORMAT CSV SETTINGS readonly = 0'],
  ['SET', 'SET readonly = 0'],
  ['SET max_memory_usage', 'SET max_memory_usage = 0'],
  ['EXPLAIN with settings', 'EXPLAIN PIPELINE graph = 1 SELECT 1'],
  ['SHOW with SETTINGS', 'SHOW TABLES SETTINGS readonly = 0'],
  // multiple statements
  ['two statements', `SELECT 1; SELECT * FROM ${file}`],
  ['two statements, no space', `SELECT 1;SELECT * FROM ${file};`],
  ['statement after a comment', `SELECT 1; -- x\nSELECT * FROM ${file}`],
  ['DROP after SELECT', `SELECT 1; DROP TABLE ${DB}.observations`],
  // INTO OUTFILE, FORMAT
  ['INTO OUTFILE', `SELECT 1 INTO OUTFILE '${outfile}'`],
  ['INTO OUTFILE AND STDOUT', `SELECT 1 INTO OUTFILE '${outfile}' AND STDOUT`],
  ['INTO OUTFILE TRUNCATE', `SELECT 1 INTO OUTFILE '${outfile}' TRUNCATE`],
  ['UNION INTO OUTFILE', `(SELECT 1) UNION ALL (SELECT 2) INTO OUTFILE '${outfile}'`],
  ['EXPLAIN INTO OUTFILE', `EXPLAIN SELECT 1 INTO OUTFILE '${outfile}'`],
  ['SHOW INTO OUTFILE', `SHOW TABLES INTO OUTFILE '${outfile}'`],
  ['FORMAT', 'SELECT 1 FORMAT JSON'],
  ['SHOW FORMAT', 'SHOW DATABASES FORMAT JSON'],
  // writes, DDL and the rest
  ['INSERT', `INSERT INTO ${DB}.device_units (device_id) VALUES ('x')`],
  ['INSERT INTO FUNCTION', `INSERT INTO FUNCTION file('${outfile}', 'CSV', 'x UInt8') VALUES (1)`],
  [
    'INSERT FROM INFILE',
    `INSERT INTO ${DB}.device_units FROM INFILE '${canary}' FORMAT LineAsString`,
  ],
  ['ALTER', `ALTER TABLE ${DB}.observations DELETE WHERE 1`],
  ['DROP', `DROP TABLE ${DB}.observations`],
  ['TRUNCATE', `TRUNCATE TABLE ${DB}.observations`],
  ['CREATE', 'CREATE TABLE t (x UInt8) ENGINE = Memory'],
  ['OPTIMIZE', `OPTIMIZE TABLE ${DB}.observations FINAL`],
  ['SYSTEM', 'SYSTEM FLUSH LOGS'],
  ['KILL', 'KILL QUERY ALL'],
  ['GRANT', 'GRANT ALL ON *.* TO default'],
  ['EXPLAIN INSERT', `EXPLAIN INSERT INTO ${DB}.device_units (device_id) VALUES ('x')`],
  ['BACKUP', `BACKUP TABLE ${DB}.observations TO File('${outfile}')`],
  ['empty', '  '],
];

/** Reading shapes that look odd but are fine: the guard must not refuse them. */
const ACCEPTED: readonly (readonly [string, string, string])[] = [
  ['alias holding comment markers', 'SELECT 1 AS "*/ x -- "', '1'],
  ['string holding ; -- /*', "SELECT '; -- /* */' AS s", '"; -- /* */"'],
  ['leading comments', '-- query: x\n/* note */ SELECT 2', '2'],
  ['nested comment, closed', '/* a /* b */ c */ SELECT 3', '3'],
  ['trailing semicolons', 'SELECT 4;;', '4'],
  [
    'quoted table name',
    `SELECT code FROM \`${DB}\`."reference_ranges" FINAL WHERE code = 'x-1'`,
    '"x-1"',
  ],
  ['IN a subquery of our table', `SELECT 'x-1' IN (SELECT code FROM ${DB}.reference_ranges)`, '1'],
  ['generator', 'SELECT count() FROM numbers(10)', '10'],
  ['unicode in a string', "SELECT 'fіle ；' AS u", '"fіle ；"'],
];

describe('the guard on the embedded engine', () => {
  it('refuses the nested-comment query of the issue, without running its hidden statement', async () => {
    const hidden = `SELECT * FROM (SELECT * FROM ${file} SETTINGS readonly = 0)`;
    const outcome = await ask(store, `/* /* */ SELECT 1 AS "*/ ${hidden} -- "`);
    expectRefused(outcome, 'QueryRefused', /table function file/);
    expect(JSON.stringify(outcome)).not.toContain(CANARY);
  });

  it('refuses every bypass shape of the corpus, and nothing leaks', async () => {
    const leaks: string[] = [];
    const answered: string[] = [];
    for (const [shape, sql] of BYPASS_CORPUS) {
      const outcome = await ask(store, sql);
      if (JSON.stringify(outcome).includes(CANARY)) leaks.push(shape);
      if ('answered' in outcome) answered.push(shape);
      else expect(outcome.refused, shape).toBe('QueryRefused');
    }
    expect(answered).toEqual([]);
    expect(leaks).toEqual([]);
    expect(existsSync(outfile)).toBe(false);
    // Nothing was written either.
    expect(await ask(store, `SELECT count() FROM ${DB}.device_units`)).toEqual({ answered: '0\n' });
    expect(BYPASS_CORPUS.length).toBeGreaterThan(100);
  });

  it('answers reading shapes that only look odd', async () => {
    for (const [shape, sql, first] of ACCEPTED) {
      const outcome = await ask(store, sql);
      expect(outcome, shape).toEqual({ answered: `${first}\n` });
    }
  });
});

describe("the analysts' connection on its own (guard bypassed)", () => {
  it('refuses every source by grant, even where a subquery lifts readonly', async () => {
    const sources = [
      `SELECT * FROM ${file}`,
      `SELECT * FROM (SELECT * FROM ${file} SETTINGS readonly = 0)`,
      `SELECT * FROM (SELECT * FROM ${url} SETTINGS readonly = 0)`,
      "SELECT * FROM (SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv', 'CSV', 'x String') SETTINGS readonly = 0)",
      "SELECT * FROM (SELECT * FROM remote('127.0.0.1:9', system.one) SETTINGS readonly = 0)",
      "SELECT * FROM (SELECT * FROM mysql('127.0.0.1:9', 'd', 't', 'u', 'p') SETTINGS readonly = 0)",
      "SELECT * FROM (SELECT * FROM postgresql('127.0.0.1:9', 'd', 't', 'u', 'p') SETTINGS readonly = 0)",
      "SELECT * FROM (SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'CSV', 'x String') SETTINGS readonly = 0)",
      "SELECT * FROM (SELECT * FROM azureBlobStorage('http://127.0.0.1:9', 'c', 'b', 'CSV') SETTINGS readonly = 0)",
      "SELECT * FROM (SELECT * FROM jdbc('x', 'y', 'z') SETTINGS readonly = 0)",
      `SELECT * FROM (SELECT * FROM sqlite('${canary}', 't') SETTINGS readonly = 0)`,
    ];
    for (const sql of sources) {
      const outcome = await onEngine(sql);
      expect(outcome, sql).toMatchObject({ refused: 'QueryRefused' });
      expect((outcome as { message: string }).message, sql).toMatch(/ACCESS_DENIED|READONLY/);
      expect(JSON.stringify(outcome)).not.toContain(CANARY);
    }
  });

  it('refuses writes and setting changes', async () => {
    for (const sql of [
      `INSERT INTO ${DB}.device_units (device_id) VALUES ('x')`,
      `DROP TABLE ${DB}.observations`,
      'SET max_memory_usage = 0',
      'SET readonly = 0',
      'SELECT 1 SETTINGS max_memory_usage = 0',
      'SELECT 1 SETTINGS max_result_rows = 0',
    ])
      expectRefused(await onEngine(sql), 'QueryRefused', /READONLY/, sql);
  });

  it("keeps the outer query's memory limit when a subquery's SETTINGS asks otherwise", async () => {
    const outcome = await onEngine(
      `SELECT * FROM (SELECT length(groupArray(repeat('x', 1000000))) FROM numbers(2000) SETTINGS max_memory_usage = 0)`,
    );
    expectRefused(outcome, 'QueryRefused', /memory limit exceeded/i);
  });

  it('lets through what only the guard refuses (chdb 26.7): subquery SETTINGS, scalar file(), INTO OUTFILE', async () => {
    // 1. a subquery's SETTINGS lifts readonly on a read-only connection
    expect(
      await onEngine("SELECT * FROM (SELECT getSetting('readonly') SETTINGS readonly = 0)"),
    ).toEqual({ answered: '0\n' });
    // 2. the scalar file() reads any host file, grant or not
    expect(await onEngine(`SELECT file('${canary}')`)).toEqual({ answered: `"${CANARY}\n"\n` });
    // 3. INTO OUTFILE is written by the engine's client side, read-only or not
    const written = join(dir, 'engine-outfile.txt');
    await onEngine(`SELECT 1 INTO OUTFILE '${written}'`);
    expect(existsSync(written)).toBe(true);
    // …and the guard refuses each of them.
    for (const sql of [
      "SELECT * FROM (SELECT getSetting('readonly') SETTINGS readonly = 0)",
      `SELECT file('${canary}')`,
      `SELECT 1 INTO OUTFILE '${join(dir, 'guarded-outfile.txt')}'`,
    ])
      expect(await ask(store, sql), sql).toMatchObject({ refused: 'QueryRefused' });
    expect(existsSync(join(dir, 'guarded-outfile.txt'))).toBe(false);
  });
});

/** Peak RSS growth over the baseline while `run` is pending, sampled every 10 ms. */
async function peakRssGrowth(
  run: () => Promise<unknown>,
): Promise<{ before: number; peak: number; after: number }> {
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 10);
  try {
    await run();
  } finally {
    clearInterval(timer);
  }
  peak = Math.max(peak, process.memoryUsage().rss);
  return { before, peak, after: process.memoryUsage().rss };
}

const MiB = 1024 * 1024;

describe('limits', () => {
  it('stops the memory-hungry query of the issue at the default limit, RSS bounded', async () => {
    let outcome: Outcome | undefined;
    const rss = await peakRssGrowth(async () => {
      outcome = await ask(
        store,
        "SELECT length(groupArray(repeat('x', 1000000))) FROM numbers(2000)",
      );
    });
    expectRefused(outcome!, 'QueryRefused', /memory limit exceeded/i);
    console.info(
      `issue query, limit ${defaults.maxMemoryBytes / MiB} MiB: RSS ${Math.round(rss.before / MiB)} → peak ${Math.round(rss.peak / MiB)} → ${Math.round(rss.after / MiB)} MiB`,
    );
    // It would take 1.9 GiB; the limit is 1 GiB, and the engine refuses the allocation.
    expect(rss.peak - rss.before).toBeLessThan(defaults.maxMemoryBytes + 256 * MiB);
  });

  it('stops a query that grows step by step at its limit, RSS within limit and margin', async () => {
    const limit = 256 * MiB;
    const small = storeWith({ maxMemoryBytes: limit });
    try {
      let outcome: Outcome | undefined;
      // 2 GB of strings, 65 MB per block of 65 536 rows: the state grows block by block.
      const rss = await peakRssGrowth(async () => {
        outcome = await ask(
          small,
          "SELECT length(groupArray(repeat('x', 1000))) FROM numbers(2000000)",
        );
      });
      expectRefused(outcome!, 'QueryRefused', /memory limit exceeded/i);
      console.info(
        `stepwise query, limit 256 MiB: RSS ${Math.round(rss.before / MiB)} → peak ${Math.round(rss.peak / MiB)} → ${Math.round(rss.after / MiB)} MiB`,
      );
      // The margin covers allocator slack and the block being built when the limit hit.
      expect(rss.peak - rss.before).toBeLessThan(limit + 256 * MiB);
    } finally {
      await small.close();
    }
  });

  it('stops a query at its time limit: QueryTimeout', async () => {
    const quick = storeWith({ timeoutSeconds: 1 });
    try {
      const started = Date.now();
      const outcome = await ask(
        quick,
        'SELECT count() FROM numbers(1000000000000) WHERE cityHash64(number) % 7 = 3',
      );
      expect(outcome).toMatchObject({ refused: 'QueryTimeout' });
      expect(Date.now() - started).toBeLessThan(30_000);
    } finally {
      await quick.close();
    }
  });

  it('refuses a result larger than its row limit instead of truncating it', async () => {
    const few = storeWith({ maxResultRows: 1000 });
    try {
      expectRefused(
        await ask(few, 'SELECT number FROM numbers(100000)'),
        'QueryRefused',
        /Limit for result exceeded/,
      );
    } finally {
      await few.close();
    }
  });
});

describe('a connection whose query failed', () => {
  // Refused at the default 1 000 000-row limit after some 7 MB of CSV were written:
  // enough output to be flushed into the connection's result before the refusal.
  const overflow = 'SELECT number FROM numbers(10000000)';

  it('on a bare chdb connection, answers the next empty query with its rows (the reproduction)', async () => {
    const session = new Session(dataPath, {
      connectionArgs: analystConnectionArgs(defaults),
    });
    try {
      await expect(session.queryAsync(overflow)).rejects.toThrow(/Limit for result exceeded/);
      const next = (
        await session.queryAsync(`SELECT * FROM ${DB}.device_units`, { format: 'CSV' })
      ).text();
      // The empty table "answers" with megabytes of the refused query's rows.
      expect(next.split('\n').slice(0, 3)).toEqual(['0', '1', '2']);
      expect(next.length).toBeGreaterThan(1_000_000);
    } finally {
      session.close();
      await drainPending();
    }
  });

  it('is not reused: the query after a refused one answers with its own rows', async () => {
    // 1. refused by the result-rows limit, partway through its output
    expectRefused(await ask(store, overflow), 'QueryRefused', /Limit for result exceeded/);
    // 2. an empty result stays empty, and SHOW TABLES lists tables
    expect(await ask(store, `SELECT * FROM ${DB}.device_units`)).toEqual({ answered: '' });
    expect(await ask(store, overflow)).toMatchObject({ refused: 'QueryRefused' });
    const tables = await ask(store, 'SHOW TABLES');
    expect('answered' in tables && tables.answered.split('\n')).toContain('"observations"');
    expect('answered' in tables && tables.answered).not.toMatch(/^\d+$/m);
    // 3. and so after the engine refused to parse a query
    expect(await ask(store, overflow)).toMatchObject({ refused: 'QueryRefused' });
    expect(await ask(store, 'SELECT (1')).toMatchObject({ refused: 'QueryRefused' });
    expect(await ask(store, `SELECT * FROM ${DB}.device_units`)).toEqual({ answered: '' });
  });
});
