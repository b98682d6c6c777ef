/**
 * The analytics schema on every engine (test/support/clickhouse-targets.ts):
 * migrations are idempotent, retention TTLs are applied once, a duplicate write
 * leaves one row after FINAL, rollups equal a recomputation from the raw rows
 * (after duplicate deliveries, a correction and a stale redelivery), the last
 * outcome of a message wins, and analysts' SQL stays read-only.
 * All names are qualified: one target ignores the client's database.
 */
import type { Observation } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createAnalyticsStore,
  migrations,
  type AnalyticsStore,
} from '../../src/clickhouse/index.js';
import type { PipelineError } from '../../src/errors.js';
import type { MessageOutcome, ObservationEnvelope } from '../../src/queues.js';
import { buildDataset, LOINC } from '../support/analytics-dataset.js';
import { clickhouseTargets } from '../support/clickhouse-targets.js';

const targets = clickhouseTargets('schema');
afterAll(() => targets.cleanup());

const dataset = buildDataset(Date.now() - 10 * 60_000);

/** Ten consecutive batches per insert: fewer round trips, duplicates still delivered twice. */
function groupedBatches(): ObservationEnvelope[][] {
  const out: ObservationEnvelope[][] = [];
  for (let i = 0; i < dataset.batches.length; i += 10)
    out.push(dataset.batches.slice(i, i + 10).flat());
  return out;
}

const bp = (id: string, systolic: number, lastUpdated: string): ObservationEnvelope => ({
  observation: {
    resourceType: 'Observation',
    id,
    meta: { versionId: '1', lastUpdated },
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: LOINC.bpPanel }] },
    subject: { reference: 'Patient/pat-dup' },
    device: { reference: 'Device/dev-dup' },
    effectiveDateTime: '2025-03-01T10:00:00.000Z',
    component: [
      {
        code: { coding: [{ system: 'http://loinc.org', code: LOINC.systolic }] },
        valueQuantity: { value: systolic, system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
      },
      {
        code: { coding: [{ system: 'http://loinc.org', code: LOINC.diastolic }] },
        valueQuantity: { value: 80, system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
      },
    ],
  },
  provenance: {
    messageId: 'm-dup',
    deviceId: 'dup',
    receivedAt: Date.parse('2025-03-01T10:00:00.100Z'),
    templateName: 'bloodpressure',
    templateVersion: 't1',
  },
});

const pleth: Observation = {
  resourceType: 'Observation',
  id: 'obs-pleth-dup',
  meta: { versionId: '1', lastUpdated: '2025-03-01T10:00:05.000Z' },
  status: 'final',
  code: { coding: [{ system: 'urn:iso:std:iso:11073:10101', code: '150452' }] },
  subject: { reference: 'Patient/pat-dup' },
  effectiveDateTime: '2025-03-01T10:00:00.000Z',
  valueSampledData: {
    origin: { value: 0, system: 'http://unitsofmeasure.org', code: '1' },
    period: 20,
    dimensions: 1,
    data: '1 2 E 4 5',
  },
};

function outcome(
  id: string,
  outcomeName: MessageOutcome['outcome'],
  decidedAt: number,
): MessageOutcome {
  return {
    message: {
      id,
      deviceId: 'dup',
      topic: 'devices/dup/telemetry',
      qos: 1,
      receivedAt: Date.parse('2025-03-01T10:00:00.100Z'),
      payload: '{"spo2":97}',
      encoding: 'utf8',
    },
    patientId: 'pat-dup',
    outcome: outcomeName,
    ...(outcomeName === 'dead_lettered'
      ? { errorCode: 'FhirRejected' as const, errorStage: 'fhir' as const }
      : {}),
    observationCount: 1,
    templateVersion: 't1',
    decidedAt,
  };
}

