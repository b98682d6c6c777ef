/**
 * Who may speak, and for whom, with real MQTT clients against the real broker:
 * passwords, own-topic ACL, payloads naming another device or patient, TLS with
 * and without client certificates, MQTT over WebSocket, the failed-CONNECT limit
 * per address and the per-device message rate. Each refusal carries its
 * documented reason (docs/security.md); secrets and patient data stay out of
 * the logs.
 */
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
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
import { makePki, spoofAwareMappings, type Pki } from './security-fixtures.js';

const fhirUrl = inject('fhirUrl');
let pki: Pki;
let mappingsDir: string;
/** Full pipeline; TLS with optional client certificates, and WebSocket. */
let h: Harness;
const secrets: string[] = [];

beforeAll(async () => {
  pki = await makePki();
  mappingsDir = await spoofAwareMappings();
  h = await startHarness({
    fhirUrl,
    overrides: {
      mappings: { dir: mappingsDir },
      mqtt: {
        // Several tests here fail CONNECTs on purpose from 127.0.0.1; the limit
        // itself is tested below with a broker of its own.
        authMaxFailures: 1000,
        tlsPort: 0,
        tlsCertFile: pki.serverCert,
        tlsKeyFile: pki.serverKey,
        tlsCaFile: pki.caCert,
        tlsClientCert: 'optional',
        wsPort: 0,
      },
    },
  });
});

afterAll(async () => {
  await h?.close();
  if (pki) await rm(pki.dir, { recursive: true, force: true });
  if (mappingsDir) await rm(mappingsDir, { recursive: true, force: true });
});

async function device(hx: Harness = h) {
  const deviceId = uniqueId('sec');
  const patientId = uniqueId('secpat');
  const secret = await enrol(hx.pipeline, deviceId, patientId);
  secrets.push(secret);
  return { deviceId, patientId, secret };
}

function reading(value = 70) {
  return { timestamp: new Date(Date.now() - 60_000).toISOString(), heartRate: value };
}

function connectWith(url: string, options: IClientOptions): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, {
      clientId: uniqueId('c'),
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      ...options,
    });
    client.once('connect', () => resolve(client));
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
}

function logOf(hx: Harness, event: string, match: (l: Record<string, unknown>) => boolean) {
  return waitFor(
    () => Promise.resolve(hx.logs.find((l) => l.event === event && match(l))),
    (l) => l !== undefined,
    10_000,
    `a ${event} log line`,
  );
}

