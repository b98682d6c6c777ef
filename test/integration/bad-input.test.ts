/**
 * Every kind of bad input (bad-input-cases.ts) against the real pipeline: each
 * gets its exact outcome — refused at the broker, or dead-lettered with its
 * code and raw payload — and a valid reading the same device sends right after
 * still becomes exactly one Observation in HAPI. The pipeline keeps going.
 *
 * The device templates are the shipped vitals templates plus
 * deviceIdExpression / patientIdExpression, so that a payload naming another
 * device or patient can be caught (ARCHITECTURE.md: a device speaks for itself).
 */
import { rm } from 'node:fs/promises';
import { connect as tcpConnect, type Socket } from 'node:net';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { DeadLetterJobData } from '../../src/queues.js';
import {
  enrol,
  connectDevice,
  fhirSearch,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';
import { BAD_INPUTS, type BadInput, type CaseContext } from './bad-input-cases.js';
import { spoofAwareMappings } from './security-fixtures.js';

const fhirUrl = inject('fhirUrl');
let h: Harness;
let mappingsDir: string;

beforeAll(async () => {
  mappingsDir = await spoofAwareMappings();
  h = await startHarness({ fhirUrl, overrides: { mappings: { dir: mappingsDir } } });
});

afterAll(async () => {
  await h?.close();
  if (mappingsDir) await rm(mappingsDir, { recursive: true, force: true });
});

interface Device {
  readonly deviceId: string;
  readonly patientId: string;
  readonly secret: string;
}

const ACTOR = { actor: 'test', source: 'api' } as const;

async function newDevice(label: string): Promise<Device> {
  const deviceId = uniqueId(label);
  const patientId = uniqueId('pat');
  const secret = await enrol(h.pipeline, deviceId, patientId);
  return { deviceId, patientId, secret };
}

async function connect(d: Device): Promise<MqttClient> {
  const client = await connectDevice(h.mqttUrl, d.deviceId, d.secret);
  client.on('error', () => undefined); // a refusal closes the socket; the test checks 'close'
  return client;
}

function send(client: MqttClient, topic: string, payload: string | Buffer, qos: 0 | 1) {
  return new Promise<void>((resolve, reject) =>
    client.publish(topic, payload, { qos }, (err) => (err ? reject(err) : resolve())),
  );
}

function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => {
    if (!client.connected) resolve();
    else client.once('close', () => resolve());
  });
}

async function deadLettersOf(deviceId: string): Promise<DeadLetterJobData[]> {
  const jobs = await h.pipeline.queues.deadLetter.getJobs(['waiting'], 0, -1);
  return jobs.map((j) => j.data).filter((d) => d.deviceId === deviceId);
}

async function refusalOf(deviceId: string): Promise<Record<string, unknown>> {
  const line = await waitFor(
    () =>
      Promise.resolve(
        h.logs.find(
          (l) =>
            l.deviceId === deviceId &&
            ['publish-refused', 'packet-refused', 'client-error'].includes(String(l.event)),
        ),
      ),
    (l) => l !== undefined,
    20_000,
    `a refusal logged for ${deviceId}`,
  );
  return line ?? {};
}

async function ingestedMessagesOf(deviceId: string): Promise<number> {
  const jobs = await h.pipeline.queues.ingest.getJobs(
    ['waiting', 'active', 'completed', 'delayed'],
    0,
    -1,
  );
  return jobs.flatMap((j) => j.data.messages).filter((m) => m.deviceId === deviceId).length;
}

