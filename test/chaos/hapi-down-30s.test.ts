/**
 * Fault: the FHIR server is stopped for 30 s while devices publish, then
 * restarted. The test runs its own HAPI on port 8098 with an H2 file database
 * (SPRING_DATASOURCE_URL), so what was written before the outage survives the
 * restart. Messages keep being acknowledged and normalized during the outage;
 * the FHIR stage retries with backoff until HAPI answers; in the end every
 * acknowledged message is in HAPI and ClickHouse exactly once.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { uniqueId } from '../support/harness.js';
import { Fleet } from './support/fleet.js';
import {
  dropPrefix,
  hapi,
  iomtEnv,
  ready,
  sleep,
  spawnIomt,
  stopAll,
  transientFailure,
} from './support/processes.js';
import { expectOnceInClickHouse, expectOnceInFhirAndDrained } from './support/verify.js';

const HAPI_PORT = 8098;
const fhirUrl = `http://127.0.0.1:${HAPI_PORT}/fhir`;
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = uniqueId('chaos-hapi');
let dir: string;
let fleet: Fleet | undefined;
let hapiStarted = false;

async function answers(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/metadata`, { signal: AbortSignal.timeout(3000) })).ok;
  } catch {
    return false;
  }
}

afterAll(async () => {
  await fleet?.close();
  await stopAll();
  if (hapiStarted) await hapi('stop', HAPI_PORT);
  await dropPrefix(redisUrl, prefix);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('HAPI stopped for 30 s while devices publish', () => {
  it('delivers every acknowledged message exactly once after it is back', async () => {
    // 0. Our own HAPI, never one somebody else is using.
    if (await answers(fhirUrl))
      throw new Error(`port ${HAPI_PORT} already serves a FHIR server: this test must own it`);
    dir = await mkdtemp(path.join(tmpdir(), 'iomt-chaos-hapi-'));
    const hapiEnv = { SPRING_DATASOURCE_URL: `jdbc:h2:file:${path.join(dir, 'hapi')}` };
    hapiStarted = true;
    await hapi('start', HAPI_PORT, hapiEnv);
    const base = { redisUrl, prefix, fhirUrl, chdbPath: path.join(dir, 'chdb') };

    // 1. One process with every role.
    const a = spawnIomt('all', iomtEnv(base), 'A');
    const port = await ready(a, 'all');
    fleet = await Fleet.register(redisUrl, prefix, 5);
    await fleet.connect([`mqtt://127.0.0.1:${port}`]);
    await fleet.publish(100, 10);

    // 2. Stop HAPI, keep publishing for 30 s, start it again (its boot is downtime too).
    const outage = (async () => {
      await hapi('stop', HAPI_PORT);
      const stoppedAt = Date.now();
      await sleep(30_000);
      await hapi('start', HAPI_PORT, hapiEnv);
      return Date.now() - stoppedAt;
    })();
    await sleep(500);
    const ackedAtStop = fleet.acked.length;
    await fleet.publish(250, 100);
    const ackedDuringOutage = fleet.acked.length - ackedAtStop;
    const downMs = await outage;
    await fleet.publish(100, 10);

    // 3. Acks never stopped: a PUBACK means Redis, not FHIR.
    await fleet.allAcked(60_000);
    expect(downMs).toBeGreaterThanOrEqual(30_000);
    expect(ackedDuringOutage).toBeGreaterThan(200);
    expect(fleet.acked).toHaveLength(450);
    expect(a.logs.some(transientFailure('FhirUnavailable'))).toBe(true);

    // 4. End state: once in HAPI, once in ClickHouse, nothing dead-lettered.
    await expectOnceInFhirAndDrained(fhirUrl, redisUrl, prefix, fleet);
    await a.stop();
    await expectOnceInClickHouse(base.chdbPath, fleet.acked, 450);
  }, 900_000);
});
