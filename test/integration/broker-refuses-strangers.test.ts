/**
 * Broker security with a real MQTT client and the real Redis registry: a wrong
 * secret or an unknown device is refused at CONNECT; a device publishing under
 * another device's topic is disconnected and nothing is queued; each refusal is
 * logged with the device id and the reason, and never with the secret.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  enrol,
  connectDevice,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';

let h: Harness;
let alice: string;
let bob: string;
let aliceSecret: string;

beforeAll(async () => {
  // Broker only: what is refused must never reach a queue.
  h = await startHarness({ fhirUrl: inject('fhirUrl'), roles: ['broker'] });
  alice = uniqueId('alice');
  bob = uniqueId('bob');
  aliceSecret = await enrol(h.pipeline, alice, 'p-alice');
  await enrol(h.pipeline, bob, 'p-bob');
});

afterAll(async () => {
  await h?.close();
});

function refusals(event: string) {
  return h.logs.filter((l) => l.event === event);
}

describe('the broker', () => {
  it('refuses a wrong secret at CONNECT and logs device and reason', async () => {
    await expect(connectDevice(h.mqttUrl, alice, 'not-the-secret')).rejects.toThrow(
      /Not authorized/i,
    );
    const entry = refusals('connect-refused').find((l) => l.deviceId === alice);
    expect(entry).toMatchObject({ deviceId: alice, reason: 'unknown-device-or-wrong-secret' });
    expect(JSON.stringify(h.logs)).not.toContain('not-the-secret');
  });

  it('refuses an unknown device at CONNECT', async () => {
    const stranger = uniqueId('stranger');
    await expect(connectDevice(h.mqttUrl, stranger, 'whatever')).rejects.toThrow(/Not authorized/i);
    expect(refusals('connect-refused').find((l) => l.deviceId === stranger)).toMatchObject({
      reason: 'unknown-device-or-wrong-secret',
    });
  });

  it('refuses a CONNECT without credentials', async () => {
    await expect(connectDevice(h.mqttUrl, '', '')).rejects.toThrow(/Bad username or password/i);
  });

  it('disconnects a device publishing to another device topic and queues nothing', async () => {
    const before = await h.pipeline.queues.ingest.getJobCounts(
      'waiting',
      'active',
      'completed',
      'delayed',
    );
    const client = await connectDevice(h.mqttUrl, alice, aliceSecret);
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    // QoS 1: the PUBACK never comes; the broker closes the connection (MQTT-3.3.5-2).
    void publish(client, `devices/${bob}/telemetry`, {
      timestamp: new Date().toISOString(),
      heartRate: 70,
    }).catch(() => undefined);
    await closed;
    client.end(true);
    const entry = await waitFor(
      () => Promise.resolve(refusals('publish-refused').find((l) => l.deviceId === alice)),
      (e) => e !== undefined,
      5000,
      'publish refusal logged',
    );
    expect(entry).toMatchObject({ deviceId: alice, reason: 'other-device-topic' });
    const after = await h.pipeline.queues.ingest.getJobCounts(
      'waiting',
      'active',
      'completed',
      'delayed',
    );
    expect(after).toEqual(before);
  });

  it('accepts its own topic and acknowledges only after the message is in Redis', async () => {
    const client = await connectDevice(h.mqttUrl, alice, aliceSecret);
    await publish(client, `devices/${alice}/telemetry`, {
      timestamp: new Date().toISOString(),
      heartRate: 71,
    });
    // The PUBACK has arrived: the job holding the message is already stored.
    const jobs = await h.pipeline.queues.ingest.getJobs(['waiting']);
    const messages = jobs.flatMap((j) => j.data.messages);
    expect(messages.filter((m) => m.deviceId === alice)).toHaveLength(1);
    expect(messages[0]).toMatchObject({
      topic: `devices/${alice}/telemetry`,
      qos: 1,
      encoding: 'utf8',
    });
    client.end(true);
  });
});