/** A valid reading from `d` arrives in HAPI, and it is the patient's only Observation. */
async function validReadingArrives(
  d: Device,
  client?: MqttClient,
  at = new Date(Date.now() - 30_000).toISOString(),
): Promise<void> {
  const c = client?.connected ? client : await connect(d);
  await send(
    c,
    `devices/${d.deviceId}/telemetry`,
    JSON.stringify({ timestamp: at, heartRate: 66 }),
    1,
  );
  const found = await waitFor(
    () => fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${d.patientId}` }),
    (b) => (b.entry?.length ?? 0) >= 1,
    30_000,
    `the valid reading of ${d.deviceId} in HAPI`,
  );
  expect(found.entry).toHaveLength(1);
  expect(found.entry?.[0]?.resource).toMatchObject({ valueQuantity: { value: 66 } });
  c.end(true);
}

async function runCase(c: BadInput): Promise<void> {
  const d = await newDevice('bad');
  const other = await newDevice('other');
  const ctx: CaseContext = {
    deviceId: d.deviceId,
    patientId: d.patientId,
    otherDeviceId: other.deviceId,
    otherPatientId: other.patientId,
    now: new Date(Date.now() - 60_000).toISOString(),
  };
  const client = await connect(d);
  const gone = closed(client);
  if (c.before === 'remove-device') await h.pipeline.devices.remove(d.deviceId, ACTOR);
  const payload = typeof c.payload === 'function' ? c.payload(ctx) : c.payload;
  const topic = c.topic?.(ctx) ?? `devices/${d.deviceId}/telemetry`;
  const outcome = c.outcome;

  if ('sessionEnded' in outcome) {
    // 1. Removing the device ended its session at once: what it sends after is never taken in.
    await gone;
    void send(client, topic, payload, c.qos ?? 1).catch(() => undefined);
    expect(await ingestedMessagesOf(d.deviceId)).toBe(0);
    // 2. Its credentials are gone: the broker refuses it, as it should.
    await expect(connectDevice(h.mqttUrl, d.deviceId, d.secret)).rejects.toThrow(/Not authorized/);
    client.end(true);
    // 3. Added again (its history stays), it publishes for the patient associated from now on.
    await h.pipeline.devices.add(d.deviceId, {
      ...ACTOR,
      secret: d.secret,
      patient: d.patientId,
      newPatient: true,
    });
    await validReadingArrives(d, undefined, new Date().toISOString());
    return;
  }

  if ('refused' in outcome) {
    // 1. No PUBACK; the broker closes the connection (MQTT-3.3.5-2) and says why.
    void send(client, topic, payload, c.qos ?? 1).catch(() => undefined);
    await gone;
    const log = await refusalOf(d.deviceId);
    expect(String(log.reason)).toContain(outcome.refused);
    // 2. Nothing reached a queue.
    expect(await ingestedMessagesOf(d.deviceId)).toBe(0);
    client.end(true);
    await validReadingArrives(d);
    return;
  }

  await send(client, topic, payload, c.qos ?? 1);
  if ('deadLetter' in outcome) {
    // 1. Exactly one dead letter, with its code, stage, reason and the raw payload.
    const letters = await waitFor(
      () => deadLettersOf(d.deviceId),
      (l) => l.length >= 1,
      30_000,
      `a dead letter for ${c.name}`,
    );
    expect(letters).toHaveLength(1);
    const letter = letters[0]!;
    expect(letter.code).toBe(outcome.deadLetter);
    expect(letter.stage).toBe('normalize');
    if (outcome.reason) expect(letter.reason).toMatch(outcome.reason);
    const raw = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
    expect(
      Buffer.from(letter.message!.payload, letter.message!.encoding === 'utf8' ? 'utf8' : 'base64'),
    ).toEqual(raw);
    await validReadingArrives(d, client);
    return;
  }

  if ('recordedAbsent' in outcome) {
    // 1. Recorded, not lost: one Observation, its value replaced by dataAbsentReason.
    const found = await waitFor(
      () => fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${d.patientId}` }),
      (b) => (b.entry?.length ?? 0) >= 1,
      30_000,
      `the recorded reading of ${c.name}`,
    );
    expect(found.entry).toHaveLength(1);
    const recorded = found.entry![0]!.resource as {
      valueQuantity?: unknown;
      dataAbsentReason?: { coding?: { system?: string; code?: string }[]; text?: string };
    };
    expect(recorded.valueQuantity).toBeUndefined();
    expect(recorded.dataAbsentReason?.coding?.[0]).toMatchObject({
      system: 'http://terminology.hl7.org/CodeSystem/data-absent-reason',
      code: outcome.recordedAbsent,
    });
    expect(recorded.dataAbsentReason?.text).toMatch(outcome.reason);
    expect(await deadLettersOf(d.deviceId)).toEqual([]);
    // 2. A valid reading after it arrives too.
    const at = new Date(Date.now() - 30_000).toISOString();
    await send(
      client,
      `devices/${d.deviceId}/telemetry`,
      JSON.stringify({ timestamp: at, heartRate: 66 }),
      1,
    );
    const both = await waitFor(
      () => fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${d.patientId}` }),
      (b) => (b.entry?.length ?? 0) >= 2,
      30_000,
      `the valid reading after ${c.name}`,
    );
    expect(
      both.entry?.map(
        (e) => (e.resource as { valueQuantity?: { value?: number } }).valueQuantity?.value,
      ),
    ).toContain(66);
    client.end(true);
    return;
  }

  // Processed normally: one Observation with the reading, nothing dead-lettered.
  const found = await waitFor(
    () => fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${d.patientId}` }),
    (b) => (b.entry?.length ?? 0) >= 1,
    30_000,
    `the reading of ${c.name}`,
  );
  expect(found.entry?.[0]?.resource).toMatchObject({ valueQuantity: { value: 71 } });
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(await deadLettersOf(d.deviceId)).toEqual([]);
  client.end(true);
}

