/**
 * Cost of the ClickHouse mirror's rollups, and what they buy, on the embedded
 * engine, with baselines measured in the same run (a benchmark script that
 * prints figures, not a timed test):
 *
 *   write   per batch of Observations: the whole insert (rows + rollup
 *           recomputation), and the rollup recomputation alone (the same
 *           batch's buckets touched again);
 *   read    hourly features of every patient and one patient's minute trend,
 *           from the rollups (vitals_1h / vitals_1m) against the same answer
 *           computed from the raw rows with FINAL.
 *
 *   npx tsx bench/analytics-mirror.ts [--patients 30] [--hours 12] [--step 5] [--batch 1000]
 *
 * A simulated ward: each patient's monitor sends heart rate, SpO2 and
 * respiratory rate every --step seconds, blood pressure every fifth reading.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Observation } from 'fhir/r4.js';
import { createAnalyticsStore, flattenObservation } from '../src/clickhouse/index.js';
import { touchedBuckets } from '../src/clickhouse/rollup-touch.js';
import type { ObservationEnvelope } from '../src/queues.js';

const { values: args } = parseArgs({
  options: {
    patients: { type: 'string', default: '30' },
    hours: { type: 'string', default: '12' },
    step: { type: 'string', default: '5' },
    batch: { type: 'string', default: '1000' },
  },
});
const PATIENTS = Number(args.patients);
const HOURS = Number(args.hours);
const STEP_MS = Number(args.step) * 1000;
const BATCH = Number(args.batch);

const UCUM = 'http://unitsofmeasure.org';
const q = (value: number, code: string) => ({ value, system: UCUM, code });

function* readings(): Generator<ObservationEnvelope> {
  const start = Date.UTC(2026, 10, 1);
  let n = 0;
  for (let t = start; t < start + HOURS * 3_600_000; t += STEP_MS) {
    for (let p = 0; p < PATIENTS; p++) {
      const base = (
        o: Partial<Observation> & { code: Observation['code'] },
      ): ObservationEnvelope => ({
        observation: {
          resourceType: 'Observation',
          id: `obs-${n++}`,
          meta: { versionId: '1', lastUpdated: new Date(t + 300).toISOString() },
          status: 'final',
          subject: { reference: `Patient/p-${p}` },
          device: { reference: `Device/dev-${p}` },
          effectiveDateTime: new Date(t).toISOString(),
          ...o,
        },
        provenance: {
          messageId: `m-${t}-${p}`,
          deviceId: `d-${p}`,
          receivedAt: t + 40,
          templateName: 'vitals',
          templateVersion: 'bench',
        },
      });
      const loinc = (code: string) => ({ coding: [{ system: 'http://loinc.org', code }] });
      yield base({ code: loinc('8867-4'), valueQuantity: q(60 + ((t / 1000 + p) % 40), '/min') });
      yield base({ code: loinc('59408-5'), valueQuantity: q(94 + ((t / 7000 + p) % 5), '%') });
      yield base({ code: loinc('9279-1'), valueQuantity: q(12 + ((t / 3000 + p) % 8), '/min') });
      if ((t / STEP_MS) % 5 === 0) {
        yield base({
          code: loinc('85354-9'),
          component: [
            { code: loinc('8480-6'), valueQuantity: q(110 + (p % 30), 'mm[Hg]') },
            { code: loinc('8462-4'), valueQuantity: q(70 + (p % 15), 'mm[Hg]') },
          ],
        });
      }
    }
  }
}

const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.floor(p * (xs.length - 1))]!;
const ms = (x: number) => `${x.toFixed(1)} ms`;

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const out = await fn();
  return [out, performance.now() - t0];
}

const dir = await mkdtemp(path.join(tmpdir(), 'iomt-bench-analytics-'));
const store = createAnalyticsStore({
  url: undefined,
  user: 'default',
  password: '',
  database: 'bench',
  dataPath: dir,
});
try {
  await store.migrate();
  // 1. write: every batch, timed; every tenth batch's rollups recomputed again, timed alone
  const inserts: number[] = [];
  const recomputes: number[] = [];
  let batch: ObservationEnvelope[] = [];
  let total = 0;
  const flush = async () => {
    const [, t] = await timed(() => store.insertObservations(batch, Date.now()));
    inserts.push(t);
    total += batch.length;
    if (inserts.length % 10 === 0) {
      // The same minute buckets the insert touched, touched again: the recomputation alone.
      const flat = batch.map((e) => flattenObservation(e, Date.now()));
      const points = flat.flatMap((f) => [f.observation, ...f.components]);
      const values = touchedBuckets(points, 'minute')
        .map((b) => `('minute', '${b.patient_id}', '${b.code}', '${b.bucket}')`)
        .join(', ');
      const [, r] = await timed(() =>
        store.execute(
          `INSERT INTO bench.rollup_touch (grain, patient_id, code, bucket) VALUES ${values}`,
        ),
      );
      recomputes.push(r);
    }
    batch = [];
  };
  for (const env of readings()) {
    batch.push(env);
    if (batch.length >= BATCH) await flush();
  }
  if (batch.length > 0) await flush();
  const rows = await store.queryRows<{ n: string }>('SELECT count() AS n FROM bench.observations');

  // 2. read: the same answers from the rollups and from the raw rows
  const reads: [string, string, string][] = [
    [
      'hourly features, all patients',
      `SELECT patient_id, hour, avgIf(avg, code = '8867-4') AS hr, minIf(min, code = '59408-5') AS spo2 FROM bench.vitals_1h GROUP BY patient_id, hour FORMAT Null`,
      `SELECT patient_id, toStartOfHour(effective_start) AS hour, avgIf(value_num, code = '8867-4') AS hr, minIf(value_num, code = '59408-5') AS spo2 FROM bench.observations FINAL GROUP BY patient_id, hour FORMAT Null`,
    ],
    [
      'one patient, minute trend, whole period',
      `SELECT minute, avg FROM bench.vitals_1m WHERE patient_id = 'p-7' AND code = '8867-4' ORDER BY minute FORMAT Null`,
      `SELECT toStartOfMinute(effective_start) AS minute, avg(value_num) FROM bench.observations FINAL WHERE patient_id = 'p-7' AND code = '8867-4' GROUP BY minute ORDER BY minute FORMAT Null`,
    ],
  ];
  const best = async (sql: string) => {
    const times: number[] = [];
    for (let i = 0; i < 5; i++) times.push((await timed(() => store.query(sql, 'TSV')))[1]);
    return Math.min(...times);
  };

  console.log(`ward: ${PATIENTS} patients, ${HOURS} h, a reading every ${STEP_MS / 1000} s`);
  console.log(
    `mirrored: ${total} Observations (${rows[0]?.n} rows) in ${inserts.length} batches of ${BATCH}`,
  );
  // The mirror's ceiling: Observations per second of insert time (rollups
  // included), to set beside the FHIR ceiling of bench/end-to-end.ts.
  const insertSeconds = inserts.reduce((a, b) => a + b, 0) / 1000;
  console.log(
    `ceiling: ${(total / insertSeconds).toFixed(0)} Observations/s into the embedded engine, rollups included (one insert at a time)`,
  );
  console.log('\nwrite, per batch            p50          p95');
  console.log(
    `  insert with rollups   ${ms(percentile(inserts, 0.5)).padStart(10)}   ${ms(percentile(inserts, 0.95)).padStart(10)}`,
  );
  console.log(
    `  rollup recomputation  ${ms(percentile(recomputes, 0.5)).padStart(10)}   ${ms(percentile(recomputes, 0.95)).padStart(10)}   (${recomputes.length} samples)`,
  );
  console.log('\nread (best of 5)                          rollup     raw FINAL');
  for (const [name, rollup, raw] of reads) {
    console.log(
      `  ${name.padEnd(40)} ${ms(await best(rollup)).padStart(9)}   ${ms(await best(raw)).padStart(9)}`,
    );
  }
} finally {
  await store.close();
  await rm(dir, { recursive: true, force: true });
}
