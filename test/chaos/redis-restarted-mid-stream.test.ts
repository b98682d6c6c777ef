/**
 * Fault: the Redis holding the queues (a test-owned redis-server with AOF,
 * fsync on every write) is killed with SIGKILL mid-stream and restarted on the
 * same data. What Redis had acknowledged is on disk, so every PUBACK the broker
 * sent survives; while Redis is down the broker withholds PUBACKs (and refuses
 * CONNECTs it cannot check), and the devices resend after reconnecting.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { uniqueId } from '../support/harness.js';
import { Fleet } from './support/fleet.js';
import { iomtEnv, ready, sleep, spawnIomt, stopAll, testRedis } from './support/processes.js';
import { expectOnceInClickHouse, expectOnceInFhirAndDrained } from './support/verify.js';

const fhirUrl = inject('fhirUrl');
const REDIS_PORT = 6391;
const prefix = uniqueId('chaos-redis');
let dir: string;
let fleet: Fleet | undefined;

afterAll(async () => {
  await fleet?.close();
  await stopAll();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('Redis killed with SIGKILL and restarted from its append-only file', () => {
  it('keeps every acknowledged message, and the rest are resent', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'iomt-chaos-redis-'));
    const redis = testRedis(REDIS_PORT, dir);
    await redis.start();
    const base = { redisUrl: redis.url, prefix, fhirUrl, chdbPath: path.join(dir, 'chdb') };

    // 1. One worker process (all stages) and one broker, both on the test's Redis.
    const w = spawnIomt('worker', iomtEnv(base), 'W');
    await ready(w, 'worker');
    const b = spawnIomt('broker', iomtEnv(base), 'B');
    const port = await ready(b, 'broker');
    fleet = await Fleet.register(redis.url, prefix, 5);
    await fleet.connect([`mqtt://127.0.0.1:${port}`]);

    // 2. Publish; kill Redis mid-stream; restart it two seconds later.
    const stream = fleet.publish(500, 4);
    await sleep(600);
    await redis.kill9();
    const ackedBeforeCrash = fleet.acked.length;
    await sleep(2000);
    await redis.start();
    await stream;

    // 3. Every message is acknowledged in the end, and the processes lived through it.
    await fleet.allAcked(90_000);
    expect(ackedBeforeCrash).toBeGreaterThan(0);
    expect(ackedBeforeCrash).toBeLessThan(500);
    expect(fleet.acked).toHaveLength(500);
    expect(w.child.exitCode).toBeNull();
    expect(b.child.exitCode).toBeNull();

    // 4. End state: once in HAPI, once in ClickHouse, nothing dead-lettered.
    await expectOnceInFhirAndDrained(fhirUrl, redis.url, prefix, fleet);
    await b.stop();
    await w.stop();
    await expectOnceInClickHouse(base.chdbPath, fleet.acked, 500);
    await redis.kill9();
  }, 480_000);
});
