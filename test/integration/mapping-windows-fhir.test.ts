/**
 * Grouped Observations against a real HAPI FHIR server: late and out-of-order
 * readings merge into the stored window (read, merge, PUT with If-Match),
 * duplicates write nothing, concurrent writers of one window lose nothing, and
 * the whole pipeline (MQTT → worker → FHIR → ClickHouse) keeps one Observation
 * per window.
 */
import type { Observation } from 'fhir/r4.js';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createFhirGateway } from '../../src/fhir/gateway.js';
import { createObservationMerger } from '../../src/fhir/merge.js';
import { compileSources, normalizeMessage, type MappingSet } from '../../src/mapping/index.js';
import {
  enrol,
  connectDevice,
  fhirSearch,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';

const fhirUrl = inject('fhirUrl');
const ucum = 'http://unitsofmeasure.org';

const device = {
  templateType: 'CollectionContent',
  template: [
    {
      templateType: 'JsonataContent',
      template: {
        typeName: 'hr-window',
        typeMatchExpression: 'hr',
        timestampExpression: 't',
        values: [{ valueName: 'hr', valueExpression: 'v', required: true }],
      },
    },
    {
      templateType: 'JsonataContent',
      template: {
        typeName: 'bp-run',
        typeMatchExpression: '$[$exists(run)]',
        timestampExpression: 't',
        correlationIdExpression: 'run',
        values: [
          { valueName: 'sys', valueExpression: 'sys' },
          { valueName: 'dia', valueExpression: 'dia' },
        ],
      },
    },
  ],
};
const fhir = {
  templateType: 'CollectionFhir',
  template: [
    {
      templateType: 'CodeValueFhir',
      template: {
        typeName: 'hr-window',
        codes: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }],
        periodInterval: 60,
        value: {
          valueType: 'SampledData',
          valueName: 'hr',
          defaultPeriod: 60000,
          unit: '/min',
          code: '/min',
          system: ucum,
        },
      },
    },
    {
      templateType: 'CodeValueFhir',
      template: {
        typeName: 'bp-run',
        codes: [{ system: 'http://loinc.org', code: '85354-9' }],
        periodInterval: -1,
        components: [
          {
            codes: [{ system: 'http://loinc.org', code: '8480-6' }],
            value: {
              valueType: 'Quantity',
              valueName: 'sys',
              unit: 'mmHg',
              code: 'mm[Hg]',
              system: ucum,
            },
          },
          {
            codes: [{ system: 'http://loinc.org', code: '8462-4' }],
            value: {
              valueType: 'Quantity',
              valueName: 'dia',
              unit: 'mmHg',
              code: 'mm[Hg]',
              system: ucum,
            },
          },
        ],
      },
    },
  ],
};

let mappings: MappingSet;
const patient = uniqueId('pw');
const deviceId = uniqueId('mw');

