/**
 * Reproduction of issue 9's first finding: the analyst guard and the engine
 * disagree about nested block comments. The guard strips the leading comment
 * with its own (non-nesting) regex and checks `SELECT 1 AS "…"`; the engine,
 * whose comments nest, runs the statement hidden in the alias, whose subquery SETTINGS lift the
 * `readonly = 1` appended to the text. Fails until the guard checks the engine's
 * own parse of the exact text.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { createAnalyticsStore } from '../../src/clickhouse/index.js';

const dir = mkdtempSync(join(tmpdir(), 'iomt-bypass-'));
const canary = join(dir, 'canary.txt');
writeFileSync(canary, 'CANARY-7f3a\n');
const store = createAnalyticsStore({
  url: undefined,
  user: 'default',
  password: '',
  database: 'iomt',
  dataPath: join(dir, 'chdb'),
});
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

it('refuses the nested-comment query of the issue', async () => {
  await store.migrate();
  const hidden = `SELECT * FROM (SELECT * FROM file('${canary}', 'LineAsString') SETTINGS readonly = 0)`;
  const sql = `/* /* */ SELECT 1 AS "*/ ${hidden} -- "`;
  const answer = await store.analystQuery(sql, 'CSV').then(
    (text) => ({ answered: text }),
    (err: { code: string; message: string }) => ({ refused: err.code, message: err.message }),
  );
  expect(JSON.stringify(answer)).not.toContain('CANARY');
  expect(answer).toMatchObject({ refused: 'QueryRefused' });
});
