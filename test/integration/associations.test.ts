/**
 * Every reading on the right patient (issue: device–patient associations over
 * time), against the real Redis, HAPI FHIR and ClickHouse engine, with mqtt.js
 * devices. Each test asserts reading by reading which patient a reading is
 * charted on, in FHIR and in ClickHouse, against the patient the test itself
 * scheduled — never a count alone.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DeadLetterStore } from '../../src/dlq/index.js';
import type { PipelineError } from '../../src/errors.js';
import type { DeadLetterJobData } from '../../src/queues.js';
import { chartedInClickHouse, chartedInFhir, misattributed } from '../support/attribution.js';
import {
  connectDevice,
  enrol,
  fhirSearch,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

const fhirUrl = inject('fhirUrl');
const ACTOR = { actor: 'charge.nurse', source: 'api' } as const;
const MIN = 60_000;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'iomt-assoc-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** mappings/ as shipped, or with the vitals heart-rate field renamed (a template bug). */
async function mappingsDir(name: string, broken: boolean): Promise<string> {
  const out = path.join(work, name);
  await cp(path.resolve('mappings'), out, { recursive: true });
  if (broken) {
    const file = path.join(out, 'device', 'vitals.json');
    await writeFile(file, (await readFile(file, 'utf8')).replaceAll('heartRate', 'heartrate'));
  }
  return out;
}

const hr = (at: number, bpm = 70) => ({ timestamp: new Date(at).toISOString(), heartRate: bpm });

async function deadLetters(h: Harness, deviceId: string): Promise<DeadLetterJobData[]> {
  const jobs = await h.pipeline.queues.deadLetter.getJobs(['waiting'], 0, -1);
  return jobs.map((j) => j.data).filter((d) => d.deviceId === deviceId);
}

function dlq(h: Harness): DeadLetterStore {
  return new DeadLetterStore(h.pipeline.queues, {
    associations: { reader: h.pipeline.associations, createPatients: false },
  });
}

/** Waits until HAPI holds exactly the expected readings of the device, then compares each. */
async function expectCharted(
  h: Harness | undefined,
  deviceId: string,
  expected: ReadonlyMap<number, string>,
): Promise<void> {
  const inFhir = await waitFor(
    () => chartedInFhir(fhirUrl, deviceId),
    (c) => c.length >= expected.size,
    60_000,
    `${expected.size} readings of ${deviceId} in HAPI`,
  );
  expect(misattributed(expected, inFhir)).toEqual([]);
  if (!h?.pipeline.analyticsStore) return;
  const store = h.pipeline.analyticsStore;
  const inClickHouse = await waitFor(
    () => chartedInClickHouse(store, deviceId),
    (c) => c.length >= expected.size,
    60_000,
    `${expected.size} readings of ${deviceId} in ClickHouse`,
  );
  expect(misattributed(expected, inClickHouse)).toEqual([]);
}