async function ensureSubjects(): Promise<void> {
  for (const [type, body] of [
    ['Patient', { resourceType: 'Patient', id: patient }],
    [
      'Device',
      {
        resourceType: 'Device',
        id: `dev-${deviceId}`,
        patient: { reference: `Patient/${patient}` },
      },
    ],
  ] as const) {
    const res = await fetch(`${fhirUrl}/${type}/${body.id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(body),
    });
    expect(res.ok).toBe(true);
  }
}

async function windowOf(body: unknown): Promise<Observation> {
  const out = await normalizeMessage(mappings, {
    payload: JSON.stringify(body),
    // Received an hour after the readings: the pure path checks device times against receipt.
    meta: {
      deviceId,
      topic: `devices/${deviceId}/telemetry`,
      receivedAt: Date.parse('2026-05-01T13:00:00Z'),
    },
    patientId: patient,
    identifierSystem: 'urn:iomt:observation',
  });
  return out.observations[0]!.observation;
}

async function read(id: string): Promise<Observation> {
  const res = await fetch(`${fhirUrl}/Observation/${id}`, {
    headers: { 'cache-control': 'no-cache' },
  });
  return (await res.json()) as Observation;
}

const tokens = (o: Observation) => o.valueSampledData!.data!.split(' ');

beforeAll(async () => {
  const r = compileSources([
    { file: 'device/d.json', kind: 'device', text: JSON.stringify(device) },
    { file: 'fhir/f.json', kind: 'fhir', text: JSON.stringify(fhir) },
  ]);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  mappings = r.mappings;
  await ensureSubjects();
});

describe('read-merge-write of grouped Observations', () => {
  const gateway = createFhirGateway({ baseUrl: fhirUrl, timeoutMs: 30_000 });
  const merger = createObservationMerger(gateway);

  it('creates the window, then merges a late, out-of-order batch into it by time', async () => {
    const first = await windowOf([{ hr: true, t: '2026-05-01T10:30:00Z', v: 80 }]);
    const created = await merger.write(first);
    expect(created).toMatchObject({ ok: true, created: true });
    const late = await windowOf([{ hr: true, t: '2026-05-01T10:05:00Z', v: 60 }]);
    const merged = await merger.write(late);
    expect(merged).toMatchObject({ ok: true, created: false });
    const stored = await read(first.id!);
    const t = tokens(stored);
    expect([t[5], t[30]]).toEqual(['60', '80']);
    expect(stored.meta?.versionId).toBe('2');
  });

  it('a duplicate batch writes nothing (no new version)', async () => {
    const again = await windowOf([{ hr: true, t: '2026-05-01T10:30:00Z', v: 80 }]);
    const before = await read(again.id!);
    const outcome = await merger.write(again);
    expect(outcome).toMatchObject({ ok: true, unchanged: true });
    expect((await read(again.id!)).meta?.versionId).toBe(before.meta?.versionId);
  });

  it('concurrent writers of one window lose no sample (If-Match conflicts are retried)', async () => {
    let conflicts = 0;
    const racing = createObservationMerger(gateway, {
      maxAttempts: 20,
      onConflict: () => conflicts++,
    });
    const minutes = [3, 9, 14, 22, 35, 41, 50, 58];
    const parts = await Promise.all(
      minutes.map((m) =>
        windowOf([{ hr: true, t: `2026-05-01T11:${String(m).padStart(2, '0')}:00Z`, v: 100 + m }]),
      ),
    );
    const outcomes = await Promise.all(parts.map((p) => racing.write(p)));
    expect(outcomes.every((o) => o.ok)).toBe(true);
    const t = tokens(await read(parts[0]!.id!));
    expect(minutes.map((m) => t[m])).toEqual(minutes.map((m) => String(100 + m)));
    expect(t.filter((x) => x !== 'E')).toHaveLength(minutes.length);
    // Eight writers on one resource: HAPI refuses stale If-Match versions (412/409).
    expect(conflicts).toBeGreaterThan(0);
  });

  it('correlation groups gather parts that arrive in separate messages', async () => {
    const run = uniqueId('run');
    const sys = await windowOf({ run, t: '2026-05-01T12:00:00Z', sys: 121 });
    const dia = await windowOf({ run, t: '2026-05-01T12:00:30Z', dia: 78 });
    expect(sys.id).toBe(dia.id);
    await merger.write(dia);
    await merger.write(sys);
    const stored = await read(sys.id!);
    // Components follow the template's order, whichever part came first.
    expect(
      stored.component?.map((c) => [c.code.coding?.[0]?.code, c.valueQuantity?.value]),
    ).toEqual([
      ['8480-6', 121],
      ['8462-4', 78],
    ]);
    expect(stored.effectivePeriod).toEqual({
      start: '2026-05-01T12:00:00.000Z',
      end: '2026-05-01T12:00:30.000Z',
    });
  });
});

describe('through the whole pipeline', () => {
  let h: Harness;
  let client: MqttClient;
  const dev = uniqueId('band');
  const pat = uniqueId('pband');

  beforeAll(async () => {
    h = await startHarness({ fhirUrl });
    const secret = await enrol(h.pipeline, dev, `Patient/${pat}`);
    client = await connectDevice(h.mqttUrl, dev, secret);
  });
  afterAll(async () => {
    client?.end(true);
    await h?.close();
  });

  it('step counts arriving out of order, one repeated, make one daily Observation in FHIR and ClickHouse', async () => {
    const topic = `devices/${dev}/telemetry`;
    // Recent device times (the broker refuses stale ones): minutes of one hour, 90 min ago.
    const hour = Math.floor((Date.now() - 90 * 60_000) / 3_600_000) * 3_600_000;
    const at = (m: number) => new Date(hour + m * 60_000).toISOString();
    const minute = (m: number, steps: number) => ({
      kind: 'step-counter',
      minutes: [{ start: at(m), steps }],
    });
    // 1. Minutes 10 and 30, then the late minute 2, then minute 30 again (a resend).
    await publish(client, topic, minute(10, 40));
    await publish(client, topic, minute(30, 75));
    await publish(client, topic, minute(2, 12));
    await publish(client, topic, minute(30, 75));
    // 2. FHIR holds one Observation for the day, with every minute in its slot.
    const day = Math.floor(hour / 86_400_000) * 86_400_000;
    const slot = (m: number) => (hour - day) / 60_000 + m;
    const obs = await waitFor(
      async () =>
        (await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${pat}` })).entry ?? [],
      (e) => {
        if (e.length !== 1) return false;
        const data = (
          (e[0]!.resource as unknown as Observation).valueSampledData?.data ?? ''
        ).split(' ');
        return data[slot(2)] === '12' && data[slot(10)] === '40' && data[slot(30)] === '75';
      },
      30_000,
      'one daily Observation with three minutes',
    );
    const o = obs[0]!.resource as unknown as Observation;
    expect(o.effectivePeriod).toEqual({
      start: new Date(day).toISOString(),
      end: new Date(day + 86_400_000 - 1).toISOString(),
    });
    // 3. ClickHouse ends with the same Observation id and the full data stream (latest version).
    const rows = await waitFor(
      () =>
        h.pipeline.analyticsStore!.queryRows<{ id: string; value_string: string }>(
          `SELECT id, value_string FROM observations FINAL WHERE patient_id = '${pat}'`,
        ),
      (r) =>
        r.length === 1 &&
        r[0]!.value_string.split(' ')[slot(2)] === '12' &&
        r[0]!.value_string.split(' ')[slot(30)] === '75',
      30_000,
      'the merged Observation in ClickHouse',
    );
    expect(rows[0]!.id).toBe(o.id);
  });
});