async function arrivesInHapi(patientId: string, value: number) {
  const bundle = await waitFor(
    () => fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${patientId}` }),
    (b) =>
      (b.entry ?? []).some(
        (e) => (e.resource.valueQuantity as { value?: number })?.value === value,
      ),
    30_000,
    `reading ${value} of Patient/${patientId} in HAPI`,
  );
  return bundle.entry ?? [];
}

async function deadLettersOf(hx: Harness, deviceId: string) {
  const jobs = await hx.pipeline.queues.deadLetter.getJobs(['waiting'], 0, -1);
  return jobs.map((j) => j.data).filter((d) => d.deviceId === deviceId);
}

describe('passwords and topics', () => {
  it('refuses a wrong secret (CONNACK 5) with reason unknown-device-or-wrong-secret', async () => {
    const d = await device();
    await expect(connectDevice(h.mqttUrl, d.deviceId, 'wrong-secret-xyz')).rejects.toThrow(
      /Not authorized/,
    );
    const line = await logOf(h, 'connect-refused', (l) => l.deviceId === d.deviceId);
    expect(line?.reason).toBe('unknown-device-or-wrong-secret');
  });

  it('refuses an unknown device the same way (no hint that the id exists)', async () => {
    const stranger = uniqueId('nobody');
    await expect(connectDevice(h.mqttUrl, stranger, 'anything-at-all')).rejects.toThrow(
      /Not authorized/,
    );
    const line = await logOf(h, 'connect-refused', (l) => l.deviceId === stranger);
    expect(line?.reason).toBe('unknown-device-or-wrong-secret');
  });

  it("disconnects a device publishing on another device's topic (other-device-topic)", async () => {
    const d = await device();
    const victim = await device();
    const client = await connectDevice(h.mqttUrl, d.deviceId, d.secret);
    client.on('error', () => undefined);
    const closed = new Promise<void>((r) => client.once('close', () => r()));
    void publish(client, `devices/${victim.deviceId}/telemetry`, reading()).catch(() => undefined);
    await closed;
    const line = await logOf(h, 'publish-refused', (l) => l.deviceId === d.deviceId);
    expect(line?.reason).toBe('other-device-topic');
    const jobs = await h.pipeline.queues.ingest.getJobs(['waiting', 'active', 'completed'], 0, -1);
    expect(
      jobs.flatMap((j) => j.data.messages).filter((m) => m.deviceId === d.deviceId),
    ).toHaveLength(0);
  });

  it('dead-letters a payload that names another device or patient (DeviceSpoofing)', async () => {
    const d = await device();
    const other = await device();
    const client = await connectDevice(h.mqttUrl, d.deviceId, d.secret);
    await publish(client, `devices/${d.deviceId}/telemetry`, {
      ...reading(),
      deviceId: other.deviceId,
    });
    await publish(client, `devices/${d.deviceId}/telemetry`, {
      ...reading(),
      patientId: other.patientId,
    });
    const letters = await waitFor(
      () => deadLettersOf(h, d.deviceId),
      (l) => l.length >= 2,
      30_000,
      'two dead letters',
    );
    expect(letters.map((l) => [l.code, l.reason]).sort()).toEqual([
      [
        'DeviceSpoofing',
        expect.stringMatching(
          /names a patient the device was not associated with at the reading time/,
        ),
      ],
      ['DeviceSpoofing', expect.stringMatching(/names another device/)],
    ]);
    const other_ = await fhirSearch(fhirUrl, 'Observation', {
      subject: `Patient/${other.patientId}`,
    });
    expect(other_.entry ?? []).toHaveLength(0);
    client.end(true);
  });
});

describe('TLS (MQTT_TLS_CLIENT_CERT=optional)', () => {
  const tlsUrl = () => `mqtts://127.0.0.1:${h.pipeline.broker!.tlsPort!}`;
  const trust = () => ({ ca: readFileSync(pki.caCert), rejectUnauthorized: true });

  it('accepts a device by its client certificate alone, and its readings arrive', async () => {
    const d = await device();
    const { cert, key } = await pki.clientCert(d.deviceId);
    const client = await connectWith(tlsUrl(), {
      ...trust(),
      cert: readFileSync(cert),
      key: readFileSync(key),
    });
    await publish(client, `devices/${d.deviceId}/telemetry`, reading(77));
    await arrivesInHapi(d.patientId, 77);
    const line = await logOf(h, 'connected', (l) => l.deviceId === d.deviceId);
    expect(line?.method).toBe('certificate');
    client.end(true);
  });

  it('accepts a password over TLS when no certificate is offered', async () => {
    const d = await device();
    const client = await connectWith(tlsUrl(), {
      ...trust(),
      username: d.deviceId,
      password: d.secret,
    });
    await publish(client, `devices/${d.deviceId}/telemetry`, reading(78));
    await arrivesInHapi(d.patientId, 78);
    client.end(true);
  });

  it('refuses a certificate from a CA it does not trust (invalid-client-certificate)', async () => {
    const d = await device();
    const { cert, key } = await pki.clientCert(d.deviceId, { rogue: true });
    await expect(
      connectWith(tlsUrl(), {
        ...trust(),
        cert: readFileSync(cert),
        key: readFileSync(key),
        username: d.deviceId,
        password: d.secret,
      }),
    ).rejects.toThrow(/Not authorized/);
    const line = await logOf(h, 'connect-refused', (l) => l.deviceId === d.deviceId);
    expect(line?.reason).toBe('invalid-client-certificate');
  });

  it('refuses a certificate whose CN is not the username (certificate-username-mismatch)', async () => {
    const d = await device();
    const other = await device();
    const { cert, key } = await pki.clientCert(other.deviceId);
    await expect(
      connectWith(tlsUrl(), {
        ...trust(),
        cert: readFileSync(cert),
        key: readFileSync(key),
        username: d.deviceId,
        password: d.secret,
      }),
    ).rejects.toThrow(/Not authorized/);
    const line = await logOf(h, 'connect-refused', (l) => l.deviceId === other.deviceId);
    expect(line?.reason).toBe('certificate-username-mismatch');
  });

  it('refuses a valid certificate for a device that is not registered (unknown-device)', async () => {
    const ghost = uniqueId('ghost');
    const { cert, key } = await pki.clientCert(ghost);
    await expect(
      connectWith(tlsUrl(), { ...trust(), cert: readFileSync(cert), key: readFileSync(key) }),
    ).rejects.toThrow(/Not authorized/);
    const line = await logOf(h, 'connect-refused', (l) => l.deviceId === ghost);
    expect(line?.reason).toBe('unknown-device');
  });
});

