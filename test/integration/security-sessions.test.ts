/**
 * Sessions and broker memory, with real MQTT clients against the real broker:
 *  - a client id belongs to its device: another device using it is refused
 *    (CONNACK 2) and the holder stays connected, its persistent session kept;
 *    a device may take its own id over;
 *  - persistent sessions are bounded: telemetry cannot be subscribed to
 *    (SUBACK 0x80, the connection stays), so nothing is queued for an offline
 *    session however much its device publishes; a device holds a bounded number
 *    of sessions; subscriptions per session are bounded;
 *  - a retained telemetry message is ingested and not kept;
 *  - QoS 2 is acknowledged after the message is in Redis, and only its packet id
 *    is kept until PUBREL;
 *  - an empty client id with CleanSession=0 is refused (MQTT-3.1.3-8).
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
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
import { connectPacket, rawConnect, rawSocket, remainingLength } from './security-fixtures.js';

const fhirUrl = inject('fhirUrl');
let h: Harness;

beforeAll(async () => {
  h = await startHarness({
    fhirUrl,
    roles: ['broker'],
    overrides: { mqtt: { maxSessionsPerDevice: 2, sessionMaxSubscriptions: 2 } },
  });
});

afterAll(async () => {
  await h?.close();
});

async function device() {
  const deviceId = uniqueId('sess');
  const secret = await enrol(h.pipeline, deviceId, uniqueId('pat'));
  return { deviceId, secret };
}

/** Connects and resolves with the client and the CONNACK's session-present flag. */
function connect(
  d: { deviceId: string; secret: string },
  options: IClientOptions,
): Promise<{ client: MqttClient; sessionPresent: boolean }> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(h.mqttUrl, {
      username: d.deviceId,
      password: d.secret,
      reconnectPeriod: 0,
      ...options,
    });
    client.once('connect', (connack) =>
      resolve({ client, sessionPresent: connack.sessionPresent }),
    );
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
  });
}

/** SUBSCRIBE; resolves with the SUBACK's return codes (0x80 = refused, MQTT-3.9.3). */
function subscribe(client: MqttClient, topics: string[]): Promise<number[]> {
  return new Promise((resolve) => {
    // mqtt.js passes the SUBACK packet third (its second argument echoes the request).
    client.subscribe(topics, { qos: 1 }, (_err, _requested, suback) =>
      resolve((suback as { granted?: number[] } | undefined)?.granted ?? []),
    );
  });
}

async function ingested(deviceId: string) {
  const jobs = await h.pipeline.queues.ingest.getJobs(['waiting', 'active', 'completed'], 0, -1);
  return jobs.flatMap((j) => j.data.messages).filter((m) => m.deviceId === deviceId);
}

const reading = () => ({ timestamp: new Date().toISOString(), heartRate: 70 });

describe('client ids', () => {
  it("refuses a device using another device's client id, and the victim stays connected", async () => {
    const victim = await device();
    const attacker = await device();
    const clientId = uniqueId('monitor');
    // 1. The victim holds the id, with a persistent session.
    const v = await connect(victim, { clientId, clean: false });
    const closed: string[] = [];
    v.client.on('close', () => closed.push('victim'));
    // 2. Another device, with its own valid secret, asks for the same id.
    await expect(connect(attacker, { clientId, clean: true })).rejects.toThrow(
      /Identifier rejected/,
    );
    const line = await waitFor(
      () => Promise.resolve(h.logs.find((l) => l.reason === 'client-id-taken')),
      (l) => l !== undefined,
    );
    expect(line).toMatchObject({ event: 'connect-refused', deviceId: attacker.deviceId, clientId });
    // 3. The victim is still connected and still acknowledged.
    await publish(v.client, `devices/${victim.deviceId}/telemetry`, reading());
    expect(closed).toEqual([]);
    expect(v.client.connected).toBe(true);
    // 4. Offline, its session still belongs to it: refused again for the other
    //    device, and present for the victim when it comes back.
    v.client.end();
    await waitFor(
      () => Promise.resolve(closed.length),
      (n) => n === 1,
    );
    await expect(connect(attacker, { clientId, clean: true })).rejects.toThrow(
      /Identifier rejected/,
    );
    const back = await connect(victim, { clientId, clean: false });
    expect(back.sessionPresent).toBe(false); // no subscription was ever stored
    back.client.end(true);
  });

  it('lets a device take its own client id over (MQTT-3.1.4-2)', async () => {
    const d = await device();
    const clientId = uniqueId('own');
    const first = await connect(d, { clientId });
    const firstClosed = new Promise<void>((r) => first.client.once('close', () => r()));
    const second = await connect(d, { clientId });
    await firstClosed;
    await publish(second.client, `devices/${d.deviceId}/telemetry`, reading());
    second.client.end(true);
  });

  it('refuses an empty client id with CleanSession=0 (CONNACK 2, MQTT-3.1.3-8)', async () => {
    const d = await device();
    const socket = await rawSocket(h.pipeline.broker!.port);
    const r = await rawConnect(socket, connectPacket('', d.deviceId, d.secret, { clean: false }));
    expect(r.returnCode).toBe(2);
    socket.destroy();
  });
});

