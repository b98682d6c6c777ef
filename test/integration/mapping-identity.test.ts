/**
 * Identity resolution modes (MedTech semantics) against a real HAPI FHIR and
 * Redis: Create (registry bindings, gateways linked in Redis), Lookup (the FHIR
 * Device must exist and name its Patient) and LookupWithEncounter, with each
 * error code; and Lookup through the whole pipeline.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { GatewayLinks } from '../../src/devices/gateways.js';
import { DeviceRegistry } from '../../src/devices/registry.js';
import type { PipelineError } from '../../src/errors.js';
import { createIdentityService, type IdentityMode } from '../../src/fhir/identity.js';
import { createRedis } from '../../src/queue-runtime.js';
import {
  connectDevice,
  fhirSearch,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';

const fhirUrl = inject('fhirUrl');
const SYSTEM = `urn:iomt:device:${uniqueId('sys')}`;

async function put(
  resource: { resourceType: string; id: string } & Record<string, unknown>,
): Promise<void> {
  const res = await fetch(`${fhirUrl}/${resource.resourceType}/${resource.id}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/fhir+json' },
    body: JSON.stringify(resource),
  });
  if (!res.ok)
    throw new Error(
      `PUT ${resource.resourceType}/${resource.id}: ${res.status} ${await res.text()}`,
    );
}

const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const prefix = uniqueId('idt');
const registry = new DeviceRegistry(redis, prefix);
const gateways = new GatewayLinks(redis, prefix);

function service(mode: IdentityMode) {
  return createIdentityService({
    mode,
    fhirUrl,
    timeoutMs: 30_000,
    deviceIdentifierSystem: SYSTEM,
    device: (id) => registry.get(id),
    gateways,
    cacheMs: 0,
  });
}

async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as PipelineError).code;
  }
  throw new Error('expected a failure');
}

// FHIR: Patient pa with Device da (identifier → da), a Device without a patient,
// and an Encounter with an identifier.
const pa = uniqueId('pa');
const da = uniqueId('da');
const orphan = uniqueId('orphan');
const enc = uniqueId('enc');
const gw = uniqueId('gw');

beforeAll(async () => {
  await put({ resourceType: 'Patient', id: pa });
  await put({
    resourceType: 'Device',
    id: `fhir-${da}`,
    identifier: [{ system: SYSTEM, value: da }],
    patient: { reference: `Patient/${pa}` },
  });
  await put({
    resourceType: 'Device',
    id: `fhir-${orphan}`,
    identifier: [{ system: SYSTEM, value: orphan }],
  });
  await put({
    resourceType: 'Device',
    id: `fhir-${gw}`,
    identifier: [{ system: SYSTEM, value: gw }],
  });
  await put({
    resourceType: 'Encounter',
    id: `e-${enc}`,
    status: 'in-progress',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' },
    identifier: [{ system: 'urn:test:encounter', value: enc }],
    subject: { reference: `Patient/${pa}` },
  });
  await registry.add(gw, 'Patient/p-gw');
  await registry.add(da, `Patient/${pa}`);
});

afterAll(() => {
  redis.disconnect();
});

describe('Create', () => {
  it('a device speaks for itself: its registry binding is the patient', async () => {
    const who = service('Create').forMessage((await registry.get(da))!);
    const r = await who.resolve({ authenticatedDeviceId: da, deviceId: da });
    expect(r).toEqual({ patientId: pa, deviceResourceId: `dev-${da}` });
    expect(who.subjects().map((s) => `${s.resourceType}/${s.id}`)).toEqual([
      `Patient/${pa}`,
      `Device/dev-${da}`,
    ]);
  });

  it('a gateway speaks for the devices linked to it, and for no others', async () => {
    const who = service('Create').forMessage((await registry.get(gw))!);
    const claim = { authenticatedDeviceId: gw, deviceId: da };
    expect(await failure(Promise.resolve(who.resolve(claim)))).toBe('DeviceSpoofing');
    await gateways.link(registry, gw, da);
    expect(await who.resolve(claim)).toEqual({
      patientId: pa,
      deviceResourceId: `dev-${da}`,
      gatewayId: gw,
      gatewayResourceId: `dev-${gw}`,
    });
    // The gateway's Device is created too (Observation.extension references it).
    expect(who.subjects().map((s) => `${s.resourceType}/${s.id}`)).toContain(`Device/dev-${gw}`);
  });

  it('a payload naming another patient is refused', async () => {
    const who = service('Create').forMessage((await registry.get(da))!);
    expect(
      await failure(
        Promise.resolve(
          who.resolve({ authenticatedDeviceId: da, deviceId: da, claimedPatientId: 'x' }),
        ),
      ),
    ).toBe('DeviceSpoofing');
  });

  it('an encounter the reading names is linked by identifier, or refused', async () => {
    const who = service('Create').forMessage((await registry.get(da))!);
    const r = await who.resolve({ authenticatedDeviceId: da, deviceId: da, encounterId: enc });
    expect(r.encounterResourceId).toBe(`e-${enc}`);
    expect(
      await failure(
        Promise.resolve(
          who.resolve({ authenticatedDeviceId: da, deviceId: da, encounterId: 'nope' }),
        ),
      ),
    ).toBe('EncounterNotFound');
  });
});

describe('Lookup', () => {
  const record = { deviceId: da, patientId: 'registry-patient-ignored', createdAt: '' };

  it('the FHIR Device with the identifier names the patient; nothing is created', async () => {
    const who = service('Lookup').forMessage(record);
    expect(await who.resolve({ authenticatedDeviceId: da, deviceId: da })).toEqual({
      patientId: pa,
      deviceResourceId: `fhir-${da}`,
    });
    expect(who.subjects()).toEqual([]);
  });

  it('DeviceNotFound, PatientNotFound, PatientDeviceMismatch', async () => {
    const who = service('Lookup').forMessage(record);
    const ghost = uniqueId('ghost');
    expect(
      await failure(
        Promise.resolve(who.resolve({ authenticatedDeviceId: ghost, deviceId: ghost })),
      ),
    ).toBe('DeviceNotFound');
    expect(
      await failure(
        Promise.resolve(who.resolve({ authenticatedDeviceId: orphan, deviceId: orphan })),
      ),
    ).toBe('PatientNotFound');
    expect(
      await failure(
        Promise.resolve(
          who.resolve({ authenticatedDeviceId: da, deviceId: da, claimedPatientId: 'someone' }),
        ),
      ),
    ).toBe('PatientDeviceMismatch');
    // The patient the Device names may be given: it is the same one.
    expect(
      (await who.resolve({ authenticatedDeviceId: da, deviceId: da, claimedPatientId: pa }))
        .patientId,
    ).toBe(pa);
  });
});

describe('LookupWithEncounter', () => {
  it('needs an Encounter carrying the identifier the reading names', async () => {
    const who = service('LookupWithEncounter').forMessage({
      deviceId: da,
      patientId: pa,
      createdAt: '',
    });
    expect(
      (await who.resolve({ authenticatedDeviceId: da, deviceId: da, encounterId: enc }))
        .encounterResourceId,
    ).toBe(`e-${enc}`);
    expect(
      await failure(Promise.resolve(who.resolve({ authenticatedDeviceId: da, deviceId: da }))),
    ).toBe('EncounterNotFound');
    expect(
      await failure(
        Promise.resolve(
          who.resolve({ authenticatedDeviceId: da, deviceId: da, encounterId: uniqueId('x') }),
        ),
      ),
    ).toBe('EncounterNotFound');
  });
});

describe('Lookup through the pipeline', () => {
  let h: Harness;
  let client: MqttClient;
  let stranger: MqttClient;
  const monitor = uniqueId('mon');
  const unknownInFhir = uniqueId('mon');
  const pl = uniqueId('pl');

  beforeAll(async () => {
    await put({ resourceType: 'Patient', id: pl });
    await put({
      resourceType: 'Device',
      id: `fhir-${monitor}`,
      identifier: [{ system: SYSTEM, value: monitor }],
      patient: { reference: `Patient/${pl}` },
    });
    h = await startHarness({
      fhirUrl,
      overrides: { fhir: { identityResolution: 'Lookup', deviceIdentifierSystem: SYSTEM } },
    });
    // The registry still admits the device (CONNECT); its binding is not used in Lookup mode.
    const a = await h.pipeline.registry.add(monitor, 'Patient/registry-binding');
    const b = await h.pipeline.registry.add(unknownInFhir, 'Patient/registry-binding');
    client = await connectDevice(h.mqttUrl, monitor, a.secret);
    stranger = await connectDevice(h.mqttUrl, unknownInFhir, b.secret);
  });
  afterAll(async () => {
    client?.end(true);
    stranger?.end(true);
    await h?.close();
  });

  it('Observations reference the Device and Patient found in FHIR; an unknown device is dead-lettered', async () => {
    const timestamp = new Date(Date.now() - 60_000).toISOString();
    await publish(client, `devices/${monitor}/telemetry`, { timestamp, heartRate: 64 });
    await publish(stranger, `devices/${unknownInFhir}/telemetry`, { timestamp, heartRate: 65 });
    const found = await waitFor(
      async () =>
        (await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${pl}` })).entry ?? [],
      (e) => e.length === 1,
      30_000,
      'the Observation of the looked-up patient',
    );
    expect((found[0]!.resource as { device: { reference: string } }).device.reference).toBe(
      `Device/fhir-${monitor}`,
    );
    const dead = await waitFor(
      () => h.pipeline.queues.deadLetter.getJobs(['waiting', 'completed', 'delayed', 'active']),
      (jobs) => jobs.some((j) => j.data.deviceId === unknownInFhir),
      30_000,
      'the dead letter of the device FHIR does not know',
    );
    expect(dead.find((j) => j.data.deviceId === unknownInFhir)!.data.code).toBe('DeviceNotFound');
  });
});

describe('a gateway through the pipeline (Create)', () => {
  let h: Harness;
  let client: MqttClient;
  const hub = uniqueId('hub');
  const scale = uniqueId('scale');
  const oxi = uniqueId('oxi');
  const ps = uniqueId('ps');
  const po = uniqueId('po');

  beforeAll(async () => {
    h = await startHarness({ fhirUrl });
    const links = new GatewayLinks(redis, h.prefix);
    const { secret } = await h.pipeline.registry.add(hub, `Patient/${uniqueId('phub')}`);
    await h.pipeline.registry.add(scale, `Patient/${ps}`);
    await h.pipeline.registry.add(oxi, `Patient/${po}`);
    await links.link(h.pipeline.registry, hub, scale);
    await links.link(h.pipeline.registry, hub, oxi);
    client = await connectDevice(h.mqttUrl, hub, secret);
  });
  afterAll(async () => {
    client?.end(true);
    await h?.close();
  });

  it('readings for two linked devices land on their own patients, each naming the gateway', async () => {
    const time = new Date(Math.floor(Date.now() / 1000 - 30) * 1000).toISOString();
    await publish(client, `devices/${hub}/telemetry`, {
      kind: 'gateway-batch',
      readings: [
        { device: scale, type: 'weight', value: 70.2, unit: 'kg', time },
        { device: oxi, type: 'spo2', value: 96, time },
      ],
    });
    for (const [patient, device] of [
      [ps, scale],
      [po, oxi],
    ] as const) {
      const [entry] = await waitFor(
        async () =>
          (await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${patient}` })).entry ?? [],
        (e) => e.length === 1,
        30_000,
        `the Observation of ${device}`,
      );
      const o = entry!.resource as {
        device: { reference: string };
        extension?: { url: string; valueReference: { reference: string } }[];
      };
      expect(o.device.reference).toBe(`Device/dev-${device}`);
      expect(o.extension).toEqual([
        {
          url: 'http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice',
          valueReference: { reference: `Device/dev-${hub}` },
        },
      ]);
    }
    // The gateway's Device exists in FHIR (created beside the readings' Devices).
    const res = await fetch(`${fhirUrl}/Device/dev-${hub}`);
    expect(res.status).toBe(200);
  });
});
