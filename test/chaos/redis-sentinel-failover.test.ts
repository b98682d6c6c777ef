/**
 * Fault: the Redis master dies (SIGKILL) mid-stream under Sentinel (one master,
 * one replica, three Sentinels, started by this test). The pipeline follows
 * REDIS_URL redis+sentinel://… and runs with REDIS_WAIT_REPLICAS=1: a PUBACK
 * goes out only once the job is on the replica, so the promoted replica holds
 * every acknowledged message. The new master has no replica until the killed
 * node is started again (as a supervisor would) and the Sentinels make it a
 * replica: until then WAIT is not answered, so nothing is acknowledged and the
 * devices resend. Every acknowledged message is delivered once, in HAPI and in
 * ClickHouse.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { uniqueId } from '../support/harness.js';
import {
  nodeCall,
  startRedisSentinel,
  until,
  type TestSentinel,
} from '../support/redis-topologies.js';
import { Fleet } from './support/fleet.js';
import { iomtEnv, ready, sleep, spawnIomt, stopAll } from './support/processes.js';
import { expectOnceInClickHouse, expectOnceInFhirAndDrained } from './support/verify.js';

const fhirUrl = inject('fhirUrl');
const prefix = uniqueId('chaos-sentinel');
let dir: string;
let sentinel: TestSentinel | undefined;
let fleet: Fleet | undefined;

afterAll(async () => {
  await fleet?.close();
  await stopAll();
  await sentinel?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('a Sentinel failover of the Redis master mid-stream, with WAIT', () => {
  it('delivers every acknowledged message once', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'iomt-chaos-sentinel-'));
    sentinel = await startRedisSentinel(1);
    const redisUrl = sentinel.url;
    const base = {
      redisUrl,
      prefix,
      fhirUrl,
      chdbPath: path.join(dir, 'chdb'),
      extra: { REDIS_WAIT_REPLICAS: '1', REDIS_WAIT_TIMEOUT_MS: '1000' },
    };

    // 1. One worker (every stage) and one broker, both through the Sentinels.
    const w = spawnIomt('worker', iomtEnv(base), 'W');
    const b = spawnIomt('broker', iomtEnv(base), 'B');
    const [port] = await Promise.all([ready(b, 'broker'), ready(w, 'worker')]);
    fleet = await Fleet.register(redisUrl, prefix, 5);
    await fleet.connect([`mqtt://127.0.0.1:${port}`]);

    // 2. Publish; kill the master mid-stream; the Sentinels promote a replica.
    const stream = fleet.publish(400, 5);
    await sleep(700);
    const killed = await sentinel.killMaster();
    const ackedAtKill = fleet.acked.length;
    await until(
      'the Sentinels promote the replica',
      async () => (await sentinel!.master()) !== killed,
      60_000,
    );
    // 3. The killed node comes back; the Sentinels make it the new master's replica.
    // Sentinel waits 8 s before converting a returned master, and stands still
    // for 30 s whenever its timer was late by 2 s (TILT, e.g. on a loaded
    // machine), hence the generous bound; a failure shows what the Sentinels did.
    await sentinel.restart(killed);
    await until(
      'the old master replicates from the new one',
      async () =>
        String(await nodeCall(killed, 'INFO', 'replication')).includes('master_link_status:up'),
      180_000,
    ).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\nSentinel events:\n${await sentinel!.events()}`);
    });
    await stream;

    // 4. Everything acknowledged in the end; the processes lived through it.
    await fleet.allAcked(120_000);
    expect(ackedAtKill).toBeGreaterThan(0);
    expect(ackedAtKill).toBeLessThan(400);
    expect(fleet.acked).toHaveLength(400);
    expect(w.child.exitCode).toBeNull();
    expect(b.child.exitCode).toBeNull();

    // 5. End state: once in HAPI, once in ClickHouse, nothing dead-lettered.
    await expectOnceInFhirAndDrained(fhirUrl, redisUrl, prefix, fleet);
    await b.stop();
    await w.stop();
    await expectOnceInClickHouse(base.chdbPath, fleet.acked, 400);
  }, 600_000);
});