describe('persistent sessions are bounded', () => {
  it('refuses telemetry as a subscription (0x80) and keeps the connection', async () => {
    const d = await device();
    const { client } = await connect(d, { clientId: uniqueId('sub'), clean: false });
    expect(
      await subscribe(client, [
        `devices/${d.deviceId}/telemetry`,
        `devices/${d.deviceId}/#`,
        `devices/${d.deviceId}/commands`,
      ]),
    ).toEqual([128, 128, 1]);
    expect(client.connected).toBe(true);
    await publish(client, `devices/${d.deviceId}/telemetry`, reading());
    const reasons = h.logs
      .filter((l) => l.event === 'subscribe-refused' && l.deviceId === d.deviceId)
      .map((l) => l.reason);
    expect(reasons).toEqual(['telemetry-topic', 'telemetry-topic']);
    // aedes stores the whole SUBSCRIBE packet once one filter is granted; the
    // store keeps only the allowed one.
    expect(
      await h.pipeline.broker!.sessions.subscriptionsByTopic(`devices/${d.deviceId}/telemetry`),
    ).toEqual([]);
    client.end(true);
  });

  it('queues nothing for an offline session while its device floods its own topic', async () => {
    const d = await device();
    const sessionId = uniqueId('offline');
    // 1. A persistent session subscribed to everything it may, then offline.
    const s = await connect(d, { clientId: sessionId, clean: false });
    await subscribe(s.client, [
      `devices/${d.deviceId}/telemetry`,
      `devices/${d.deviceId}/commands`,
    ]);
    await new Promise<void>((r) => s.client.end(false, {}, () => r()));
    // 2. 50 × 200 KiB from another connection of the same device.
    const pub = await connect(d, { clientId: uniqueId('pub') });
    const big = JSON.stringify({ ...reading(), pad: 'x'.repeat(200 * 1024) });
    await Promise.all(
      Array.from({ length: 50 }, () => publish(pub.client, `devices/${d.deviceId}/telemetry`, big)),
    );
    pub.client.end(true);
    // 3. All of it went to Redis; none of it is held for the session.
    expect(await ingested(d.deviceId)).toHaveLength(50);
    expect(h.pipeline.broker!.sessions.queued(sessionId)).toEqual({ messages: 0, bytes: 0 });
    // 4. Back online: the session is there, with nothing to deliver.
    const back = await connect(d, { clientId: sessionId, clean: false });
    expect(back.sessionPresent).toBe(true);
    const delivered: string[] = [];
    back.client.on('message', (topic) => delivered.push(topic));
    await new Promise((r) => setTimeout(r, 500));
    expect(delivered).toEqual([]);
    back.client.end(true);
  });

  it('holds at most MQTT_MAX_SESSIONS_PER_DEVICE sessions: the oldest offline one gives way', async () => {
    const d = await device();
    const [s1, s2, s3, s4] = [uniqueId('s1'), uniqueId('s2'), uniqueId('s3'), uniqueId('s4')];
    const session = async (clientId: string) => {
      const s = await connect(d, { clientId, clean: false });
      await subscribe(s.client, [`devices/${d.deviceId}/commands`]);
      return s;
    };
    const offline = (s: { client: MqttClient }) =>
      new Promise<void>((r) => s.client.end(false, {}, () => r()));
    // 1. Three persistent sessions one after the other (the limit is two):
    //    the third takes the place of the first.
    await offline(await session(s1));
    await offline(await session(s2));
    await offline(await session(s3));
    const dropped = await waitFor(
      () => Promise.resolve(h.logs.find((l) => l.event === 'session-dropped' && l.clientId === s1)),
      (l) => l !== undefined,
    );
    expect(dropped).toMatchObject({ reason: 'evicted' });
    expect(await h.pipeline.broker!.sessions.subscriptionsByClient({ id: s1 } as never)).toEqual(
      [],
    );
    // 2. s2 is still there; with s2 and s3 both connected there is no room for a third.
    const b2 = await connect(d, { clientId: s2, clean: false });
    expect(b2.sessionPresent).toBe(true);
    const b3 = await connect(d, { clientId: s3, clean: false });
    await expect(connect(d, { clientId: s4, clean: false })).rejects.toThrow(/Identifier rejected/);
    expect(h.logs.some((l) => l.reason === 'too-many-sessions' && l.clientId === s4)).toBe(true);
    b2.client.end(true);
    b3.client.end(true);
  });

  it('refuses subscriptions past MQTT_SESSION_MAX_SUBSCRIPTIONS (0x80)', async () => {
    const d = await device();
    const { client } = await connect(d, { clientId: uniqueId('many') });
    const t = (n: string) => `devices/${d.deviceId}/${n}`;
    expect(await subscribe(client, [t('a'), t('b'), t('c')])).toEqual([1, 1, 128]);
    // Subscribing again to a held filter is not a new one.
    expect(await subscribe(client, [t('a')])).toEqual([1]);
    client.end(true);
  });
});

