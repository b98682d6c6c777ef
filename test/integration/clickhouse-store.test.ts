/**
 * The analytics store against real engines. One suite, three targets:
 *  - embedded: chdb on a fresh temp directory (always);
 *  - server driver over chdb/connection: server.ts's @clickhouse/client calls,
 *    answered in process by the same engine (always; covers the server code
 *    path without HTTP);
 *  - server: a real ClickHouse server when CLICKHOUSE_TEST_URL is set.
 * chdb binds one data directory per process, so every target in this file
 * shares the one temp directory, each with its own database.
 */
import { spawnSync } from 'node:child_process';
import type { Observation } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createAnalyticsStore,
  migrations,
  type AnalyticsStore,
} from '../../src/clickhouse/index.js';
import type { PipelineError } from '../../src/errors.js';
import type { ObservationEnvelope } from '../../src/queues.js';
import { clickhouseTargets } from '../support/clickhouse-targets.js';

// chdb binds one data directory per process: every target of this file shares one.
const targets = clickhouseTargets('iomt');
const { dataPath } = targets;
const TARGETS = targets.all;

const RECEIVED_AT = Date.UTC(2025, 4, 1, 8, 0, 0, 100);

function envelope(observation: Observation): ObservationEnvelope {
  return {
    observation,
    provenance: {
      messageId: 'm-1',
      deviceId: 'dev-1',
      receivedAt: RECEIVED_AT,
      templateName: 'vitals',
      templateVersion: '7',
    },
  };
}

const heartRate = envelope({
  resourceType: 'Observation',
  id: 'it-hr-1',
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
  subject: { reference: 'Patient/pat-it' },
  device: { reference: 'Device/dev-1' },
  effectiveDateTime: '2025-05-01T08:00:00.000Z',
  valueQuantity: {
    value: 64,
    unit: 'beats/minute',
    system: 'http://unitsofmeasure.org',
    code: '/min',
  },
});

function bloodPressure(systolic: number): ObservationEnvelope {
  const mmHg = (value: number) => ({
    value,
    unit: 'mmHg',
    system: 'http://unitsofmeasure.org',
    code: 'mm[Hg]',
  });
  return envelope({
    resourceType: 'Observation',
    id: 'it-bp-1',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '85354-9' }] },
    subject: { reference: 'Patient/pat-it' },
    effectiveDateTime: '2025-05-01T08:00:05.000Z',
    component: [
      {
        code: { coding: [{ system: 'http://loinc.org', code: '8480-6' }] },
        valueQuantity: mmHg(systolic),
      },
      {
        code: { coding: [{ system: 'http://loinc.org', code: '8462-4' }] },
        valueQuantity: mmHg(81),
      },
    ],
  });
}

afterAll(() => targets.cleanup());

