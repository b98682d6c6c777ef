/**
 * Fault: two brokers and two workers behind a real HAProxy (TCP mode, round
 * robin, PROXY v2 headers, health checks). One broker is killed with SIGKILL
 * while the devices publish through HAProxy. Its devices reconnect through
 * HAProxy, which sends them to the surviving broker, and resend their
 * unacknowledged QoS 1 messages (MQTT-4.4.0-1); sessions are not shared
 * between brokers (clean sessions, docs/deployment.md), the device's own
 * resend is what carries the message over. Every acknowledged message ends
 * once in HAPI and once in ClickHouse; nothing is left queued or dead-lettered.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { uniqueId, waitFor } from '../support/harness.js';
import { startBrokerBalancer, type BrokerBalancer } from '../support/haproxy-tcp.js';
import { Fleet } from './support/fleet.js';
import { dropPrefix, freePort, sleep, startTwoByTwo, stopAll } from './support/processes.js';
import { expectOnceInClickHouse, expectOnceInFhirAndDrained } from './support/verify.js';

const fhirUrl = inject('fhirUrl');
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = uniqueId('chaos-lb-killed');
const MESSAGES = 600;
let dir: string;
let fleet: Fleet | undefined;
let haproxy: BrokerBalancer | undefined;

afterAll(async () => {
  await fleet?.close();
  await haproxy?.close();
  await stopAll();
  await dropPrefix(redisUrl, prefix);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('two brokers behind HAProxy, one killed with SIGKILL mid-stream', () => {
  it('the devices move to the other broker, resend, and every message is stored once', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'iomt-chaos-lb-killed-'));
    const base = {
      redisUrl,
      prefix,
      fhirUrl,
      chdbPath: path.join(dir, 'chdb'),
      extra: { MQTT_PROXY_PROTOCOL: 'v2', MQTT_PROXY_TRUSTED: '127.0.0.1' },
    };

    // 1. W1: normalize + FHIR; W2: every stage. B1, B2 behind HAProxy.
    const {
      workers: [w1, w2],
      brokers: [b1, b2],
      urls,
    } = await startTwoByTwo(base);
    const brokerPort = (url: string) => Number(new URL(url).port);
    haproxy = await startBrokerBalancer(await freePort(), [
      { name: 'b1', port: brokerPort(urls[0]) },
      { name: 'b2', port: brokerPort(urls[1]) },
    ]);

    // 2. Eight devices, all through HAProxy: round robin spreads them over both brokers
    fleet = await Fleet.register(redisUrl, prefix, 8);
    await fleet.connect([haproxy.url]);
    const connected = (logs: typeof b1.logs) => logs.filter((l) => l.event === 'connected').length;
    // (four each unless a CONNECT timed out on the loaded machine and was retried)
    await waitFor(
      () => Promise.resolve(connected(b1.logs) + connected(b2.logs)),
      (n) => n >= 8,
      30_000,
      'eight CONNECTs logged',
    );
    expect(connected(b1.logs)).toBeGreaterThan(0);
    expect(connected(b2.logs)).toBeGreaterThan(0);

    // 3. Publish fast; kill B1 mid-stream, with messages in flight.
    const started = Date.now();
    const stream = fleet.publish(MESSAGES, 2);
    await sleep(400);
    await b1.kill9();
    const killedAt = Date.now();
    const onB1 = connected(b1.logs);
    const onB2 = connected(b2.logs);
    const ackedAtKill = fleet.acked.length;
    const unackedAtKill = fleet.sent.filter((s) => !s.acked).length;

    // 4. B1's four devices reconnect through HAProxy to B2 and resend.
    await stream;
    await fleet.allAcked(90_000);
    const allAckedAt = Date.now();
    expect(ackedAtKill).toBeGreaterThan(0);
    expect(unackedAtKill).toBeGreaterThan(0);
    expect(fleet.acked).toHaveLength(MESSAGES);
    await waitFor(
      () => Promise.resolve(connected(b2.logs)),
      (n) => n >= onB2 + onB1,
      30_000,
      'B1’s devices on B2',
    );

    // 5. End state: once in HAPI, once in ClickHouse, nothing queued or dead-lettered.
    await expectOnceInFhirAndDrained(fhirUrl, redisUrl, prefix, fleet);
    const drainedAt = Date.now();
    await Promise.all([b2.stop(), w1.stop(), w2.stop()]);
    await expectOnceInClickHouse(base.chdbPath, fleet.acked, MESSAGES);
    console.info(
      `[haproxy-broker-killed] ${MESSAGES} messages over 8 devices; at the kill ` +
        `(${killedAt - started} ms in): ${ackedAtKill} acked, ${unackedAtKill} sent and unacked; ` +
        `all acked ${allAckedAt - killedAt} ms after the kill; FHIR complete and queues drained ` +
        `${drainedAt - killedAt} ms after the kill; CONNECTs before the kill B1 ${onB1}, B2 ${onB2}; ` +
        `B2 in all ${connected(b2.logs)}`,
    );
  }, 480_000);
});
