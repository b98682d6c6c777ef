/**
 * Fault: kill -9 of a worker process while it holds jobs. Its job locks stop
 * being renewed; a new worker takes the jobs back (BullMQ stalled-job check)
 * and, because writes are idempotent, every acknowledged message ends up in
 * HAPI and ClickHouse exactly once, and nothing valid is dead-lettered.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { uniqueId } from '../support/harness.js';
import { Fleet } from './support/fleet.js';
import {
  dropPrefix,
  iomtEnv,
  ready,
  sleep,
  spawnIomt,
  stopAll,
  type IomtProcess,
} from './support/processes.js';
import {
  expectOnceInClickHouse,
  queueState,
  waitForDrained,
  waitForFhir,
} from './support/verify.js';

const fhirUrl = inject('fhirUrl');
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = uniqueId('chaos-kill');
let dir: string;
let fleet: Fleet | undefined;

afterAll(async () => {
  await fleet?.close();
  await stopAll();
  await dropPrefix(redisUrl, prefix);
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Active jobs in the stages the victim runs. */
async function activeJobs(): Promise<number> {
  const connection = new Redis(redisUrl);
  const queues = ['ingest', 'fhir'].map((n) => new Queue(n, { connection, prefix }));
  try {
    const counts = await Promise.all(queues.map((q) => q.getActiveCount()));
    return counts.reduce((a, b) => a + b, 0);
  } finally {
    await Promise.all(queues.map((q) => q.close()));
    connection.disconnect();
  }
}

describe('a worker killed with SIGKILL in the middle of a batch', () => {
  it('loses nothing and duplicates nothing', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'iomt-chaos-kill-'));
    const base = { redisUrl, prefix, fhirUrl, chdbPath: path.join(dir, 'chdb') };

    // 1. A: broker + admin + the ClickHouse mirror. B: normalize and FHIR stages.
    const a = spawnIomt('all', iomtEnv({ ...base, stages: 'analytics' }), 'A');
    const mqttPort = await ready(a, 'all');
    let b: IomtProcess = spawnIomt('worker', iomtEnv({ ...base, stages: 'normalize,fhir' }), 'B');
    await ready(b, 'worker');

    fleet = await Fleet.register(redisUrl, prefix, 5);
    await fleet.connect([`mqtt://127.0.0.1:${mqttPort}`]);

    // 2. Publish; once B holds jobs, kill it with SIGKILL. Jobs still active after
    //    the kill are held by a dead worker: that is "mid-batch". Should B have
    //    finished in the instant before the signal, try again with a new B.
    let publishing = true;
    const stream = (async () => {
      while (publishing) await fleet.publish(25, 5);
    })();
    let heldByTheDead = 0;
    for (let attempt = 0; attempt < 5 && heldByTheDead === 0; attempt++) {
      if (attempt > 0) {
        b = spawnIomt('worker', iomtEnv({ ...base, stages: 'normalize,fhir' }), `B-${attempt}`);
        await ready(b, 'worker');
      }
      const deadline = Date.now() + 30_000;
      while ((await activeJobs()) === 0 && Date.now() < deadline) await sleep(5);
      await b.kill9();
      heldByTheDead = await activeJobs();
    }
    publishing = false;
    await stream;
    expect(heldByTheDead).toBeGreaterThan(0);

    // 3. More messages while no worker runs: they wait in Redis.
    await fleet.publish(150, 2);
    await fleet.allAcked(60_000);
    expect(fleet.acked.length).toBeGreaterThanOrEqual(175);
    const stranded = await queueState(redisUrl, prefix);
    expect(stranded.pending).toBeGreaterThan(0);

    // 4. A new worker takes the dead worker's jobs back and finishes everything.
    b = spawnIomt('worker', iomtEnv({ ...base, stages: 'normalize,fhir' }), 'B2');
    await ready(b, 'worker');
    await waitForFhir(fhirUrl, fleet.devices, () => fleet!.acked, 120_000);
    const drained = await waitForDrained(redisUrl, prefix, 60_000);
    expect(drained).toEqual({ pending: 0, failed: 0, deadLetters: 0 });
    const stalled = b.logs.filter((l) => l.event === 'job-stalled');
    expect(stalled.length).toBeGreaterThan(0);

    // 5. ClickHouse: stop the owner, then count every acknowledged message with FINAL.
    await b.stop();
    await a.stop();
    await expectOnceInClickHouse(base.chdbPath, fleet.acked, fleet.acked.length);
  }, 480_000);
});