describe('TLS (MQTT_TLS_CLIENT_CERT=required)', () => {
  let hr: Harness;
  beforeAll(async () => {
    hr = await startHarness({
      fhirUrl,
      roles: ['broker'],
      overrides: {
        mqtt: {
          tlsPort: 0,
          tlsCertFile: pki.serverCert,
          tlsKeyFile: pki.serverKey,
          tlsCaFile: pki.caCert,
          tlsClientCert: 'required',
        },
      },
    });
  });
  afterAll(async () => {
    await hr?.close();
  });
  const url = () => `mqtts://127.0.0.1:${hr.pipeline.broker!.tlsPort!}`;

  it('refuses the TLS handshake without a client certificate, even with a valid password', async () => {
    const d = await device(hr);
    await expect(
      connectWith(url(), {
        ca: readFileSync(pki.caCert),
        username: d.deviceId,
        password: d.secret,
      }),
    ).rejects.toThrow();
    const line = await logOf(hr, 'connect-refused', (l) => l.reason === 'tls-handshake-failed');
    expect(String(line?.detail)).toMatch(/certificate/i);
  });

  it('accepts a valid client certificate and stores its message before the PUBACK', async () => {
    const d = await device(hr);
    const { cert, key } = await pki.clientCert(d.deviceId);
    const client = await connectWith(url(), {
      ca: readFileSync(pki.caCert),
      cert: readFileSync(cert),
      key: readFileSync(key),
    });
    await publish(client, `devices/${d.deviceId}/telemetry`, reading());
    const jobs = await hr.pipeline.queues.ingest.getJobs(['waiting'], 0, -1);
    expect(
      jobs.flatMap((j) => j.data.messages).filter((m) => m.deviceId === d.deviceId),
    ).toHaveLength(1);
    client.end(true);
  });
});

describe('MQTT over WebSocket', () => {
  it('authenticates like TCP and delivers to HAPI', async () => {
    const d = await device();
    const url = `ws://127.0.0.1:${h.pipeline.broker!.wsPort!}`;
    await expect(
      connectWith(url, { username: d.deviceId, password: 'not-it-at-all' }),
    ).rejects.toThrow(/Not authorized/);
    const client = await connectWith(url, { username: d.deviceId, password: d.secret });
    await publish(client, `devices/${d.deviceId}/telemetry`, reading(79));
    await arrivesInHapi(d.patientId, 79);
    client.end(true);
  });
});

describe('failed CONNECTs per client address (MQTT_AUTH_MAX_FAILURES=3)', () => {
  it('refuses the address outright after three failures, then lets it in after the window', async () => {
    const hl = await startHarness({
      fhirUrl,
      roles: ['broker'],
      overrides: { mqtt: { authMaxFailures: 3, authFailureWindowMs: 3000 } },
    });
    try {
      const d = await device(hl);
      for (let i = 0; i < 3; i++)
        await expect(connectDevice(hl.mqttUrl, d.deviceId, `guess-${i}`)).rejects.toThrow(
          /Not authorized/,
        );
      // The right secret is not even checked now.
      await expect(connectDevice(hl.mqttUrl, d.deviceId, d.secret)).rejects.toThrow(
        /Not authorized/,
      );
      const blocked = await logOf(hl, 'connect-refused', (l) => l.reason === 'too-many-failures');
      expect(blocked?.address).toBe('127.0.0.1');
      const metric = await hl.pipeline.metrics.connectionsRefused.get();
      expect(metric.values.find((v) => v.labels.reason === 'too-many-failures')?.value).toBe(1);
      await new Promise((r) => setTimeout(r, 3100));
      const client = await connectDevice(hl.mqttUrl, d.deviceId, d.secret);
      client.end(true);
    } finally {
      await hl.close();
    }
  });
});

describe('per-device message rate (MQTT_DEVICE_MAX_RATE=5, MQTT_DEVICE_BURST=5)', () => {
  it('slows a flooding device down by withholding PUBACKs, and loses nothing', async () => {
    const hl = await startHarness({
      fhirUrl,
      roles: ['broker'],
      overrides: { mqtt: { deviceMaxRate: 5, deviceBurst: 5 } },
    });
    try {
      const d = await device(hl);
      const client = await connectDevice(hl.mqttUrl, d.deviceId, d.secret);
      const started = Date.now();
      await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          publish(client, `devices/${d.deviceId}/telemetry`, reading(60 + i)),
        ),
      );
      const elapsed = Date.now() - started;
      // 5 at once, then 15 more at 5 per second: about 3 s.
      expect(elapsed).toBeGreaterThanOrEqual(2700);
      const throttled = (await hl.pipeline.metrics.messagesThrottled.get()).values[0]?.value;
      expect(throttled).toBe(15);
      const jobs = await hl.pipeline.queues.ingest.getJobs(['waiting'], 0, -1);
      expect(
        jobs.flatMap((j) => j.data.messages).filter((m) => m.deviceId === d.deviceId),
      ).toHaveLength(20);
      client.end(true);
    } finally {
      await hl.close();
    }
  });
});

describe('logs', () => {
  it('never hold a secret, and at info level no patient id or payload value', async () => {
    const d = await device();
    const client = await connectDevice(h.mqttUrl, d.deviceId, d.secret);
    await publish(client, `devices/${d.deviceId}/telemetry`, reading(123.456));
    await arrivesInHapi(d.patientId, 123.456);
    client.end(true);
    const all = JSON.stringify(h.logs);
    for (const s of secrets) expect(all).not.toContain(s);
    const info = JSON.stringify(h.logs.filter((l) => Number(l.level) >= 30));
    expect(info).not.toContain(d.patientId);
    expect(info).not.toContain('123.456');
  });
});
