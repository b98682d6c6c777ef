/**
 * The normalize worker with the values policy of issue 10, on real Redis and
 * BullMQ queues: an implausible value is written flagged and counted
 * (iomt_readings_implausible_total), a unit that cannot be converted is
 * dead-lettered with UnitNotConvertible, and PLAUSIBILITY_LIMITS from the
 * configuration is the policy the worker applies.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { AssociationStore, DeviceRegistry, DeviceService } from '../../src/devices/index.js';
import { createIdentityService } from '../../src/fhir/identity.js';
import { createFhirGateway } from '../../src/fhir/gateway.js';
import { createLogger } from '../../src/logger.js';
import { loadMappings, type MappingSet } from '../../src/mapping/index.js';
import { createMetrics } from '../../src/metrics.js';
import { createQueues, createRedis } from '../../src/queue-runtime.js';
import type { TelemetryMessage } from '../../src/queues.js';
import { createNormalizeStage } from '../../workers/normalize.js';
import { createRunner } from '../../workers/runner.js';
import { uniqueId } from '../support/harness.js';

const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const prefix = uniqueId('val');
const queues = createQueues(redis, prefix);
const registry = new DeviceRegistry(redis, prefix);
const associations = new AssociationStore(redis, prefix);
const devices = new DeviceService({
  registry,
  associations,
  revoke: () => Promise.resolve(),
  sync: () => Promise.resolve(),
  patientExists: () => Promise.resolve(true),
  createPatients: false,
  identityMode: 'Create',
});
// Create mode: the patient associated with the device at the reading's time.
const identity = createIdentityService({
  mode: 'Create',
  fhir: createFhirGateway({ baseUrl: inject('fhirUrl'), timeoutMs: 30_000 }),
  deviceIdentifierSystem: 'urn:iomt:device',
  createPatients: false,
  associations,
  registry,
  cacheMs: 0,
});
let mappings: MappingSet;

beforeAll(async () => {
  const r = await loadMappings(new URL('../../mappings', import.meta.url).pathname);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  mappings = r.mappings;
  await devices.add('mon-1', {
    actor: 'test',
    source: 'api',
    patient: 'p-1',
    at: Date.now() - 3_600_000,
  });
});

afterAll(async () => {
  await queues.ingest.obliterate({ force: true });
  await queues.fhir.obliterate({ force: true });
  await queues.analytics.obliterate({ force: true });
  await queues.deadLetter.obliterate({ force: true });
  await queues.close();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

function message(id: string, body: unknown, receivedAt: number): TelemetryMessage {
  return {
    id,
    deviceId: 'mon-1',
    topic: 'devices/mon-1/telemetry',
    qos: 1,
    receivedAt,
    payload: JSON.stringify(body),
    encoding: 'utf8',
  };
}

async function run(env: Record<string, string>, jobId: string, messages: TelemetryMessage[]) {
  const metrics = createMetrics({ defaultMetrics: false });
  const config = loadConfig({ ...env, QUEUE_PREFIX: prefix });
  const log = createLogger('silent');
  const runner = createRunner(
    createNormalizeStage({ config, identity, mappings: () => mappings, log, metrics }),
    {
      fhir: queues.fhir,
      analytics: queues.analytics,
      deadLetter: queues.deadLetter,
      log,
      metrics,
      retryCapMs: config.worker.retryCapMs,
      maxTransientRetries: config.worker.maxTransientRetries,
    },
  );
  // A real ingest job (not taken by any worker here): the runner reads its id and data.
  const job = await queues.ingest.add('batch', { traceId: jobId, messages }, { jobId });
  await runner.process(job);
  const counted = (await metrics.readingsImplausible.get()).values.map((v) => [
    v.labels.type,
    v.labels.code,
    v.value,
  ]);
  const made = await queues.fhir.getJobs(['waiting', 'delayed', 'prioritized']);
  return { counted, fhir: made.find((j) => j.id?.startsWith(`n-${jobId}-`)) };
}

describe('normalize worker: plausibility and units', () => {
  const now = Date.now();
  const at = new Date(now - 1000).toISOString();

  it('writes an implausible value flagged and counts it; refuses an unconvertible unit', async () => {
    // 1. SpO2 127 % (no sentinel on this monitor), and a heart rate that is fine.
    // 2. A temperature in a unit that is not one: dead-lettered, its neighbour goes on.
    const { counted, fhir } = await run({}, uniqueId('j'), [
      message('m1', { timestamp: at, spo2: 127, heartRate: 72 }, now),
      message('m2', { timestamp: at, temperature: 37, temperatureUnit: 'kelvinish' }, now),
    ]);
    expect(counted).toEqual([['spo2', '59408-5', 1]]);
    const written = fhir!.data.observations.map((e) => e.observation);
    const spo2 = written.find((o) => o.code.coding?.[0]?.code === '59408-5')!;
    expect(spo2.status).toBe('preliminary');
    expect(spo2.valueQuantity?.value).toBe(127);
    expect(spo2.interpretation?.[0]?.coding?.map((c) => c.code)).toEqual(['questionable', 'HX']);
    expect(written.find((o) => o.code.coding?.[0]?.code === '8867-4')?.status).toBe('final');
    const dead = await queues.deadLetter.getJobs(['waiting', 'delayed', 'prioritized']);
    const letter = dead.map((j) => j.data).find((d) => d.message?.id === 'm2');
    expect(letter?.code).toBe('UnitNotConvertible');
    expect(letter?.reason).not.toContain('kelvinish');
  });

  it('applies PLAUSIBILITY_LIMITS from the configuration', async () => {
    const { counted, fhir } = await run(
      { PLAUSIBILITY_LIMITS: '8867-4=(30,180) /min' },
      uniqueId('j'),
      [message('m3', { timestamp: at, heartRate: 190 }, now)],
    );
    expect(counted).toEqual([['heartrate', '8867-4', 1]]);
    expect(fhir!.data.observations[0]!.observation.status).toBe('preliminary');
  });
});