describe('a device reassigned mid-stream, with a FHIR outage, a stopped worker and store-and-forward readings', () => {
  let proxy: TcpProxy;
  let front: Harness; // broker + admin
  let back: Harness | undefined; // workers (own the embedded ClickHouse)
  let client: MqttClient;
  const prefix = uniqueId('mid');
  const device = uniqueId('monitor');
  const [A, B] = [uniqueId('pA'), uniqueId('pB')];

  // Both workers, one after the other, own the same embedded ClickHouse directory.
  const worker = () =>
    startHarness({
      fhirUrl: proxy.url,
      roles: ['worker'],
      overrides: {
        redis: { prefix },
        worker: { retryCapMs: 1000 },
        clickhouse: { dataPath: path.join(work, 'mid-chdb') },
      },
    });

  beforeAll(async () => {
    proxy = await startTcpProxy(new URL(fhirUrl));
    front = await startHarness({
      fhirUrl: proxy.url,
      roles: ['broker', 'admin'],
      overrides: { redis: { prefix } },
    });
    back = await worker();
  });
  afterAll(async () => {
    client?.end(true);
    await back?.close();
    await front?.close();
    await proxy?.close();
  });

  it('charts every reading on the patient associated at its device time, in FHIR and ClickHouse', async () => {
    const t0 = Date.now();
    const secret = await enrol(front.pipeline, device, A, { since: t0 - 60 * MIN });
    client = await connectDevice(front.mqttUrl, device, secret);
    const expected = new Map<number, string>();
    const send = async (at: number, patient: string) => {
      expected.set(at, patient);
      await publish(client, `devices/${device}/telemetry`, hr(at, 60 + expected.size));
    };

    // 1. Everything up: readings of patient A.
    await send(t0 - 50 * MIN, A);
    await send(t0 - 49 * MIN, A);
    await expectCharted(undefined, device, new Map([...expected]));
    // 2. The FHIR server goes down: readings are normalized, their writes wait.
    await proxy.down();
    await send(t0 - 40 * MIN, A);
    await send(t0 - 39 * MIN, A);
    // 3. The worker stops too: readings wait in the ingest queue.
    await back!.close();
    back = undefined;
    await send(t0 - 30 * MIN, A);
    await send(t0 - 29 * MIN, A);
    // 4. The device moves to patient B, now.
    const moved = await front.pipeline.devices.assign(device, B, {
      ...ACTOR,
      newPatient: true,
      note: 'bed 12 → bed 14',
    });
    const switched = moved.periods.at(-1)!.start;
    // 5. It publishes live readings (B's) and uploads stored ones taken before (A's),
    //    one of them a millisecond before the switch, one exactly at it.
    await send(switched + 1000, B);
    await send(switched + 2000, B);
    await send(switched - 5 * MIN, A);
    await send(switched - 1, A);
    await send(switched, B);
    // 6. A worker comes back while FHIR is still down; then FHIR comes back.
    back = await worker();
    await waitFor(
      () => back!.pipeline.queues.fhir.getJobCountByTypes('waiting', 'active', 'delayed'),
      (n) => n > 0,
      30_000,
      'FHIR jobs waiting for the server',
    );
    await proxy.up();
    // 7. Every reading is on the patient of its time, in FHIR and in ClickHouse.
    await expectCharted(back, device, expected);

    // 8. The history is readable from FHIR: the Device names B, and one
    //    DeviceUseStatement per period.
    const deviceRes = (await (
      await fetch(`${fhirUrl}/Device/dev-${device}`, { headers: { 'cache-control': 'no-cache' } })
    ).json()) as { patient?: { reference: string } };
    expect(deviceRes.patient?.reference).toBe(`Patient/${B}`);
    const statements = await waitFor(
      () => fhirSearch(fhirUrl, 'DeviceUseStatement', { device: `Device/dev-${device}` }),
      (b) => (b.entry?.length ?? 0) === 2,
      30_000,
      'two DeviceUseStatements',
    );
    const periods = statements
      .entry!.map(
        (e) =>
          e.resource as {
            subject: { reference: string };
            status: string;
            timingPeriod: { start: string; end?: string };
          },
      )
      .sort((a, b) => a.timingPeriod.start.localeCompare(b.timingPeriod.start))
      .map((s) => [
        s.subject.reference,
        s.status,
        Date.parse(s.timingPeriod.start),
        s.timingPeriod.end && Date.parse(s.timingPeriod.end),
      ]);
    const start = (await front.pipeline.associations.history(device)).find(
      (r) => r.kind === 'assign' && r.patientId === B,
    )!.at;
    expect(periods).toEqual([
      [`Patient/${A}`, 'completed', t0 - 60 * MIN, start],
      [`Patient/${B}`, 'active', start, undefined],
    ]);

    // 9. … and from ClickHouse.
    const rows = await waitFor(
      () =>
        back!.pipeline.analyticsStore!.queryRows<{
          patient_id: string;
          source: string;
          actor: string;
          open: number;
        }>(
          `SELECT patient_id, source, actor, valid_to IS NULL AS open FROM device_associations FINAL
           WHERE mqtt_device_id = '${device}' ORDER BY valid_from`,
        ),
      (r) => r.length === 2,
      30_000,
      'device_associations rows',
    );
    expect(rows.map((r) => [r.patient_id, Number(r.open)])).toEqual([
      [A, 0],
      [B, 1],
    ]);
    expect(rows[1]).toMatchObject({ source: 'api', actor: 'charge.nurse' });

    // 10. device_messages: each message's patient comes from attribution. A
    //     message's row is mirrored by its own outcome job, which may land after
    //     the Observations: wait for every message, then compare.
    const counted = async () => {
      const messages = await back!.pipeline.analyticsStore!.queryRows<{
        patient_id: string;
        n: string;
      }>(
        `SELECT patient_id, count() AS n FROM device_messages FINAL WHERE mqtt_device_id = '${device}'
         GROUP BY patient_id ORDER BY patient_id`,
      );
      return Object.fromEntries(messages.map((m) => [m.patient_id, Number(m.n)]));
    };
    const counts = await waitFor(
      counted,
      (c) => Object.values(c).reduce((sum, n) => sum + n, 0) >= expected.size,
      30_000,
      `${expected.size} device_messages rows`,
    );
    expect(counts).toEqual({
      [A]: [...expected.values()].filter((p) => p === A).length,
      [B]: [...expected.values()].filter((p) => p === B).length,
    });
  });
});