for (const target of targets.all.filter((t) => t.enabled)) {
  describe(target.name, () => {
    const db = target.config.database;
    let store: AnalyticsStore;
    const rows = <T = Record<string, unknown>>(sql: string) => store.queryRows<T>(sql);
    const count = async (sql: string) => Number((await rows<{ n: string }>(sql))[0]?.n);

    /** Everything a migration could change: tables, their DDL and TTL, columns, migrations, mutations. */
    async function schemaSnapshot() {
      return {
        tables: await rows(
          `SELECT name, engine, create_table_query, engine_full FROM system.tables
           WHERE database = '${db}' ORDER BY name`,
        ),
        columns: await rows(
          `SELECT table, name, type, position FROM system.columns WHERE database = '${db}' ORDER BY table, position`,
        ),
        migrations: await rows(
          `SELECT version, description FROM ${db}.schema_migrations ORDER BY version`,
        ),
        mutations: await count(
          `SELECT count() AS n FROM system.mutations WHERE database = '${db}'`,
        ),
        ranges: await count(`SELECT count() AS n FROM ${db}.reference_ranges`),
      };
    }

    beforeAll(() => {
      store = createAnalyticsStore(
        { ...target.config, retentionDays: 3650, rollupRetentionDays: 7300 },
        undefined,
        target.options,
      );
    });
    afterAll(async () => {
      await store.close();
      await target.dropDatabase?.();
    });

    it('applies migrations and retention once: a second migrate changes nothing', async () => {
      // 1. first migrate: every table, view and TTL
      await store.migrate();
      const first = await schemaSnapshot();
      const names = first.tables.map((t) => t.name);
      for (const t of [
        'observations',
        'observation_components',
        'samples',
        'device_messages',
        'vitals_1m',
        'vitals_1h',
        'vitals_1m_mv',
        'vitals_1h_mv',
        'vital_points',
        'observations_latest',
        'reference_ranges',
        'device_units',
        'device_associations',
      ])
        expect(names).toContain(t);
      expect(first.migrations).toHaveLength(migrations('iomt').length);
      expect(first.migrations.map((m) => Number(m.version))).toEqual(
        migrations('iomt').map((m) => m.version),
      );
      const ttl = (name: string) => String(first.tables.find((t) => t.name === name)?.engine_full);
      expect(ttl('observations')).toMatch(
        /TTL toDateTime\(effective_start\) \+ toIntervalDay\(3650\)/,
      );
      expect(ttl('samples')).toMatch(/TTL toDateTime\(ts\) \+ toIntervalDay\(3650\)/);
      expect(ttl('vitals_1h_state')).toMatch(/TTL toDateTime\(bucket\) \+ toIntervalDay\(7300\)/);
      expect(first.ranges).toBe(7);
      // 2. second migrate: identical, and no TTL rewrite (no new mutation)
      await store.migrate();
      expect(await schemaSnapshot()).toEqual(first);
      // 3. another process with other retention changes only the TTLs, and 0 removes them
      const other = createAnalyticsStore(
        { ...target.config, retentionDays: 0, rollupRetentionDays: 3000 },
        undefined,
        target.options,
      );
      try {
        await other.migrate();
        const after = await schemaSnapshot();
        const engine = (name: string) =>
          String(after.tables.find((t) => t.name === name)?.engine_full);
        expect(engine('observations')).not.toMatch(/TTL/);
        expect(engine('vitals_1m_state')).toMatch(/toIntervalDay\(3000\)/);
        expect(after.migrations).toEqual(first.migrations);
      } finally {
        await other.close();
      }
    });

    it('leaves one row after FINAL for a duplicate write, in every table, and rollups unchanged', async () => {
      const envs = [
        bp('obs-bp-dup', 121, '2025-03-01T10:00:01.000Z'),
        { ...bp('x', 0, ''), observation: pleth },
      ];
      await store.insertObservations(envs, Date.now());
      const rollup = `SELECT count, min, max, avg, last FROM ${db}.vitals_1m
                      WHERE patient_id = 'pat-dup' ORDER BY code`;
      const before = await rows(rollup);
      await store.insertObservations(envs, Date.now());
      await store.insertMessages([outcome('m-dup', 'processed', 1)]);
      await store.insertMessages([outcome('m-dup', 'processed', 1)]);
      expect(
        await count(
          `SELECT count() AS n FROM ${db}.observations FINAL WHERE patient_id = 'pat-dup'`,
        ),
      ).toBe(2);
      expect(
        await count(
          `SELECT count() AS n FROM ${db}.observation_components FINAL WHERE patient_id = 'pat-dup'`,
        ),
      ).toBe(2);
      expect(
        await count(`SELECT count() AS n FROM ${db}.samples FINAL WHERE patient_id = 'pat-dup'`),
      ).toBe(5);
      expect(
        await count(
          `SELECT count() AS n FROM ${db}.device_messages FINAL WHERE message_id = 'm-dup'`,
        ),
      ).toBe(1);
      expect(await rows(rollup)).toEqual(before);
      expect(before).toEqual([
        { count: '1', min: 80, max: 80, avg: 80, last: 80 }, // diastolic 8462-4
        { count: '1', min: 121, max: 121, avg: 121, last: 121 }, // systolic 8480-6
      ]);
      // The samples: own timestamps, "E" kept as a flag without a value.
      expect(
        await rows(`SELECT sample_index, ts, value, flag FROM ${db}.samples FINAL
                    WHERE observation_id = 'obs-pleth-dup' ORDER BY sample_index`),
      ).toEqual([
        { sample_index: 0, ts: '2025-03-01 10:00:00.000', value: 1, flag: '' },
        { sample_index: 1, ts: '2025-03-01 10:00:00.020', value: 2, flag: '' },
        { sample_index: 2, ts: '2025-03-01 10:00:00.040', value: null, flag: 'E' },
        { sample_index: 3, ts: '2025-03-01 10:00:00.060', value: 4, flag: '' },
        { sample_index: 4, ts: '2025-03-01 10:00:00.080', value: 5, flag: '' },
      ]);
    });

    it('keeps the later outcome of a message, whatever the arrival order', async () => {
      await store.insertMessages([outcome('m-late', 'dead_lettered', 2000)]);
      await store.insertMessages([outcome('m-late', 'processed', 1000)]); // stale, arrives last
      expect(
        await rows(
          `SELECT outcome, error_code, error_stage FROM ${db}.device_messages FINAL WHERE message_id = 'm-late'`,
        ),
      ).toEqual([{ outcome: 'dead_lettered', error_code: 'FhirRejected', error_stage: 'fhir' }]);
    });

    it('keeps rollups equal to a recomputation from the raw rows', async () => {
      // 1. a simulated ward: duplicate deliveries, a correction, a stale redelivery
      for (const batch of groupedBatches()) await store.insertObservations(batch, Date.now());
      const patients = `('pat-a','pat-b','pat-c','pat-d','pat-e','pat-f')`;
      // 2. the recomputation, from the raw rows with FINAL
      const raw = (bucket: string) => `
        SELECT patient_id, code, ${bucket} AS b, count() AS count, min(v) AS min, max(v) AS max,
               avg(v) AS avg, argMax(v, (t, pid)) AS last
        FROM (
          SELECT patient_id, code, effective_start AS t, id AS pid, value_num AS v
          FROM ${db}.observations FINAL WHERE value_num IS NOT NULL
          UNION ALL
          SELECT patient_id, code, effective_start, concat(observation_id, '#', toString(component_index)), value_num
          FROM ${db}.observation_components FINAL WHERE value_num IS NOT NULL
        )
        WHERE patient_id IN ${patients}
        GROUP BY patient_id, code, b ORDER BY patient_id, code, b`;
      const view = (name: string, bucket: string) => `
        SELECT patient_id, code, ${bucket} AS b, count, min, max, avg, last
        FROM ${db}.${name} WHERE patient_id IN ${patients} ORDER BY patient_id, code, b`;
      const minutes = await rows(view('vitals_1m', 'minute'));
      const hours = await rows(view('vitals_1h', 'hour'));
      const round = (rs: Record<string, unknown>[]) =>
        rs.map((r) => ({ ...r, avg: Math.round(Number(r.avg) * 1e6) / 1e6 }));
      expect(round(minutes)).toEqual(
        round(await rows(raw("toDateTime(toStartOfMinute(t), 'UTC')"))),
      );
      expect(round(hours)).toEqual(round(await rows(raw("toDateTime(toStartOfHour(t), 'UTC')"))));
      // 3. and from the simulation's own values: every reading once, the correction counted
      const points = dataset.points.length;
      expect(minutes.reduce((n, r) => n + Number(r.count), 0)).toBe(points);
      expect(hours.reduce((n, r) => n + Number(r.count), 0)).toBe(points);
      expect(hours.some((r) => r.code === LOINC.hr && r.max === 135)).toBe(true);
    });

    it('runs analysts’ reading SQL and refuses anything else', async () => {
      const refused = async (sql: string) => {
        const err = await store.analystQuery(sql).then(
          () => undefined,
          (e: unknown) => e as PipelineError,
        );
        expect(err?.code, sql).toBe('QueryRefused');
        return err!.message;
      };
      expect(await refused(`INSERT INTO ${db}.device_units (device_id) VALUES ('x')`)).toMatch(
        /reading statements/,
      );
      expect(await refused(`DROP TABLE ${db}.observations`)).toMatch(/reading statements/);
      expect(await refused(`SELECT * FROM file('/etc/hostname', 'LineAsString')`)).toMatch(
        /table function file/,
      );
      expect(await refused(`SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')`)).toMatch(
        /table function url/,
      );
      expect(await refused(`SELECT file('/etc/hostname')`)).toMatch(/function file/);
      expect(await refused(`SELECT * FROM (SELECT 1 SETTINGS readonly = 0)`)).toMatch(/SETTINGS/);
      expect(await refused(`SELECT 1 INTO OUTFILE '/tmp/iomt-outfile-test'`)).toMatch(/OUTFILE/);
      expect(await refused(`SELECT 1; SELECT 2`)).toMatch(/one statement/);
      expect(await refused(`SELEC 1`)).toMatch(/does not parse/);
      expect(await refused(`SELECT (1`)).toMatch(/Syntax error/);
      const ok = async (sql: string) => (await store.analystQuery(sql, 'CSV')).trim();
      expect(await ok(`SELECT count() FROM numbers(10)`)).toBe('10');
      expect(await ok(`WITH 2 AS x SELECT x * 21;`)).toBe('42');
      expect(await ok(`SHOW TABLES FROM ${db}`)).toContain('vitals_1m');
      expect(await ok(`DESCRIBE TABLE ${db}.vitals_1h`)).toContain('"avg","Float64"');
      expect(await ok(`EXPLAIN SELECT id FROM ${db}.observations`)).toContain('ReadFromMergeTree');
      expect(await ok(`EXISTS TABLE ${db}.samples`)).toBe('1');
    });
  });
}
