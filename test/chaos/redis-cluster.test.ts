/**
 * Scale-out on a real Redis Cluster (3 masters, redis-server in cluster mode,
 * started by this test): two brokers and two workers on REDIS_URL
 * redis+cluster://…, devices spread over the brokers. Every acknowledged
 * message is in HAPI and ClickHouse exactly once; the registry lists every
 * device, a template version activated with the CLI reaches both workers (hot
 * reload without cross-slot transactions), and a dead letter is replayed.
 */
import { execFile } from 'node:child_process';
import { appendFile, cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { enrol, uniqueId, withDevices } from '../support/harness.js';
import { startRedisCluster, until, type TestCluster } from '../support/redis-topologies.js';
import { Fleet } from './support/fleet.js';
import { iomtEnv, ROOT, startTwoByTwo, stopAll } from './support/processes.js';
import {
  expectOnceInClickHouse,
  expectOnceInFhirAndDrained,
  queueState,
} from './support/verify.js';

const run = promisify(execFile);
const fhirUrl = inject('fhirUrl');
const prefix = uniqueId('chaos-cluster');
let dir: string;
let cluster: TestCluster | undefined;
let fleet: Fleet | undefined;

afterAll(async () => {
  await fleet?.close();
  await stopAll();
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('a Redis Cluster of three masters', () => {
  it('carries two brokers and two workers: every message once, registry, hot reload and replay work', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'iomt-chaos-cluster-'));
    cluster = await startRedisCluster(3);
    const redisUrl = cluster.url;
    const base = { redisUrl, prefix, fhirUrl, chdbPath: path.join(dir, 'chdb') };
    const cli = async (...args: string[]) =>
      run('node', [path.join(ROOT, 'bin/iomt.mjs'), ...args], {
        env: { ...process.env, ...iomtEnv(base) },
      });

    // 1. W1: normalize + FHIR. W2: normalize + FHIR + the ClickHouse mirror (one owner).
    const {
      workers: [w1, w2],
      brokers: [b1, b2],
      urls,
    } = await startTwoByTwo(base);

    // 2. Eight devices over two brokers; every acknowledged message once, end to end.
    fleet = await Fleet.register(redisUrl, prefix, 8);
    await fleet.connect(urls);
    await fleet.publish(400, 2);
    await fleet.allAcked(60_000);
    expect(fleet.acked).toHaveLength(400);
    await expectOnceInFhirAndDrained(fhirUrl, redisUrl, prefix, fleet);
    for (const w of [w1, w2])
      expect(w.logs.filter((l) => l.event === 'normalized').length).toBeGreaterThan(0);

    // 3. The registry lists every device, whichever node holds its keys.
    const listed = JSON.parse((await cli('devices', 'list', '--json')).stdout) as {
      deviceId: string;
    }[];
    expect(listed.map((d) => d.deviceId)).toEqual(
      expect.arrayContaining(fleet.devices.map((d) => d.deviceId)),
    );

    // 4. Hot reload: a new version proposed and activated with the CLI reaches both workers.
    const folder = path.join(dir, 'mappings');
    await cp(path.join(ROOT, 'mappings'), folder, { recursive: true });
    await appendFile(path.join(folder, 'device/vitals.json'), '\n');
    const proposed = JSON.parse(
      (await cli('mappings', 'propose', '--dir', folder, '--author', 'test', '--json')).stdout,
    ) as { version: string; created: boolean };
    expect(proposed.created).toBe(true);
    await cli('mappings', 'activate', proposed.version, '--without-shadow-run', '--json');
    for (const w of [w1, w2])
      await w.waitForLog(
        (l) => l.event === 'mappings-activated' && l.version === proposed.version,
        60_000,
        `version ${proposed.version} on the worker`,
      );

    // 5. A reading of a device with no patient is dead-lettered; once the device is
    //    assigned from before the reading, the replay charts it.
    const loner = uniqueId('chaos-loner');
    const patient = uniqueId('chaos-loner-pat');
    const secret = await withDevices(redisUrl, prefix, (p) => enrol(p, loner, undefined));
    const client = await mqtt.connectAsync(urls[0], {
      username: loner,
      password: secret,
      clientId: uniqueId(loner),
    });
    const takenAt = new Date(Date.now() - 60_000).toISOString();
    await client.publishAsync(
      `devices/${loner}/telemetry`,
      JSON.stringify({ timestamp: takenAt, heartRate: 71 }),
      { qos: 1 },
    );
    await client.endAsync();
    await until(
      'the dead letter',
      async () => (await queueState(redisUrl, prefix)).deadLetters === 1,
    );
    await cli('devices', 'assign', loner, '--patient', patient, '--new-patient', '--at', '10m');
    await cli('dlq', 'replay', '--all');
    await until(
      'the replayed reading in FHIR',
      async () => {
        const res = await fetch(`${fhirUrl}/Observation?subject=Patient/${patient}&_summary=count`);
        return ((await res.json()) as { total?: number }).total === 1;
      },
      120_000,
    );

    await Promise.all([b1.stop(), b2.stop(), w1.stop(), w2.stop()]);
    await expectOnceInClickHouse(base.chdbPath, fleet.acked, 400);
  }, 600_000);
});
