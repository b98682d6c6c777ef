/**
 * CONNECT floods and probing, against the real broker and Redis, with raw
 * CONNECT packets sent from chosen loopback addresses (127.0.0.2 plays the
 * attacker, from a process of its own: security-flood-client.ts; 127.0.0.1 the
 * hospital):
 *  - 300 bad CONNECTs at once from one address cost at most the address budget
 *    in secret checks, and a device elsewhere gets its CONNACK within 1 s;
 *  - an unknown id and a wrong secret are refused in the same time;
 *  - idle sockets are capped per address and closed after the connect timeout;
 *  - a device id has a CONNECT rate;
 *  - MQTT 5 CONNECTs, which aedes refuses with CONNACK 1, are logged and counted.
 */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  connectDevice,
  enrol,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';
import { connectPacket, rawConnect, rawSocket } from './security-fixtures.js';

const fhirUrl = inject('fhirUrl');

async function device(h: Harness) {
  const deviceId = uniqueId('flood');
  const secret = await enrol(h.pipeline, deviceId, uniqueId('pat'));
  return { deviceId, secret };
}

async function counter(h: Harness, name: 'secretChecks'): Promise<number> {
  return (await h.pipeline.metrics[name].get()).values[0]?.value ?? 0;
}

async function refusedCount(h: Harness, reason: string): Promise<number> {
  const m = await h.pipeline.metrics.connectionsRefused.get();
  return m.values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

/** Standard error of a sample's median: 1.2533 σ/√n, σ from the interquartile range (IQR / 1.349). */
function standardErrorOfMedian(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return (1.2533 * ((q(0.75) - q(0.25)) / 1.349)) / Math.sqrt(s.length);
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/**
 * The bound on a CONNACK during the flood: 1 s, plus however much slower than
 * 250 ms (a typical quiet CONNACK here: one scrypt, three Redis round trips)
 * this shared machine answers a CONNACK with no flood at that moment. On a
 * quiet machine the bound is exactly 1 s; when other work makes a quiet
 * CONNACK take 600 ms, it is 1.35 s. Before the fix a device waited 8.4 s.
 */
const connackBound = (baselineMs: number) => 1000 + Math.max(0, baselineMs - 250);

const FLOOD_CLIENT = fileURLToPath(new URL('./security-flood-client.ts', import.meta.url));

/**
 * 300 bad CONNECTs at once from 127.0.0.2 (sent by a process of their own)
 * while a registered device connects from 127.0.0.1; returns what it measured.
 */
async function flood(h: Harness, options: { waitForAccept: boolean }) {
  const d = await device(h);
  const broker = h.pipeline.broker!;
  // 1. The attacker opens 300 connections.
  const attacker = spawn(
    process.execPath,
    ['--import', 'tsx', FLOOD_CLIENT, String(broker.port), '300', '127.0.0.2'],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const lines = createInterface({ input: attacker.stdout })[Symbol.asyncIterator]();
  expect((await lines.next()).value).toBe('ready');
  if (options.waitForAccept)
    await waitFor(
      () => Promise.resolve(broker.idleSockets('127.0.0.2')),
      (n) => n === 300,
      30_000,
      'the broker to accept 300 sockets',
    );
  // 2. How long this machine takes right now for a CONNACK with no flood
  //    (median of five): other work on a shared machine slows every CONNACK.
  const quiet: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = Date.now();
    (await connectDevice(h.mqttUrl, d.deviceId, d.secret)).end(true);
    quiet.push(Date.now() - t0);
  }
  const baselineMs = median(quiet);
  const checksBefore = await counter(h, 'secretChecks');
  const cpuBefore = process.cpuUsage();
  // 3. All 300 CONNECTs at once: made-up ids, made-up secrets.
  attacker.stdin.write('go\n');
  // 4. While they are being handled, a registered device connects from another address.
  await new Promise((r) => setTimeout(r, 5));
  const started = Date.now();
  const legit = await connectDevice(h.mqttUrl, d.deviceId, d.secret);
  const connackMs = Date.now() - started;
  const refused = JSON.parse(String((await lines.next()).value)) as (number | 'closed')[];
  const cpu = process.cpuUsage(cpuBefore);
  legit.end(true);
  attacker.kill();
  return {
    refused,
    connackMs,
    baselineMs,
    checks: (await counter(h, 'secretChecks')) - checksBefore,
    brokerCpuMs: Math.round((cpu.user + cpu.system) / 1000),
  };
}

describe('300 parallel bad CONNECTs from one address (MQTT_AUTH_MAX_FAILURES=10)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ fhirUrl, roles: ['broker'] });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('with the default limits: at most the budget in secret checks, a device elsewhere connects within 1 s', async () => {
    const r = await flood(h, { waitForAccept: false });
    // Every bad CONNECT refused: CONNACK 5 (checked, or failures spent), 3
    // (checks busy), or the socket closed at accept (idle-socket cap, 64).
    expect(r.refused).toHaveLength(300);
    expect(r.refused.every((x) => x === 3 || x === 5 || x === 'closed')).toBe(true);
    // 10 for the attacker's address at most, plus the device's own check.
    expect(r.checks).toBeLessThanOrEqual(10 + 1);
    expect(r.connackMs).toBeLessThan(connackBound(r.baselineMs));
    console.info(
      `flood, default limits: ${r.checks - 1} secret checks for 300 bad CONNECTs, ` +
        `${r.refused.filter((x) => x === 'closed').length} sockets closed by the idle cap; ` +
        `broker process CPU ${r.brokerCpuMs} ms; legitimate CONNACK in ${r.connackMs} ms (${r.baselineMs} ms with no flood)`,
    );
  });
});

