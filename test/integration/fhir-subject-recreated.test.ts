/**
 * The FHIR writer's subject cache (src/fhir/subject-cache.ts, workers/fhir-subjects.ts)
 * against the real HAPI: a Device or Patient the pipeline created and that was
 * deleted on the server afterwards is created again when the next reading
 * references it — without a restart and well within the cache's lifetime (600 s)
 * — while a Patient the pipeline may not create stays deleted and the reading is
 * dead-lettered as PatientNotFound.
 *
 * HAPI refuses to delete a resource others reference, so each test deletes, as an
 * operator would, the device's Observations and DeviceUseStatements first.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  connectDevice,
  enrol,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';
import { chartedInFhir } from '../support/attribution.js';

const fhirUrl = inject('fhirUrl');

let h: Harness;
const clients: MqttClient[] = [];

beforeAll(async () => {
  h = await startHarness({
    fhirUrl,
    roles: ['broker', 'worker'],
    overrides: {
      worker: { stages: ['normalize', 'fhir'], retryCapMs: 1000 },
      fhir: { subjectCacheTtlS: 600, createPatients: false },
    },
  });
});
afterAll(async () => {
  for (const c of clients) c.end(true);
  await h?.close();
});

async function fhir(method: string, path: string, body?: unknown): Promise<number> {
  const res = await fetch(`${fhirUrl}/${path}`, {
    method,
    headers: { 'content-type': 'application/fhir+json', 'cache-control': 'no-cache' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  await res.arrayBuffer();
  return res.status;
}

async function expectDeleted(path: string): Promise<void> {
  expect([200, 204], `DELETE ${path}`).toContain(await fhir('DELETE', path));
}

/** What an operator deletes to remove a device's FHIR Device: its references first. */
async function deleteDevice(deviceId: string): Promise<void> {
  await expectDeleted(`Observation?device=Device/dev-${deviceId}`);
  await expectDeleted(`DeviceUseStatement?device=Device/dev-${deviceId}`);
  await expectDeleted(`Device/dev-${deviceId}`);
  expect(await fhir('GET', `Device/dev-${deviceId}`)).toBe(410);
}

const reading = (at: number, bpm: number) => ({
  timestamp: new Date(at).toISOString(),
  heartRate: bpm,
});

async function device(deviceId: string, secret: string): Promise<MqttClient> {
  const c = await connectDevice(h.mqttUrl, deviceId, secret);
  clients.push(c);
  return c;
}

/** Waits until HAPI holds `n` Observations of the device. */
function charted(deviceId: string, n: number) {
  return waitFor(
    () => chartedInFhir(fhirUrl, deviceId),
    (c) => c.length >= n,
    60_000,
    `${n} Observation(s) of ${deviceId} in HAPI`,
  );
}

describe('a subject deleted on the FHIR server', () => {
  it('a deleted Device is created again by the next reading, which lands on it', async () => {
    const deviceId = uniqueId('subj-dev');
    const patient = uniqueId('subj-pat');
    const c = await device(deviceId, await enrol(h.pipeline, deviceId, patient));
    const t0 = Date.now() - 60_000;

    // 1. A reading: the pipeline creates Patient and Device, and remembers both.
    await publish(c, `devices/${deviceId}/telemetry`, reading(t0, 71));
    await charted(deviceId, 1);
    // 2. The Device is deleted on the server (its references first).
    await deleteDevice(deviceId);
    // 3. The next reading lands, on a Device that exists again.
    await publish(c, `devices/${deviceId}/telemetry`, reading(t0 + 1000, 72));
    const [obs] = await charted(deviceId, 1);
    expect(obs!.at).toBe(t0 + 1000);
    expect(obs!.patientId).toBe(patient);
    expect(await fhir('GET', `Device/dev-${deviceId}`)).toBe(200);
  });

  it('a deleted Patient the association marked new is created again, with its Device', async () => {
    const deviceId = uniqueId('subj-dev');
    const patient = uniqueId('subj-pat');
    const c = await device(deviceId, await enrol(h.pipeline, deviceId, patient));
    const t0 = Date.now() - 60_000;

    await publish(c, `devices/${deviceId}/telemetry`, reading(t0, 81));
    await charted(deviceId, 1);
    // The Patient goes, and with it everything that references it: the Device too.
    await deleteDevice(deviceId);
    await expectDeleted(`Patient/${patient}`);
    expect(await fhir('GET', `Patient/${patient}`)).toBe(410);

    await publish(c, `devices/${deviceId}/telemetry`, reading(t0 + 1000, 82));
    const [obs] = await charted(deviceId, 1);
    expect(obs!.at).toBe(t0 + 1000);
    expect(obs!.patientId).toBe(patient);
    expect(await fhir('GET', `Patient/${patient}`)).toBe(200);
    expect(await fhir('GET', `Device/dev-${deviceId}`)).toBe(200);
  });

  it('a deleted Patient the pipeline may not create stays deleted: PatientNotFound, never invented', async () => {
    const deviceId = uniqueId('subj-dev');
    const patient = uniqueId('subj-pat');
    // An existing Patient, associated as such (not new; FHIR_CREATE_PATIENTS is off).
    expect(await fhir('PUT', `Patient/${patient}`, { resourceType: 'Patient', id: patient })).toBe(
      201,
    );
    const { secret } = await h.pipeline.devices.add(deviceId, {
      actor: 'test',
      source: 'api',
      patient,
      newPatient: false,
      at: Date.now() - 3600_000,
    });
    const c = await device(deviceId, secret);
    const t0 = Date.now() - 60_000;

    await publish(c, `devices/${deviceId}/telemetry`, reading(t0, 91));
    await charted(deviceId, 1);
    await deleteDevice(deviceId);
    await expectDeleted(`Patient/${patient}`);

    await publish(c, `devices/${deviceId}/telemetry`, reading(t0 + 1000, 92));
    const dead = await waitFor(
      async () =>
        (await h.pipeline.queues.deadLetter.getJobs(['waiting'], 0, -1))
          .map((j) => j.data)
          .filter((d) => d.deviceId === deviceId),
      (d) => d.length > 0,
      60_000,
      `a dead letter of ${deviceId}`,
    );
    expect(dead.map((d) => d.code)).toContain('PatientNotFound');
    expect(await fhir('GET', `Patient/${patient}`)).toBe(410);
    expect(await chartedInFhir(fhirUrl, deviceId)).toEqual([]);
  });
});