describe('retained telemetry and QoS 2', () => {
  it('ingests a retained telemetry message and keeps nothing', async () => {
    const d = await device();
    const client = await connectDevice(h.mqttUrl, d.deviceId, d.secret);
    await new Promise<void>((resolve, reject) =>
      client.publish(
        `devices/${d.deviceId}/telemetry`,
        JSON.stringify(reading()),
        { qos: 1, retain: true },
        (err) => (err ? reject(err) : resolve()),
      ),
    );
    expect(await ingested(d.deviceId)).toHaveLength(1);
    const retained: unknown[] = [];
    for await (const p of h.pipeline.broker!.sessions.createRetainedStreamCombi(['#']))
      retained.push(p);
    expect(retained).toEqual([]);
    client.end(true);
  });

  it('acknowledges QoS 2 after Redis, keeping only the packet id until PUBREL', async () => {
    const d = await device();
    const clientId = uniqueId('q2');
    const socket = await rawSocket(h.pipeline.broker!.port);
    expect(
      (await rawConnect(socket, connectPacket(clientId, d.deviceId, d.secret))).returnCode,
    ).toBe(0);
    // PUBLISH, QoS 2 (fixed header 0x34), packet id 7 (MQTT 3.1.1 §3.3).
    const topic = Buffer.from(`devices/${d.deviceId}/telemetry`);
    const payload = Buffer.from(JSON.stringify({ ...reading(), pad: 'y'.repeat(100_000) }));
    const body = Buffer.concat([
      Buffer.from([topic.length >> 8, topic.length & 0xff]),
      topic,
      Buffer.from([0, 7]),
      payload,
    ]);
    const pubrec = new Promise<Buffer>((r) => socket.once('data', r));
    socket.write(Buffer.concat([Buffer.from([0x34]), remainingLength(body.length), body]));
    // 1. PUBREC (0x50) for packet 7 comes once the message is in Redis.
    expect([...(await pubrec)]).toEqual([0x50, 0x02, 0, 7]);
    expect(await ingested(d.deviceId)).toHaveLength(1);
    // 2. Until PUBREL the broker holds the packet id, not the 100 kB payload.
    expect(h.pipeline.broker!.sessions.incomingCount(clientId)).toBe(1);
    const held = await h.pipeline.broker!.sessions.incomingGetPacket({ id: clientId } as never, {
      messageId: 7,
    });
    expect(held.payload.length).toBe(0);
    // 3. PUBREL (0x62) → PUBCOMP (0x70), and the id is gone.
    const pubcomp = new Promise<Buffer>((r) => socket.once('data', r));
    socket.write(Buffer.from([0x62, 0x02, 0, 7]));
    expect([...(await pubcomp)]).toEqual([0x70, 0x02, 0, 7]);
    expect(h.pipeline.broker!.sessions.incomingCount(clientId)).toBe(0);
    socket.destroy();
  });
});
