/**
 * Identity resolution modes (MedTech semantics) against a real HAPI FHIR and
 * Redis: Create (association history, gateways linked over time), Lookup (the
 * FHIR Device must exist and name its Patient) and LookupWithEncounter, with
 * each error code; and Lookup and a gateway through the whole pipeline.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AssociationStore, DeviceRegistry, DeviceService } from '../../src/devices/index.js';
import type { PipelineError } from '../../src/errors.js';
import { createIdentityService, type IdentityMode } from '../../src/fhir/identity.js';
import { createFhirGateway } from '../../src/fhir/gateway.js';
import type { IdentityClaim } from '../../src/mapping/index.js';
import { createRedis } from '../../src/queue-runtime.js';
import {
  connectDevice,
  enrol,
  ENROL_SINCE_MS,
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
const associations = new AssociationStore(redis, prefix);
const ACTOR = { actor: 'test', source: 'api' } as const;
const devices = new DeviceService({
  registry,
  associations,
  revoke: () => Promise.resolve(),
  sync: () => Promise.resolve(),
  patientExists: () => Promise.resolve(true),
  createPatients: false,
  identityMode: 'Create',
});
const fhir = createFhirGateway({ baseUrl: fhirUrl, timeoutMs: 30_000 });

const identityService = (mode: IdentityMode) =>
  createIdentityService({
    mode,
    fhir,
    deviceIdentifierSystem: SYSTEM,
    createPatients: false,
    associations,
    registry,
    cacheMs: 0,
  });

async function who(mode: IdentityMode, deviceId: string) {
  return (await identityService(mode).forJob([deviceId])).forMessage(deviceId);
}

/** A claim made a minute ago, naming its device in the payload unless said otherwise. */
function claim(c: Omit<IdentityClaim, 'deviceFrom' | 'occurrenceTime'> & Partial<IdentityClaim>) {
  return {
    deviceFrom: 'payload' as const,
    occurrenceTime: new Date(Date.now() - 60_000).toISOString(),
    ...c,
  };
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
  await devices.add(gw, { ...ACTOR, kind: 'gateway' });
  await devices.add(da, { ...ACTOR, patient: pa, at: Date.now() - ENROL_SINCE_MS });
  await devices.add(orphan, ACTOR);
});

afterAll(() => {
  redis.disconnect();
});

describe('Create', () => {
  it('a device speaks for itself: the patient associated at the reading time', async () => {
    const w = await who('Create', da);
    const r = await w.resolve(claim({ authenticatedDeviceId: da, deviceId: da }));
    expect(r).toEqual({ patientId: pa, deviceResourceId: `dev-${da}` });
    // The Patient existed when it was associated, and was not marked new: never created.
    expect(w.patients()).toEqual([
      { id: pa, identifier: { system: 'urn:iomt:patient', value: pa }, create: false },
    ]);
    expect(w.devices()).toEqual([da]);
  });

  it('a reading of a time with no association is NoPatientAssociated, never a guess', async () => {
    const w = await who('Create', orphan);
    expect(
      await failure(
        Promise.resolve(w.resolve(claim({ authenticatedDeviceId: orphan, deviceId: orphan }))),
      ),
    ).toBe('NoPatientAssociated');
    const early = new Date(Date.now() - ENROL_SINCE_MS - 60_000).toISOString();
    const before = await who('Create', da);
    expect(
      await failure(
        Promise.resolve(
          before.resolve(claim({ authenticatedDeviceId: da, deviceId: da, occurrenceTime: early })),
        ),
      ),
    ).toBe('NoPatientAssociated');
  });

  it('a gateway relays for the devices linked to it at the reading time, and for no others', async () => {
    const c = claim({ authenticatedDeviceId: gw, deviceId: da });
    expect(await failure(Promise.resolve((await who('Create', gw)).resolve(c)))).toBe(
      'DeviceSpoofing',
    );
    await devices.link(gw, da, { ...ACTOR, at: Date.now() - 3_600_000 });
    const w = await who('Create', gw);
    expect(await w.resolve(c)).toEqual({
      patientId: pa,
      deviceResourceId: `dev-${da}`,
      gatewayId: gw,
      gatewayResourceId: `dev-${gw}`,
    });
    // The gateway's Device is written too (Observation.extension references it).
    expect(w.devices()).toContain(gw);
    // Before the link took effect, the gateway did not speak for it.
    const earlier = new Date(Date.now() - 2 * 3_600_000).toISOString();
    expect(await failure(Promise.resolve(w.resolve({ ...c, occurrenceTime: earlier })))).toBe(
      'DeviceSpoofing',
    );
  });

  it('a gateway reading that names no device, or the gateway itself, is GatewayChildMissing', async () => {
    const w = await who('Create', gw);
    for (const deviceFrom of ['connection', 'payload'] as const)
      expect(
        await failure(
          Promise.resolve(
            w.resolve(claim({ authenticatedDeviceId: gw, deviceId: gw, deviceFrom })),
          ),
        ),
      ).toBe('GatewayChildMissing');
  });

  it("one job's devices: each message gets its own device's record, a stranger is DeviceNotFound", async () => {
    const stranger = uniqueId('never-registered');
    // The registry reads the job's records together, each device once.
    const known = await registry.records([da, stranger, gw, da]);
    expect([...known.keys()]).toEqual([da, stranger, gw]);
    expect(known.get(da)).toEqual(await registry.get(da));
    expect(known.get(gw)?.kind).toBe('gateway');
    expect(known.get(stranger)).toBeUndefined();

    const job = await identityService('Create').forJob([da, stranger, gw]);
    const own = await job.forMessage(da);
    expect(await own.resolve(claim({ authenticatedDeviceId: da, deviceId: da }))).toEqual({
      patientId: pa,
      deviceResourceId: `dev-${da}`,
    });
    // The gateway's record says gateway: its own reading names no child.
    const relay = await job.forMessage(gw);
    expect(
      await failure(
        Promise.resolve(relay.resolve(claim({ authenticatedDeviceId: gw, deviceId: gw }))),
      ),
    ).toBe('GatewayChildMissing');
    expect(await failure(job.forMessage(stranger))).toBe('DeviceNotFound');
  });

  it('a payload naming another patient is refused', async () => {
    const w = await who('Create', da);
    expect(
      await failure(
        Promise.resolve(
          w.resolve(claim({ authenticatedDeviceId: da, deviceId: da, claimedPatientId: 'x' })),
        ),
      ),
    ).toBe('DeviceSpoofing');
  });

  it('an encounter the reading names is linked by identifier, or refused', async () => {
    const w = await who('Create', da);
    const r = await w.resolve(claim({ authenticatedDeviceId: da, deviceId: da, encounterId: enc }));
    expect(r.encounterResourceId).toBe(`e-${enc}`);
    expect(
      await failure(
        Promise.resolve(
          w.resolve(claim({ authenticatedDeviceId: da, deviceId: da, encounterId: 'nope' })),
        ),
      ),
    ).toBe('EncounterNotFound');
  });
});

