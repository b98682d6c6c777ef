/**
 * Fault: the broker process is killed with SIGKILL while devices publish. What
 * it had stored in Redis was acknowledged; what it had not, it never
 * acknowledged. The devices reconnect to the restarted broker and resend their
 * unacknowledged QoS 1 messages (MQTT-4.4.0-1), some of which the dead broker
 * may already have stored: idempotent ids make those one Observation each.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { uniqueId } from '../support/harness.js';
import { Fleet } from './support/fleet.js';
import {
  dropPrefix,
  freePort,
  iomtEnv,
  ready,
  sleep,
  spawnIomt,
  stopAll,
} from './support/processes.js';
import { expectOnceInClickHouse, expectOnceInFhirAndDrained } from './support/verify.js';

const fhirUrl = inject('fhirUrl');
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = uniqueId('chaos-broker');
let dir: string;
let fleet: Fleet | undefined;

afterAll(async () => {
  await fleet?.close();
  await stopAll();
  await dropPrefix(redisUrl, prefix);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('a broker killed with SIGKILL and restarted', () => {
  it('gets every unacknowledged message again from the devices, and stores each once', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'iomt-chaos-broker-'));
    const base = { redisUrl, prefix, fhirUrl, chdbPath: path.join(dir, 'chdb') };
    const port = await freePort();

    // 1. W: every worker stage (and the ClickHouse mirror). B: the broker on a fixed port.
    const w = spawnIomt('worker', iomtEnv(base), 'W');
    await ready(w, 'worker');
    let b = spawnIomt('broker', iomtEnv({ ...base, mqttPort: port }), 'B');
    await ready(b, 'broker');
    fleet = await Fleet.register(redisUrl, prefix, 6);
    await fleet.connect([`mqtt://127.0.0.1:${port}`]);

    // 2. Publish fast; kill the broker mid-stream, with messages in flight.
    const stream = fleet.publish(600, 2);
    await sleep(400);
    await b.kill9();
    const unackedAtKill = fleet.sent.filter((s) => !s.acked).length;
    const ackedAtKill = fleet.acked.length;

    // 3. Restart it on the same port a second later; publishing never stopped.
    await sleep(1000);
    b = spawnIomt('broker', iomtEnv({ ...base, mqttPort: port }), 'B2');
    await ready(b, 'broker');
    await stream;
    await fleet.allAcked(60_000);
    expect(ackedAtKill).toBeGreaterThan(0);
    expect(unackedAtKill).toBeGreaterThan(0);
    expect(fleet.acked).toHaveLength(600);

    // 4. End state: once in HAPI, once in ClickHouse, nothing dead-lettered.
    await expectOnceInFhirAndDrained(fhirUrl, redisUrl, prefix, fleet);
    await b.stop();
    await w.stop();
    await expectOnceInClickHouse(base.chdbPath, fleet.acked, 600);
  }, 480_000);
});
