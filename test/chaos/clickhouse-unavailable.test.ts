/**
 * Fault: ClickHouse is unavailable to the mirror, then comes back. With the
 * embedded engine, "unavailable" is made honestly: this test process opens the
 * data directory first, so the engine's own lock ("Cannot lock file …/status",
 * ClickHouse code 76) refuses the mirror process — the same ClickHouseUnavailable
 * a down server gives. The mirror process starts anyway, FHIR writes go on, and
 * the analytics jobs retry until the directory is released; then every
 * acknowledged message is in ClickHouse exactly once.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createAnalyticsStore, type AnalyticsStore } from '../../src/clickhouse/index.js';
import { uniqueId } from '../support/harness.js';
import { Fleet } from './support/fleet.js';
import {
  dropPrefix,
  iomtEnv,
  ready,
  spawnIomt,
  stopAll,
  transientFailure,
} from './support/processes.js';
import {
  expectOnceInClickHouse,
  queueState,
  waitForDrained,
  waitForFhir,
} from './support/verify.js';

const fhirUrl = inject('fhirUrl');
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = uniqueId('chaos-ch');
let dir: string;
let fleet: Fleet | undefined;
let holder: AnalyticsStore | undefined;

afterAll(async () => {
  await fleet?.close();
  await holder?.close();
  await stopAll();
  await dropPrefix(redisUrl, prefix);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('ClickHouse unavailable, then back', () => {
  it('keeps FHIR writes going and mirrors everything once it is back', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'iomt-chaos-ch-'));
    const chdbPath = path.join(dir, 'chdb');
    const base = { redisUrl, prefix, fhirUrl, chdbPath };

    // 1. Take the engine's directory: from now on the mirror cannot open it.
    holder = createAnalyticsStore({
      url: undefined,
      user: 'default',
      password: '',
      database: 'iomt',
      dataPath: chdbPath,
    });
    await holder.ping();

    // 2. A: broker + admin + normalize + FHIR. M: the mirror, which starts without ClickHouse.
    const a = spawnIomt('all', iomtEnv({ ...base, stages: 'normalize,fhir' }), 'A');
    const port = await ready(a, 'all');
    const m = spawnIomt('worker', iomtEnv({ ...base, stages: 'analytics' }), 'M');
    await ready(m, 'worker');
    await m.waitForLog((l) => l.event === 'clickhouse-unavailable', 10_000, 'start warning');

    // 3. Publish. Everything reaches HAPI while ClickHouse is unavailable.
    fleet = await Fleet.register(redisUrl, prefix, 5);
    await fleet.connect([`mqtt://127.0.0.1:${port}`]);
    await fleet.publish(300, 3);
    await fleet.allAcked(60_000);
    await waitForFhir(fhirUrl, fleet.devices, () => fleet!.acked, 120_000);
    await m.waitForLog(
      transientFailure('ClickHouseUnavailable'),
      30_000,
      'a mirror job failing with ClickHouseUnavailable',
    );
    const waiting = await queueState(redisUrl, prefix);
    expect(waiting.pending).toBeGreaterThan(0);
    expect(waiting.deadLetters).toBe(0);

    // 4. ClickHouse is back: the retries go through, nothing is left or dead-lettered.
    await holder.close();
    holder = undefined;
    expect(await waitForDrained(redisUrl, prefix, 90_000)).toEqual({
      pending: 0,
      failed: 0,
      deadLetters: 0,
    });
    await m.stop();
    await a.stop();
    await expectOnceInClickHouse(chdbPath, fleet.acked, 300);
  }, 480_000);
});