describe('300 parallel bad CONNECTs from one address, idle-socket cap lifted', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      fhirUrl,
      roles: ['broker'],
      // All 300 sockets reach CONNECT: what bounds the work is the budget alone.
      overrides: { mqtt: { maxIdleSocketsPerAddress: 1000 } },
    });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('cost at most the budget in secret checks, and a device elsewhere connects within 1 s', async () => {
    const r = await flood(h, { waitForAccept: true });
    // 1. Every bad CONNECT refused: 5 (not authorized: checked, or failures
    //    spent) or 3 (server unavailable: the address's units were all held
    //    by checks in flight).
    expect(r.refused).toHaveLength(300);
    expect(r.refused.every((x) => x === 5 || x === 3)).toBe(true);
    // 2. At most the budget's worth of scrypt work (10 for the attacker's
    //    address, plus the device's own check); the device got in quickly.
    expect(r.checks).toBeLessThanOrEqual(10 + 1);
    expect(r.connackMs).toBeLessThan(connackBound(r.baselineMs));
    expect(
      (await refusedCount(h, 'too-many-failures')) + (await refusedCount(h, 'auth-busy')),
    ).toBeGreaterThanOrEqual(290);
    console.info(
      `flood, all 300 reach CONNECT: ${r.checks - 1} secret checks for 300 bad CONNECTs; ` +
        `broker process CPU ${r.brokerCpuMs} ms; legitimate CONNACK in ${r.connackMs} ms (${r.baselineMs} ms with no flood)`,
    );
  });
});

describe('refusal time does not tell an unknown id from a wrong secret', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      fhirUrl,
      roles: ['broker'],
      // 100 failures from one address and 50 on one id: budgets out of the way.
      overrides: { mqtt: { authMaxFailures: 10_000, deviceConnectRate: 10_000 } },
    });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('has the same median over 50 tries each, interleaved', async () => {
    const d = await device(h);
    const port = h.pipeline.broker!.port;
    const time = async (username: string) => {
      const socket = await rawSocket(port);
      const r = await rawConnect(socket, connectPacket(uniqueId('t'), username, 'wrong-secret-42'));
      socket.destroy();
      expect(r.returnCode).toBe(5);
      return r.ms;
    };
    // Warm up both paths (JIT, connection pools) before measuring.
    await time(uniqueId('nobody'));
    await time(d.deviceId);
    const unknown: number[] = [];
    const wrong: number[] = [];
    // Interleaved, so that load on this shared machine falls on both alike.
    for (let i = 0; i < 50; i++) {
      unknown.push(await time(uniqueId('nobody')));
      wrong.push(await time(d.deviceId));
    }
    const [mu, mw] = [median(unknown), median(wrong)];
    // Tolerance. Both refusals now do the same work (a Redis counter, one
    // registry read, one scrypt at N=2^14, r=8 — 50 ms on an idle core, two to
    // three times that on this shared, loaded machine); what differs is the size
    // of the registry's answer (an empty hash or three fields: microseconds).
    // What remains is noise: each try's scrypt time varies with the load, and
    // the median of 50 carries a standard error of about 1.25 σ/√50. So the
    // medians may differ by 20 % of the larger one, or by three standard errors
    // of their difference (σ estimated from each sample's interquartile range),
    // whichever is larger. Before the fix the medians were 1.9 ms and 54.4 ms, a
    // 28× gap that a 28 ms threshold split in 100 of 100 tries: a path that
    // skipped the scrypt would miss this by far, and the next line too.
    const tolerance = Math.max(
      0.2 * Math.max(mu, mw),
      3 * Math.hypot(standardErrorOfMedian(unknown), standardErrorOfMedian(wrong)),
    );
    console.info(
      `refusal medians over 50 tries: unknown id ${mu.toFixed(1)} ms, wrong secret ${mw.toFixed(1)} ms (tolerance ${tolerance.toFixed(1)} ms)`,
    );
    expect(Math.abs(mu - mw)).toBeLessThanOrEqual(tolerance);
    // Both paths really ran a secret check: no cheap path is left.
    expect(Math.min(mu, mw)).toBeGreaterThan(0.5 * Math.max(mu, mw));
  });
});