describe('replays, gaps and resends', () => {
  let dir: { broken: string; good: string };
  let h: Harness;
  const prefix = uniqueId('rep');

  // Each restart loads its folder as it is (no hot reload): the template fix is a deployment.
  const harness = (mappings: string) =>
    startHarness({
      fhirUrl,
      overrides: { redis: { prefix }, mappings: { dir: mappings, reload: 'off' } },
    });

  beforeAll(async () => {
    dir = { broken: await mappingsDir('broken', true), good: await mappingsDir('good', false) };
    h = await harness(dir.good);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('a dead letter from before a reassignment, replayed after it, lands on the earlier patient; so does one of a device removed and added again for a new patient', async () => {
    await h.close();
    h = await harness(dir.broken);
    const [moved, removed] = [uniqueId('moved'), uniqueId('removed')];
    const [A, B, C, N] = [uniqueId('pA'), uniqueId('pB'), uniqueId('pC'), uniqueId('pN')];
    const secretMoved = await enrol(h.pipeline, moved, A);
    const secretRemoved = await enrol(h.pipeline, removed, C);
    const taken = Date.now() - 5 * MIN;
    // 1. A template bug dead-letters both readings.
    for (const [id, secret] of [
      [moved, secretMoved],
      [removed, secretRemoved],
    ] as const) {
      const c = await connectDevice(h.mqttUrl, id, secret);
      await publish(c, `devices/${id}/telemetry`, hr(taken, 77));
      c.end(true);
      await waitFor(
        () => deadLetters(h, id),
        (d) => d.length === 1,
        30_000,
        `dead letter of ${id}`,
      );
    }
    // 2. One device moves to B; the other is removed at discharge and added again for N.
    await h.pipeline.devices.assign(moved, B, { ...ACTOR, newPatient: true });
    expect(await h.pipeline.devices.remove(removed, ACTOR)).toBe(true);
    await h.pipeline.devices.add(removed, { ...ACTOR, patient: N, newPatient: true });
    // 3. The template is fixed, the dead letters replayed.
    await h.close();
    h = await harness(dir.good);
    const replay = await dlq(h).replay({ code: 'TemplateNotMatched' });
    expect(replay.byStage.normalize).toBeGreaterThanOrEqual(2);
    // 4. Each reading is on the patient of its time.
    await expectCharted(h, moved, new Map([[taken, A]]));
    await expectCharted(h, removed, new Map([[taken, C]]));
    for (const p of [B, N])
      expect(
        (await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${p}` })).entry ?? [],
      ).toEqual([]);
  });

  it('a reading in an unassociated gap is held as NoPatientAssociated; once an association covers it, the replay puts it there', async () => {
    const device = uniqueId('gap');
    const [A, C] = [uniqueId('pA'), uniqueId('pC')];
    const secret = await enrol(h.pipeline, device, A);
    await h.pipeline.devices.unassign(device, { ...ACTOR, note: 'discharged' });
    const gapStart = (await h.pipeline.associations.history(device)).at(-1)!.at;
    // 1. A reading taken in the gap: no one's, held.
    const taken = Date.now();
    const client = await connectDevice(h.mqttUrl, device, secret);
    await publish(client, `devices/${device}/telemetry`, hr(taken, 88));
    client.end(true);
    const [letter] = await waitFor(
      () => deadLetters(h, device),
      (d) => d.length === 1,
      30_000,
      'the dead letter',
    );
    expect(letter).toMatchObject({ code: 'NoPatientAssociated', stage: 'normalize' });
    expect(letter!.reason).not.toContain(A);
    expect((await chartedInFhir(fhirUrl, device)).filter((c) => c.at === taken)).toEqual([]);
    const outcome = async () =>
      (
        await h.pipeline.analyticsStore!.queryRows<{
          outcome: string;
          error_code: string;
          patient_id: string;
        }>(
          `SELECT outcome, error_code, patient_id FROM device_messages FINAL WHERE mqtt_device_id = '${device}'`,
        )
      )[0];
    expect(await waitFor(outcome, (o) => o !== undefined, 30_000, 'the message row')).toEqual({
      outcome: 'dead_lettered',
      error_code: 'NoPatientAssociated',
      patient_id: '',
    });
    // 2. The operator records who had the device then (filling the gap), and replays.
    await h.pipeline.devices.assign(device, C, {
      ...ACTOR,
      at: gapStart,
      newPatient: true,
      note: 'late scan',
    });
    expect((await dlq(h).replay({ deviceId: device })).replayed).toBe(1);
    await expectCharted(h, device, new Map([[taken, C]]));
    expect(
      await waitFor(
        outcome,
        (o) => o?.outcome === 'processed',
        30_000,
        'the message row, processed',
      ),
    ).toMatchObject({
      error_code: '',
      patient_id: C,
    });
  });

  it('a reading resent after a reassignment leaves one Observation, on the patient of its time', async () => {
    const device = uniqueId('resend');
    const [A, B] = [uniqueId('pA'), uniqueId('pB')];
    const secret = await enrol(h.pipeline, device, A);
    const client = await connectDevice(h.mqttUrl, device, secret);
    const taken = Date.now() - 10 * MIN;
    await publish(client, `devices/${device}/telemetry`, hr(taken, 64));
    await expectCharted(h, device, new Map([[taken, A]]));
    await h.pipeline.devices.assign(device, B, { ...ACTOR, newPatient: true });
    await publish(client, `devices/${device}/telemetry`, hr(taken, 64));
    client.end(true);
    // Both deliveries were processed…
    await waitFor(
      () =>
        h.pipeline.analyticsStore!.queryRows<{ n: string }>(
          `SELECT count() AS n FROM device_messages FINAL WHERE mqtt_device_id = '${device}' AND outcome = 'processed'`,
        ),
      (r) => Number(r[0]?.n) === 2,
      30_000,
      'both deliveries processed',
    );
    // …and there is one Observation, on A.
    await expectCharted(h, device, new Map([[taken, A]]));
  });

  it('a new reading right after a reassignment goes to the new patient (no cache of the old one)', async () => {
    const device = uniqueId('cache');
    const [A, B] = [uniqueId('pA'), uniqueId('pB')];
    const secret = await enrol(h.pipeline, device, A);
    const client = await connectDevice(h.mqttUrl, device, secret);
    const before = Date.now() - MIN;
    await publish(client, `devices/${device}/telemetry`, hr(before, 70));
    await expectCharted(h, device, new Map([[before, A]]));
    await h.pipeline.devices.assign(device, B, { ...ACTOR, newPatient: true });
    const after = Date.now();
    await publish(client, `devices/${device}/telemetry`, hr(after, 71));
    client.end(true);
    await expectCharted(
      h,
      device,
      new Map([
        [before, A],
        [after, B],
      ]),
    );
  });
});

describe('never guess', () => {
  let h: Harness;

  beforeAll(async () => {
    // The vitals template, strict: the payload must name the device and the patient.
    const dir = path.join(work, 'strict');
    await cp(path.resolve('mappings'), dir, { recursive: true });
    const file = path.join(dir, 'device', 'vitals.json');
    const collection = JSON.parse(await readFile(file, 'utf8')) as {
      template: { template: Record<string, unknown> }[];
    };
    for (const t of collection.template) {
      t.template.deviceIdExpression = 'deviceId';
      t.template.patientIdExpression = 'patientId';
    }
    await writeFile(file, JSON.stringify(collection, null, 2));
    // Loaded as it is: these templates are strict on purpose, and their fixtures would fail.
    h = await startHarness({ fhirUrl, overrides: { mappings: { dir, reload: 'off' } } });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('a device or patient expression that yields nothing, or a gateway reading without its device, is a dead letter with its code, and nothing reaches FHIR', async () => {
    const [device, hub, child] = [uniqueId('dev'), uniqueId('hub'), uniqueId('scale')];
    const [P, Q] = [uniqueId('pP'), uniqueId('pQ')];
    const secret = await enrol(h.pipeline, device, P);
    const hubSecret = await enrol(h.pipeline, hub, undefined, { gateway: true });
    await enrol(h.pipeline, child, Q);
    await h.pipeline.devices.link(hub, child, { ...ACTOR, at: Date.now() - 60 * MIN });
    const at = Date.now() - MIN;
    const d = await connectDevice(h.mqttUrl, device, secret);
    const g = await connectDevice(h.mqttUrl, hub, hubSecret);
    await publish(d, `devices/${device}/telemetry`, {
      timestamp: new Date(at).toISOString(),
      heartRate: 70,
      patientId: P,
    });
    await publish(d, `devices/${device}/telemetry`, {
      timestamp: new Date(at + 1).toISOString(),
      heartRate: 71,
      deviceId: device,
    });
    // The gateway relays a reading that names no device, and one that names itself.
    await publish(g, `devices/${hub}/telemetry`, {
      kind: 'gateway-batch',
      readings: [{ type: 'weight', value: 70.1, unit: 'kg', time: new Date(at + 2).toISOString() }],
    });
    await publish(g, `devices/${hub}/telemetry`, {
      timestamp: new Date(at + 3).toISOString(),
      heartRate: 72,
      deviceId: hub,
      patientId: Q,
    });
    d.end(true);
    g.end(true);
    const codes = async (id: string) => (await deadLetters(h, id)).map((l) => l.code).sort();
    expect(
      await waitFor(
        () => codes(device),
        (c) => c.length === 2,
        30_000,
        'the device’s dead letters',
      ),
    ).toEqual(['DeviceIdMissing', 'PatientIdMissing']);
    expect(
      await waitFor(
        () => codes(hub),
        (c) => c.length === 2,
        30_000,
        'the gateway’s dead letters',
      ),
    ).toEqual(['DeviceIdMissing', 'GatewayChildMissing']);
    for (const p of [P, Q])
      expect(
        (await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${p}` })).entry ?? [],
      ).toEqual([]);
  });

  it('binding a device to a Patient the FHIR server does not have is refused, and no Patient appears', async () => {
    const device = uniqueId('typo');
    await enrol(h.pipeline, device, undefined);
    const typo = uniqueId('p-typo');
    const refused = await h.pipeline.devices
      .assign(device, `Patient/${typo}`, ACTOR)
      .then(() => 'accepted')
      .catch((err: unknown) => (err as PipelineError).code);
    expect(refused).toBe('PatientNotFound');
    expect((await h.pipeline.devices.history(device)).periods).toEqual([]);
    expect((await fetch(`${fhirUrl}/Patient/${typo}`)).status).toBe(404);
    // Said to be new, it is accepted and the pipeline may create it.
    await h.pipeline.devices.assign(device, `Patient/${typo}`, { ...ACTOR, newPatient: true });
    expect((await h.pipeline.devices.history(device)).currentPatient).toBe(typo);
  });
});