describe.concurrent('bad input', () => {
  it('has at least 25 distinct cases', () => {
    expect(BAD_INPUTS.length).toBeGreaterThanOrEqual(25);
    expect(new Set(BAD_INPUTS.map((c) => c.name)).size).toBe(BAD_INPUTS.length);
  });

  for (const c of BAD_INPUTS) {
    const what =
      'refused' in c.outcome
        ? `refused at the broker (${c.outcome.refused})`
        : 'deadLetter' in c.outcome
          ? `dead-lettered as ${c.outcome.deadLetter}`
          : 'recordedAbsent' in c.outcome
            ? `recorded with dataAbsentReason ${c.outcome.recordedAbsent}`
            : 'sessionEnded' in c.outcome
              ? 'its session ended at once'
              : 'processed normally';
    it(`${c.name}: ${what}, and a valid reading after it arrives`, () => runCase(c));
  }
});

/** MQTT 3.1.1 §2.2.3 Remaining Length: 7 bits per byte, high bit = more bytes follow. */
function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

/** A CONNECT packet (MQTT 3.1.1 §3.1) with clean session, username and password. */
function connectPacket(clientId: string, username: string, password: string): Buffer {
  const str = (s: string) => {
    const b = Buffer.from(s);
    return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
  };
  const body = Buffer.concat([
    str('MQTT'),
    Buffer.from([4, 0xc2, 0, 60]),
    str(clientId),
    str(username),
    str(password),
  ]);
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body]);
}

/** Connects a raw TCP socket and completes CONNECT/CONNACK for `d`. */
async function rawSession(d: Device): Promise<Socket> {
  const { port } = new URL(h.mqttUrl);
  const socket = tcpConnect(Number(port), '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.once('connect', () => resolve());
  });
  socket.write(connectPacket(uniqueId('raw'), d.deviceId, d.secret));
  const connack = await new Promise<Buffer>((resolve) => socket.once('data', resolve));
  expect([...connack]).toEqual([0x20, 0x02, 0x00, 0x00]);
  return socket;
}

describe('hostile bytes on the wire', () => {
  it('closes a connection whose PUBLISH announces 100 MiB, after its 5 header bytes', async () => {
    const d = await newDevice('raw-big');
    const socket = await rawSession(d);
    const gone = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.write(Buffer.concat([Buffer.from([0x32]), remainingLength(100 * 1024 * 1024)]));
    await gone;
    expect((await refusalOf(d.deviceId)).reason).toBe('packet-too-large');
    await validReadingArrives(d);
  });

  it('closes a connection whose Remaining Length runs past four bytes (MQTT-2.2.3)', async () => {
    const d = await newDevice('raw-len');
    const socket = await rawSession(d);
    const gone = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]));
    await gone;
    expect((await refusalOf(d.deviceId)).reason).toBe('malformed-length');
    await validReadingArrives(d);
  });
});