for (const target of TARGETS) {
  describe.runIf(target.enabled)(target.name, () => {
    const db = target.config.database;
    let store: AnalyticsStore;
    const count = async (sql: string) => Number((await store.queryRows<{ n: string }>(sql))[0]?.n);

    beforeAll(() => {
      store = createAnalyticsStore(target.config, undefined, target.options);
    });
    afterAll(async () => {
      await store.close();
      await target.dropDatabase?.();
    });

    it('migrates once: a second migrate changes nothing', async () => {
      const tables = `SELECT name FROM system.tables WHERE database = '${db}' ORDER BY name`;
      // 1. first migrate creates everything
      await store.migrate();
      const migrationsAfterFirst = await count(`SELECT count() AS n FROM ${db}.schema_migrations`);
      const tablesAfterFirst = await store.queryRows<{ name: string }>(tables);
      // Every migration; the full schema is checked in analytics-schema.test.ts.
      expect(migrationsAfterFirst).toBe(migrations(db).length);
      expect(tablesAfterFirst.map((t) => t.name)).toEqual(
        expect.arrayContaining(['observation_components', 'observations', 'schema_migrations']),
      );
      // 2. second migrate records nothing new
      await store.migrate();
      expect(await count(`SELECT count() AS n FROM ${db}.schema_migrations`)).toBe(
        migrationsAfterFirst,
      );
      expect(await store.queryRows(tables)).toEqual(tablesAfterFirst);
    });

    it('dedupes an Observation inserted twice, components included', async () => {
      const committedAt = Date.UTC(2025, 4, 1, 8, 0, 10);
      await store.insertObservations([heartRate, bloodPressure(121)], committedAt);
      await store.insertObservations([heartRate, bloodPressure(121)], committedAt);
      expect(
        await count(`SELECT count() AS n FROM ${db}.observations FINAL WHERE id = 'it-hr-1'`),
      ).toBe(1);
      expect(
        await count(`SELECT count() AS n FROM ${db}.observations FINAL WHERE id = 'it-bp-1'`),
      ).toBe(1);
      expect(
        await count(
          `SELECT count() AS n FROM ${db}.observation_components FINAL WHERE observation_id = 'it-bp-1'`,
        ),
      ).toBe(2);
    });

    it('returns the flattened values, units and ids', async () => {
      const rows = await store.queryRows<Record<string, unknown>>(
        `SELECT id, patient_id, device_id, code, value_num, value_unit, value_ucum, effective_start,
                received_at, template_version, inserted_at > '2000-01-01' AS has_inserted_at
         FROM ${db}.observations FINAL WHERE id = 'it-hr-1'`,
      );
      expect(rows).toEqual([
        {
          id: 'it-hr-1',
          patient_id: 'pat-it',
          device_id: 'dev-1',
          code: '8867-4',
          value_num: 64,
          value_unit: 'beats/minute',
          value_ucum: '/min',
          effective_start: '2025-05-01 08:00:00.000',
          received_at: '2025-05-01 08:00:00.100',
          template_version: '7',
          has_inserted_at: 1,
        },
      ]);
      const components = await store.queryRows<{
        code: string;
        value_num: number;
        value_ucum: string;
      }>(
        `SELECT code, value_num, value_ucum FROM ${db}.observation_components FINAL
         WHERE observation_id = 'it-bp-1' ORDER BY component_index`,
      );
      expect(components).toEqual([
        { code: '8480-6', value_num: 121, value_ucum: 'mm[Hg]' },
        { code: '8462-4', value_num: 81, value_ucum: 'mm[Hg]' },
      ]);
      const resource = await store.queryRows<{ r: string }>(
        `SELECT resource AS r FROM ${db}.observations FINAL WHERE id = 'it-bp-1'`,
      );
      expect(JSON.parse(resource[0]?.r ?? '{}')).toEqual(bloodPressure(121).observation);
    });

    it('keeps the latest FHIR commit, even when a stale job arrives after it', async () => {
      const systolic = `SELECT value_num AS v FROM ${db}.observation_components FINAL
                        WHERE observation_id = 'it-bp-1' AND code = '8480-6'`;
      // 1. a newer version replaces the row
      await store.insertObservations([bloodPressure(135)], Date.UTC(2025, 4, 1, 9));
      expect(await store.queryRows(systolic)).toEqual([{ v: 135 }]);
      // 2. a redelivered older version does not win
      await store.insertObservations([bloodPressure(121)], Date.UTC(2025, 4, 1, 8, 0, 10));
      expect(await store.queryRows(systolic)).toEqual([{ v: 135 }]);
      expect(
        await count(`SELECT count() AS n FROM ${db}.observations FINAL WHERE id = 'it-bp-1'`),
      ).toBe(1);
    });

    it('answers in the requested format', async () => {
      const sql = `SELECT id, value_num FROM ${db}.observations FINAL WHERE id = 'it-hr-1'`;
      expect((await store.query(sql, 'CSV')).trim()).toBe('"it-hr-1",64');
      expect((await store.query(sql, 'TSV')).trim()).toBe('it-hr-1\t64');
      expect(await store.query(sql, 'PrettyCompact')).toContain('it-hr-1');
      expect(JSON.parse(await store.query(sql, 'JSON'))).toMatchObject({
        data: [{ id: 'it-hr-1', value_num: 64 }],
      });
      expect((await store.query(`${sql};`)).trim()).toBe('{"id":"it-hr-1","value_num":64}');
    });

    it.runIf(target.unqualifiedNames)(
      'resolves unqualified names in the configured database',
      async () => {
        expect(await count('SELECT count() AS n FROM observations FINAL')).toBe(2);
      },
    );

    it('refuses bad SQL with QueryRefused and the engine message', async () => {
      const refusal = (sql: string) =>
        store.query(sql).then(
          () => expect.unreachable(`${sql} was accepted`),
          (err: unknown) => err as PipelineError,
        );
      const syntax = await refusal('SELEC 1');
      expect(syntax.code).toBe('QueryRefused');
      expect(syntax.message).toContain('Syntax error');
      const unknownTable = await refusal(`SELECT * FROM ${db}.no_such_table`);
      expect(unknownTable.code).toBe('QueryRefused');
      expect(unknownTable.details.clickhouseCode).toBe(60);
    });

    it('pings, then refuses work once closed', async () => {
      await store.ping();
      await store.close();
      await expect(store.ping()).rejects.toMatchObject({ code: 'ClickHouseUnavailable' });
    });
  });
}

describe('embedded engine ownership', () => {
  it('a second process on the same directory gets ClickHouseUnavailable naming CHDB_PATH', async () => {
    const store = createAnalyticsStore({
      user: 'default',
      password: '',
      dataPath,
      url: undefined,
      database: 'iomt_owner',
    });
    await store.ping(); // this process now holds the directory lock
    try {
      const child = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          '--input-type=module',
          '-e',
          `import { createAnalyticsStore } from './src/clickhouse/index.ts';
           const s = createAnalyticsStore({ url: undefined, user: 'default', password: '', database: 'iomt_owner', dataPath: ${JSON.stringify(dataPath)} });
           try { await s.ping(); console.log('OPENED'); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`,
        ],
        { cwd: process.cwd(), encoding: 'utf8', timeout: 60_000 },
      );
      const out = JSON.parse(child.stdout.trim().split('\n').pop() ?? '{}') as {
        code?: string;
        message?: string;
      };
      expect(out.code).toBe('ClickHouseUnavailable');
      expect(out.message).toContain('CHDB_PATH');
      expect(out.message).toContain('another process');
    } finally {
      await store.close();
    }
  });
});
