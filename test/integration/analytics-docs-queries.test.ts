/**
 * Every SQL query in docs/analytics.md, run as an analyst runs it (the admin
 * API's read-only path, store.analystQuery) on a simulated ward with planted
 * facts (test/support/analytics-dataset.ts), against the answer computed here
 * from the simulation's own records — and, where the dataset planted a fact,
 * against that fact too. On the embedded engine, and on a ClickHouse server when
 * CLICKHOUSE_TEST_URL is set (the server driver over chdb/connection cannot run
 * the documented unqualified names). The Grafana dashboard's queries run here
 * too, with the data source's macros expanded.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createAnalyticsStore,
  deviceAssociationRows,
  type AnalyticsStore,
} from '../../src/clickhouse/index.js';
import { buildDataset, deviceUnitRows } from '../support/analytics-dataset.js';
import { EXPECTED, sorted, type Row } from '../support/analytics-expected.js';
import { clickhouseTargets } from '../support/clickhouse-targets.js';

/** The documented queries, by their `-- query:` label. */
function documentedQueries(): Map<string, string> {
  const doc = readFileSync(new URL('../../docs/analytics.md', import.meta.url), 'utf8');
  const out = new Map<string, string>();
  for (const [, sql] of doc.matchAll(/```sql\n([\s\S]*?)```/g)) {
    const label = /^-- query: ([\w-]+)/m.exec(sql!)?.[1];
    if (label) {
      expect(out.has(label), `label ${label} used twice`).toBe(false);
      out.set(label, sql!);
    }
  }
  return out;
}

const MIN = 60_000;

interface Dashboard {
  readonly templating: { readonly list: readonly { readonly query: string }[] };
  readonly panels: readonly {
    readonly title: string;
    readonly targets: readonly { readonly rawSql: string }[];
  }[];
}
const DASHBOARD = JSON.parse(
  readFileSync(new URL('../../deploy/grafana/dashboards/iomt.json', import.meta.url), 'utf8'),
) as Dashboard;

const targets = clickhouseTargets('docs');
const queries = documentedQueries();
const dataset = buildDataset(Date.now() - 5 * MIN);

afterAll(() => targets.cleanup());

describe('docs/analytics.md', () => {
  it('documents at least ten labelled questions, each with a known answer here', () => {
    expect(queries.size).toBeGreaterThanOrEqual(10);
    expect(sorted(queries.keys())).toEqual(sorted(Object.keys(EXPECTED)));
  });
});

for (const target of targets.all.filter((t) => t.enabled && t.unqualifiedNames)) {
  describe(`documented queries on ${target.name}`, () => {
    let store: AnalyticsStore;

    beforeAll(async () => {
      store = createAnalyticsStore(target.config, undefined, target.options);
      await store.migrate();
      // 1. the units, as an operator loads them
      const units = deviceUnitRows(dataset.anchor)
        .map((u) => `('${u.device_id}', '${u.unit}', '${u.valid_from}')`)
        .join(', ');
      await store.execute(`INSERT INTO device_units (device_id, unit, valid_from) VALUES ${units}`);
      // 2. the mirror's writes, duplicates and the stale redelivery included
      for (const batch of dataset.batches) await store.insertObservations(batch, Date.now());
      // 3. message outcomes, delivered twice
      await store.insertMessages(dataset.messages);
      await store.insertMessages(dataset.messages);
      // 4. the association histories, each written twice (as jobs are, at least once)
      for (const [device, history] of dataset.associations)
        for (let k = 0; k < 2; k++)
          await store.insertAssociations(deviceAssociationRows(device, history));
    }, 300_000);

    afterAll(async () => {
      await store?.close();
      await target.dropDatabase?.();
    });

    it('answers every Grafana dashboard query (deploy/grafana/dashboards/iomt.json)', async () => {
      const db = target.config.database;
      // Grafana's ClickHouse data source macros, over the last 12 hours; the chosen patient.
      const grafana = (sql: string) =>
        sql
          .replace(/\$__timeFilter\(([^)]+)\)/g, '$1 >= now() - INTERVAL 12 HOUR AND $1 <= now()')
          .replace(
            /\$__timeInterval\(([^)]+)\)/g,
            'toStartOfInterval(toDateTime($1), INTERVAL 60 second)',
          )
          .replace(/\$\{patient:sqlstring\}/g, "'pat-b'")
          .replace(/\biomt\./g, `${db}.`);
      const answer = async (sql: string) =>
        (await store.analystQuery(grafana(sql), 'JSONEachRow'))
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Row);
      const board = DASHBOARD;
      const patients = await answer(board.templating.list[0]!.query);
      expect(patients.map((r) => r.patient_id)).toEqual([
        'pat-a',
        'pat-b',
        'pat-c',
        'pat-d',
        'pat-e',
        'pat-f',
      ]);
      const byTitle = new Map<string, Row[]>();
      for (const panel of board.panels) {
        const result = await answer(panel.targets[0]!.rawSql);
        expect(result.length, panel.title).toBeGreaterThan(0);
        byTitle.set(panel.title, result);
      }
      // What each panel shows, against the simulation.
      const vitals = byTitle.get('Live vitals: ${patient}')!;
      expect(new Set(vitals.map((r) => r.measure))).toEqual(
        new Set([
          'Heart rate',
          'SpO2 (pulse oximetry)',
          'Respiratory rate',
          'Systolic blood pressure',
          'Diastolic blood pressure',
          'Body temperature',
        ]),
      );
      expect(
        vitals.filter((r) => r.measure === 'SpO2 (pulse oximetry)' && r.value === 88),
      ).toHaveLength(8);
      const dead = byTitle.get('Dead letters by code')!;
      expect(dead.map((r) => [r.error_code, Number(r.messages)])).toEqual([
        ['InvalidPayload', 3],
        ['NoPatientAssociated', 2],
        ['TimestampOutOfRange', 2],
        ['FhirRejected', 1],
      ]);
      const perDevice = byTitle.get('Messages per device')!;
      expect(new Set(perDevice.map((r) => r.device_id)).size).toBe(6);
      const outOfRange = byTitle.get('Out-of-range readings per measure')!;
      expect(outOfRange.find((r) => r.measure === 'SpO2 (pulse oximetry)')?.out_of_range).toBe(
        '19',
      );
      const latency = byTitle.get('Ingestion latency (broker receipt to FHIR commit)')!;
      expect(latency.every((r) => Number(r.p50_ms) >= 150 && Number(r.p50_ms) <= 5000)).toBe(true);
    });

    for (const [label, sql] of queries) {
      it(`${label} returns its known answer`, async () => {
        const rows = await store.queryRows<Row>('SELECT 1'); // the store is up
        expect(rows).toHaveLength(1);
        const text = await store.analystQuery(sql, 'JSONEachRow');
        const result = text
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Row);
        EXPECTED[label]!(dataset, result);
      });
    }
  });
}