describe('Lookup mode: FHIR names the patient', () => {
  let h: Harness;
  const SYSTEM = `urn:iomt:device:${uniqueId('lk')}`;

  async function put(resource: { resourceType: string; id: string } & Record<string, unknown>) {
    const res = await fetch(`${fhirUrl}/${resource.resourceType}/${resource.id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(resource),
    });
    expect(res.ok).toBe(true);
  }

  beforeAll(async () => {
    h = await startHarness({
      fhirUrl,
      overrides: { fhir: { identityResolution: 'Lookup', deviceIdentifierSystem: SYSTEM } },
    });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('replaying a FHIR-stage dead letter does not write Device.patient back to the old patient', async () => {
    const device = uniqueId('lkdev');
    const [P1, P2] = [uniqueId('p1'), uniqueId('p2')];
    await put({ resourceType: 'Patient', id: P1 });
    await put({ resourceType: 'Patient', id: P2 });
    const fhirDevice = {
      resourceType: 'Device',
      id: `fhir-${device}`,
      identifier: [{ system: SYSTEM, value: device }],
    };
    await put({ ...fhirDevice, patient: { reference: `Patient/${P1}` } });
    const { secret } = await h.pipeline.devices.add(device, ACTOR);
    const client = await connectDevice(h.mqttUrl, device, secret);
    // 1. A first reading: the worker learns Device → P1 (and keeps it briefly).
    const first = Date.now() - 2 * MIN;
    await publish(client, `devices/${device}/telemetry`, hr(first));
    const [obs] = await waitFor(
      async () =>
        (await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${P1}` })).entry ?? [],
      (e) => e.length === 1,
      30_000,
      'the first reading',
    );
    // 2. The hospital moves the device to P2 and removes P1's record; a reading the
    //    worker still attributes to P1 is refused by the server: a FHIR-stage dead letter.
    await put({ ...fhirDevice, patient: { reference: `Patient/${P2}` } });
    expect(
      (await fetch(`${fhirUrl}/Observation/${String(obs!.resource.id)}`, { method: 'DELETE' })).ok,
    ).toBe(true);
    expect((await fetch(`${fhirUrl}/Patient/${P1}`, { method: 'DELETE' })).ok).toBe(true);
    await publish(client, `devices/${device}/telemetry`, hr(Date.now() - MIN));
    client.end(true);
    await waitFor(
      async () => (await deadLetters(h, device)).filter((l) => l.stage === 'fhir'),
      (l) => l.length === 1,
      30_000,
      'the FHIR-stage dead letter',
    );
    // 3. P1 is restored and the dead letter replayed: the reading is written…
    await put({ resourceType: 'Patient', id: P1 });
    const result = await new DeadLetterStore(h.pipeline.queues, {}).replay({ deviceId: device });
    expect(result.byStage.fhir).toBe(1);
    await waitFor(
      async () =>
        (await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${P1}` })).entry ?? [],
      (e) => e.length === 1,
      30_000,
      'the replayed reading',
    );
    // 4. …and the Device still names P2: a replay reads associations, never writes them.
    const stored = (await (
      await fetch(`${fhirUrl}/Device/fhir-${device}`, { headers: { 'cache-control': 'no-cache' } })
    ).json()) as { patient?: { reference: string } };
    expect(stored.patient?.reference).toBe(`Patient/${P2}`);
  });
});
