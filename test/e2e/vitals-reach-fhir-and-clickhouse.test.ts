/**
 * The vertical slice, end to end with real components: an MQTT client publishes
 * vitals for a registered device; the Observations appear in a real HAPI FHIR
 * server and the matching rows in the real ClickHouse engine, with the same ids.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
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

const run = promisify(execFile);
const fhirUrl = inject('fhirUrl');

interface ObservationJson {
  id: string;
  identifier: { system: string; value: string }[];
  code: { coding: { system: string; code: string }[] };
  subject: { reference: string };
  device: { reference: string };
  effectiveDateTime: string;
  valueQuantity?: { value: number; unit: string; system: string; code: string };
  component?: {
    code: { coding: { system: string; code: string }[] };
    valueQuantity: { value: number; system: string; code: string };
  }[];
  meta: { tag: { system: string; code: string }[] };
}

// Readings from the last hour (the pipeline refuses device clocks far in the
// future), on whole minutes so that each test's readings are distinct.
const base = Math.floor(Date.now() / 60_000) * 60_000 - 60 * 60_000;
const minute = (n: number) => new Date(base + n * 60_000).toISOString();

let h: Harness;
let deviceId: string;
let patientId: string;
let secret: string;
let client: MqttClient;

async function observationsOf(patient: string): Promise<ObservationJson[]> {
  const bundle = await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${patient}` });
  return (bundle.entry ?? []).map((e) => e.resource as unknown as ObservationJson);
}

function loinc(o: ObservationJson): string | undefined {
  return o.code.coding.find((c) => c.system === 'http://loinc.org')?.code;
}

async function clickhouseRows(patient: string) {
  return h.pipeline.analyticsStore!.queryRows<{
    id: string;
    code: string;
    value_num: number | null;
    device_id: string;
    template_version: string;
  }>(
    `SELECT id, code, value_num, device_id, template_version FROM observations FINAL WHERE patient_id = '${patient}' ORDER BY id`,
  );
}

async function mirroredRows(): Promise<number> {
  return (await h.pipeline.metrics.analyticsRows.get()).values[0]?.value ?? 0;
}

beforeAll(async () => {
  h = await startHarness({ fhirUrl });
  deviceId = uniqueId('monitor');
  patientId = uniqueId('patient');
  secret = await enrol(h.pipeline, deviceId, `Patient/${patientId}`);
  client = await connectDevice(h.mqttUrl, deviceId, secret);
});

afterAll(async () => {
  client?.end(true);
  await h?.close();
});

describe('vital signs published over MQTT', () => {
  it('reach HAPI as coded Observations and ClickHouse with the same ids', async () => {
    // 1. Publish heart rate, SpO2 and blood pressure in one QoS 1 message.
    const at = minute(0);
    await publish(client, `devices/${deviceId}/telemetry`, {
      timestamp: at,
      heartRate: 72,
      spo2: 97.5,
      bloodPressure: { systolic: 121, diastolic: 79 },
    });

    // 2. Within 10 s, three Observations for the patient are in HAPI.
    const found = await waitFor(
      () => observationsOf(patientId),
      (l) => l.length >= 3,
      10_000,
      'Observations in HAPI',
    );
    expect(found).toHaveLength(3);
    const byCode = new Map(found.map((o) => [loinc(o), o]));

    const hr = byCode.get('8867-4')!;
    expect(hr.valueQuantity).toEqual({
      value: 72,
      unit: 'beats/minute',
      system: 'http://unitsofmeasure.org',
      code: '/min',
    });
    // A monitor's heart rate of unknown source: LOINC's generic code only (issue 10).
    expect(hr.code.coding.map((c) => c.code)).toEqual(['8867-4']);

    const spo2 = byCode.get('59408-5')!;
    expect(spo2.valueQuantity).toEqual({
      value: 97.5,
      unit: '%',
      system: 'http://unitsofmeasure.org',
      code: '%',
    });

    const bp = byCode.get('85354-9')!;
    expect(bp.valueQuantity).toBeUndefined();
    const comp = new Map(bp.component!.map((c) => [c.code.coding[0]!.code, c.valueQuantity]));
    expect(comp.get('8480-6')).toMatchObject({
      value: 121,
      system: 'http://unitsofmeasure.org',
      code: 'mm[Hg]',
    });
    expect(comp.get('8462-4')).toMatchObject({
      value: 79,
      system: 'http://unitsofmeasure.org',
      code: 'mm[Hg]',
    });

    for (const o of found) {
      expect(o.subject.reference).toBe(`Patient/${patientId}`);
      expect(o.device.reference).toBe(`Device/dev-${deviceId}`);
      expect(new Date(o.effectiveDateTime).toISOString()).toBe(at);
      expect(o.meta.tag).toContainEqual(expect.objectContaining({ system: 'urn:iomt:template' }));
      // 3. Each is found by its identifier too.
      const ident = o.identifier[0]!;
      const byIdentifier = await fhirSearch(fhirUrl, 'Observation', {
        identifier: `${ident.system}|${ident.value}`,
      });
      expect(byIdentifier.entry?.map((e) => e.resource.id)).toEqual([o.id]);
    }

    // 4. The Device and Patient exist, the Device names its patient.
    const device = (await (await fetch(`${fhirUrl}/Device/dev-${deviceId}`)).json()) as {
      patient: { reference: string };
    };
    expect(device.patient.reference).toBe(`Patient/${patientId}`);

    // 5. ClickHouse holds the same ids, codes and values.
    const rows = await waitFor(
      () => clickhouseRows(patientId),
      (r) => r.length >= 3,
      10_000,
      'rows in ClickHouse',
    );
    expect(rows.map((r) => r.id).sort()).toEqual(found.map((o) => o.id).sort());
    const hrRow = rows.find((r) => r.id === hr.id)!;
    expect(hrRow).toMatchObject({ code: '8867-4', value_num: 72, device_id: `dev-${deviceId}` });
    expect(hrRow.template_version).toMatch(/^[0-9a-f]{12}$/);
  });

  it('accepts the same from Debian mosquitto_pub, a second independent client', async () => {
    const at = minute(1);
    const port = new URL(h.mqttUrl).port;
    await run('mosquitto_pub', [
      '-h',
      '127.0.0.1',
      '-p',
      port,
      '-u',
      deviceId,
      '-P',
      secret,
      '-i',
      uniqueId('mp'),
      '-q',
      '1',
      '-t',
      `devices/${deviceId}/telemetry`,
      '-m',
      JSON.stringify({ timestamp: at, heartRate: 88, respiratoryRate: 17 }),
    ]);
    const found = await waitFor(
      () => observationsOf(patientId),
      (l) => l.filter((o) => new Date(o.effectiveDateTime).toISOString() === at).length >= 2,
      10_000,
      'mosquitto_pub Observations in HAPI',
    );
    const fresh = found.filter((o) => new Date(o.effectiveDateTime).toISOString() === at);
    expect(fresh.map(loinc).sort()).toEqual(['8867-4', '9279-1']);
    expect(fresh.find((o) => loinc(o) === '9279-1')!.valueQuantity).toMatchObject({
      value: 17,
      code: '/min',
    });
    const rows = await waitFor(
      () => clickhouseRows(patientId),
      (r) => r.length >= 5,
      10_000,
      'mosquitto_pub rows in ClickHouse',
    );
    expect(rows.map((r) => r.id)).toEqual(expect.arrayContaining(fresh.map((o) => o.id)));
  });

  it('keeps one Observation and one ClickHouse row when the same message is published twice', async () => {
    // The counter moves after a batch's device_messages, once its rows are already
    // readable: let the earlier tests' batches finish counting before taking it.
    const mirroredBefore = await waitFor(
      async () => ({
        pending: await h.pipeline.queues.analytics.getJobCountByTypes(
          'active',
          'waiting',
          'delayed',
        ),
        rows: await mirroredRows(),
      }),
      (s) => s.pending === 0,
      10_000,
      'earlier mirror batches counted',
    ).then((s) => s.rows);
    const message = { timestamp: minute(2), heartRate: 64 };
    await publish(client, `devices/${deviceId}/telemetry`, message);
    await publish(client, `devices/${deviceId}/telemetry`, message);
    // Both copies were mirrored (the counter counts inserts, duplicates included)…
    await waitFor(mirroredRows, (n) => n >= mirroredBefore + 2, 10_000, 'both copies mirrored');
    const found = await waitFor(
      () => observationsOf(patientId),
      (l) => l.some((o) => new Date(o.effectiveDateTime).toISOString() === message.timestamp),
      10_000,
      'the reading in HAPI',
    );
    const dupes = found.filter(
      (o) => new Date(o.effectiveDateTime).toISOString() === message.timestamp,
    );
    expect(dupes).toHaveLength(1);
    const ident = dupes[0]!.identifier[0]!;
    const byIdentifier = await fhirSearch(fhirUrl, 'Observation', {
      identifier: `${ident.system}|${ident.value}`,
    });
    expect(byIdentifier.entry).toHaveLength(1);
    // …and ClickHouse keeps one row for it (the counter may still have been
    // counting an earlier test's rows when it was read: wait for this row).
    const rows = await waitFor(
      () => clickhouseRows(patientId),
      (r) => r.some((row) => row.id === dupes[0]!.id),
      10_000,
      'the reading in ClickHouse',
    );
    const count = await h.pipeline.analyticsStore!.queryRows<{ n: string | number }>(
      `SELECT count() AS n FROM observations FINAL WHERE id = '${dupes[0]!.id}'`,
    );
    expect(Number(count[0]!.n)).toBe(1);
    expect(rows.filter((r) => r.id === dupes[0]!.id)).toHaveLength(1);
  });
});