describe('Lookup', () => {
  it('the FHIR Device with the identifier names the patient; nothing is created', async () => {
    const w = await who('Lookup', da);
    expect(await w.resolve(claim({ authenticatedDeviceId: da, deviceId: da }))).toEqual({
      patientId: pa,
      deviceResourceId: `fhir-${da}`,
    });
    expect(w.patients()).toEqual([]);
    expect(w.devices()).toEqual([]);
  });

  it('DeviceNotFound, PatientNotFound, PatientDeviceMismatch', async () => {
    const ghost = uniqueId('ghost');
    await devices.add(ghost, ACTOR);
    const g = await who('Lookup', ghost);
    expect(
      await failure(
        Promise.resolve(g.resolve(claim({ authenticatedDeviceId: ghost, deviceId: ghost }))),
      ),
    ).toBe('DeviceNotFound');
    const o = await who('Lookup', orphan);
    expect(
      await failure(
        Promise.resolve(o.resolve(claim({ authenticatedDeviceId: orphan, deviceId: orphan }))),
      ),
    ).toBe('PatientNotFound');
    const w = await who('Lookup', da);
    expect(
      await failure(
        Promise.resolve(
          w.resolve(
            claim({ authenticatedDeviceId: da, deviceId: da, claimedPatientId: 'someone' }),
          ),
        ),
      ),
    ).toBe('PatientDeviceMismatch');
    // The patient the Device names may be given: it is the same one.
    expect(
      (await w.resolve(claim({ authenticatedDeviceId: da, deviceId: da, claimedPatientId: pa })))
        .patientId,
    ).toBe(pa);
  });
});

describe('LookupWithEncounter', () => {
  it('needs an Encounter carrying the identifier the reading names', async () => {
    const w = await who('LookupWithEncounter', da);
    expect(
      (await w.resolve(claim({ authenticatedDeviceId: da, deviceId: da, encounterId: enc })))
        .encounterResourceId,
    ).toBe(`e-${enc}`);
    expect(
      await failure(Promise.resolve(w.resolve(claim({ authenticatedDeviceId: da, deviceId: da })))),
    ).toBe('EncounterNotFound');
    expect(
      await failure(
        Promise.resolve(
          w.resolve(claim({ authenticatedDeviceId: da, deviceId: da, encounterId: uniqueId('x') })),
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
    // The registry admits the device (CONNECT); in Lookup mode FHIR names the patient.
    const a = await h.pipeline.devices.add(monitor, ACTOR);
    const b = await h.pipeline.devices.add(unknownInFhir, ACTOR);
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
    const secret = await enrol(h.pipeline, hub, undefined, { gateway: true });
    await enrol(h.pipeline, scale, ps);
    await enrol(h.pipeline, oxi, po);
    const since = Date.now() - ENROL_SINCE_MS;
    await h.pipeline.devices.link(hub, scale, { ...ACTOR, at: since });
    await h.pipeline.devices.link(hub, oxi, { ...ACTOR, at: since });
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
