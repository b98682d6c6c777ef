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
import { acceptedShapes, bypassCorpus } from '../support/analyst-bypass-corpus.js';
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
const BYPASS_CORPUS = bypassCorpus({ canary, outfile, database: DB });
const ACCEPTED = acceptedShapes(DB);

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
