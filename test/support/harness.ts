/**
 * Test harness: a whole pipeline in this process with its own queue prefix,
 * free ports, a fresh embedded ClickHouse directory and captured logs, so each
 * test file is isolated from the others and from a dev stack on the same Redis.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { loadConfig, type ConfigOverrides } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import {
  AssociationStore,
  DeviceRegistry,
  DeviceService,
  publishRevocation,
  queueAssociationSync,
} from '../../src/devices/index.js';
import { startPipeline, type Pipeline, type Role } from '../../src/pipeline.js';
import { createQueues, createRedis, queuePrefix } from '../../src/queue-runtime.js';

export interface Harness {
  readonly pipeline: Pipeline;
  readonly mqttUrl: string;
  /** Every log line written so far, parsed. */
  readonly logs: Record<string, unknown>[];
  readonly prefix: string;
  close(): Promise<void>;
}

/** The admin API's bearer token in harness pipelines (the admin role refuses to start without one). */
export const HARNESS_ADMIN_TOKEN = 'harness-admin-token-0123456789';

export function uniqueId(label: string): string {
  return `${label}-${randomBytes(4).toString('hex')}`;
}

export async function startHarness(options: {
  fhirUrl: string;
  roles?: readonly Role[];
  overrides?: ConfigOverrides;
}): Promise<Harness> {
  const prefix = uniqueId('t');
  const chdbDir = await mkdtemp(path.join(tmpdir(), 'iomt-chdb-'));
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n'))
        if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const config = loadConfig(process.env, {
    ...options.overrides,
    redis: { prefix, ...options.overrides?.redis },
    mqtt: { host: '127.0.0.1', port: 0, ...options.overrides?.mqtt },
    admin: { port: 0, token: HARNESS_ADMIN_TOKEN, ...options.overrides?.admin },
    fhir: { url: options.fhirUrl, ...options.overrides?.fhir },
    clickhouse: { url: undefined, dataPath: chdbDir, ...options.overrides?.clickhouse },
    log: { level: 'debug' },
  });
  const pipeline = await startPipeline(
    config,
    options.roles ?? ['broker', 'worker', 'admin'],
    createLogger('debug', { destination: sink }),
  );
  return {
    pipeline,
    mqttUrl: `mqtt://127.0.0.1:${pipeline.broker?.port ?? 0}`,
    logs,
    prefix,
    async close() {
      await pipeline.close();
      await rm(chdbDir, { recursive: true, force: true });
    },
  };
}

/** Associations of test devices start this long before now: readings dated in the recent past belong. */
export const ENROL_SINCE_MS = 31 * 24 * 3600 * 1000;

/**
 * Registers a device, associates it with `patientId` (a new Patient the
 * pipeline may create) from `since` on (default: 31 days ago, before any
 * reading the input policy accepts), and returns its secret.
 */
export async function enrol(
  pipeline: Pick<Pipeline, 'devices'>,
  deviceId: string,
  patientId: string | undefined,
  options: { since?: number; secret?: string; gateway?: boolean } = {},
): Promise<string> {
  const { secret } = await pipeline.devices.add(deviceId, {
    actor: 'test',
    source: 'api',
    ...(options.secret ? { secret: options.secret } : {}),
    ...(options.gateway ? { kind: 'gateway' as const } : {}),
    ...(patientId !== undefined
      ? {
          patient: patientId,
          newPatient: true,
          at: options.since ?? Date.now() - ENROL_SINCE_MS,
        }
      : {}),
  });
  return secret;
}

/**
 * A device service over a bare Redis (no pipeline in this process): the jobs
 * that make FHIR and ClickHouse follow associations go to the prefix's queues,
 * for whichever workers run there.
 */
export async function withDevices<T>(
  redisUrl: string,
  prefix: string,
  fn: (devices: Pick<Pipeline, 'devices'>) => Promise<T>,
): Promise<T> {
  const redis = createRedis(redisUrl);
  const queues = createQueues(redis, queuePrefix(redisUrl, prefix));
  try {
    const devices = new DeviceService({
      registry: new DeviceRegistry(redis, prefix),
      associations: new AssociationStore(redis, prefix),
      revoke: (r) => publishRevocation(redis, prefix, r),
      sync: queueAssociationSync(queues),
      patientExists: () => Promise.resolve(true),
      createPatients: true,
      identityMode: 'Create',
    });
    return await fn({ devices });
  } finally {
    await queues.close();
    redis.disconnect();
  }
}

export function connectDevice(
  url: string,
  username: string,
  password: string,
  extra: IClientOptions = {},
): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, {
      username,
      password,
      clientId: uniqueId(username),
      reconnectPeriod: 0,
      ...extra,
    });
    client.once('connect', () => resolve(client));
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
  });
}

export function publish(
  client: MqttClient,
  topic: string,
  body: unknown,
  qos: 0 | 1 = 1,
): Promise<void> {
  return new Promise((resolve, reject) => {
    client.publish(topic, typeof body === 'string' ? body : JSON.stringify(body), { qos }, (err) =>
      err ? reject(err) : resolve(),
    );
  });
}

/** Polls `probe` until it returns a value for which `done` holds, or fails after `timeoutMs`. */
export async function waitFor<T>(
  probe: () => Promise<T>,
  done: (v: T) => boolean,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (done(last)) return last;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}${lastError instanceof Error ? `; last error: ${lastError.message}` : ''}`,
  );
}

/** A FHIR search returning the Bundle (no caching: Cache-Control no-cache). */
export async function fhirSearch(
  fhirUrl: string,
  resourceType: string,
  params: Record<string, string>,
): Promise<{ total?: number; entry?: { resource: Record<string, unknown> }[] }> {
  const qs = new URLSearchParams({ ...params, _count: params._count ?? '100' });
  const res = await fetch(`${fhirUrl}/${resourceType}?${qs.toString()}`, {
    headers: { accept: 'application/fhir+json', 'cache-control': 'no-cache' },
  });
  if (!res.ok) throw new Error(`search ${resourceType} failed: HTTP ${res.status}`);
  return (await res.json()) as { total?: number; entry?: { resource: Record<string, unknown> }[] };
}