describe('idle sockets and CONNECT rates', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({
      fhirUrl,
      roles: ['broker'],
      overrides: {
        mqtt: { maxIdleSocketsPerAddress: 5, connectTimeoutMs: 1500, deviceConnectRate: 3 },
      },
    });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('closes a sixth idle socket from one address at once, not sockets from other addresses', async () => {
    const port = h.pipeline.broker!.port;
    const idle: Socket[] = await Promise.all(
      Array.from({ length: 5 }, () => rawSocket(port, '127.0.0.3')),
    );
    const sixth = await rawSocket(port, '127.0.0.3');
    await new Promise<void>((resolve) => sixth.once('close', () => resolve()));
    const d = await device(h);
    const client = await connectDevice(h.mqttUrl, d.deviceId, d.secret);
    client.end(true);
    const line = h.logs.find((l) => l.reason === 'too-many-idle-sockets');
    expect(line).toMatchObject({ event: 'connect-refused', address: '127.0.0.3', limit: 5 });
    expect(await refusedCount(h, 'too-many-idle-sockets')).toBe(1);
    // 2. An idle socket that never sends CONNECT is closed after the connect timeout.
    const started = Date.now();
    await new Promise<void>((resolve) => idle[0]!.once('close', () => resolve()));
    expect(Date.now() - started).toBeLessThan(3000);
    for (const s of idle) s.destroy();
    // 3. Places are free again.
    await waitFor(
      async () => {
        const s = await rawSocket(port, '127.0.0.3');
        const open = await new Promise<boolean>((resolve) => {
          s.once('close', () => resolve(false));
          setTimeout(() => resolve(!s.destroyed), 200);
        });
        s.destroy();
        return open;
      },
      (open) => open,
      5000,
      'an idle socket accepted again',
    );
  });

  it('refuses a device id past MQTT_DEVICE_CONNECT_RATE CONNECTs a minute (CONNACK 3)', async () => {
    const d = await device(h);
    for (let i = 0; i < 3; i++) (await connectDevice(h.mqttUrl, d.deviceId, d.secret)).end(true);
    await expect(connectDevice(h.mqttUrl, d.deviceId, d.secret)).rejects.toThrow(
      /Server unavailable/,
    );
    const line = await waitFor(
      () => Promise.resolve(h.logs.find((l) => l.reason === 'device-connect-rate')),
      (l) => l !== undefined,
    );
    expect(line).toMatchObject({ code: 'RateLimited', deviceId: d.deviceId });
  });
});

describe('MQTT 5', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ fhirUrl, roles: ['broker'] });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('is refused with CONNACK 1 by aedes, and the refusal is logged and counted', async () => {
    const d = await device(h);
    const client = mqtt.connect(h.mqttUrl, {
      protocolVersion: 5,
      username: d.deviceId,
      password: d.secret,
      clientId: uniqueId('v5'),
      reconnectPeriod: 0,
    });
    await new Promise<void>((resolve) => {
      client.once('error', () => resolve());
      client.once('close', () => resolve());
    });
    client.end(true);
    const line = await waitFor(
      () => Promise.resolve(h.logs.find((l) => l.reason === 'unsupported-protocol-version')),
      (l) => l !== undefined,
    );
    expect(line).toMatchObject({
      event: 'connect-refused',
      protocolVersion: 5,
      deviceId: d.deviceId,
      address: '127.0.0.1',
    });
    expect(await refusedCount(h, 'unsupported-protocol-version')).toBe(1);
    // Logged once: not again as a protocol error.
    expect(h.logs.filter((l) => l.event === 'connect-refused')).toHaveLength(1);
  });
});
