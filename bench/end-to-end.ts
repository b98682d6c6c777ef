/**
 * End-to-end benchmark: every figure beside a baseline measured in the same run
 * (docs/performance.md). Run by `npm run bench` (scripts/bench.sh starts a HAPI
 * on PostgreSQL for it); by hand:
 *
 *   FHIR_URL=http://127.0.0.1:8095/fhir npx tsx bench/end-to-end.ts [--short]
 *     [--messages 3000] [--devices 20] [--ack-devices 1000] [--ack-rate 2]
 *     [--ack-seconds 30] [--paced-seconds 30] [--hapi-pid N]
 *
 *  1. FHIR ceiling: the best loader — transaction Bundles of the same
 *     Observations (as many patients and Devices as --devices), straight to
 *     the same server — over a small grid of Bundle sizes and Bundles in
 *     flight; the best is the baseline, and the pipeline runs with that Bundle
 *     size. --partition pins the FHIR server (java, PostgreSQL) to half the
 *     CPUs and the pipeline side to the other half (bench/cpu-partition.ts);
 *     --threads prints the pipeline's CPU by thread.
 *  2. Acknowledgements at realistic rates: --ack-devices connected devices,
 *     each publishing QoS 1 at --ack-rate msg/s, to Mosquitto (started here on
 *     a free port) and to our broker; acks/s and ack latency. Every message
 *     our broker acknowledged must be in Redis (ingest jobs).
 *     Burst: --devices devices, throttle raised, 100 in flight, both brokers.
 *  3. Pipeline end to end (broker + workers in this process): --messages
 *     messages (3 Observations each) as fast as the broker takes them, as a
 *     ratio of the ceiling, in --rounds interleaved rounds (default 3; 1 with
 *     --short): loader, pipeline, loader, pipeline, …, loader, each round's
 *     pipeline against the higher loader run beside it (the mirror caught up
 *     before each), the median round printed, and with --partition how busy
 *     the server's CPUs were under each; CPU-seconds per 1,000 Observations
 *     for this process (process.cpuUsage, load generator included) and for the
 *     FHIR server (/proc/<pid>/stat of the java process); RSS sampled every
 *     second.
 *  4. Latency at 50 % of the pipeline's maximum: receipt → FHIR commit per
 *     Observation from the timestamps in ClickHouse (received_at,
 *     fhir_committed_at), p50 / p99.
 *  Exits 1 when a message is lost or doubled: every Observation of every
 *  acknowledged message is in FHIR and in ClickHouse exactly once.
 *
 * Device timestamps are relative to now (inputs older than INPUT_MAX_AGE_MS are
 * refused).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { BundleEntry, Device, Observation } from 'fhir/r4.js';
import mqtt, { type MqttClient } from 'mqtt';
import { loadConfig, type Config } from '../src/config.js';
import { createFhirGateway } from '../src/fhir/gateway.js';
import { createFhirStore } from '../src/fhir/store.js';
import { createLogger } from '../src/logger.js';
import { loadMappings, normalizeMessage, type MappingSet } from '../src/mapping/index.js';
import { startPipeline, type Pipeline } from '../src/pipeline.js';
import { partitionCpus, pidListening, type CpuPartition } from './cpu-partition.js';
import { busyWhile, procCpuSeconds, threadCpu } from './proc-stat.js';
import { forgetKeys } from './redis-keys.js';
import { latencyBreakdown } from './latency-breakdown.js';
import { freePort } from '../test/support/free-port.js';

const { values: args } = parseArgs({
  options: {
    short: { type: 'boolean', default: false },
    messages: { type: 'string' },
    devices: { type: 'string', default: '20' },
    'ack-devices': { type: 'string' },
    'ack-rate': { type: 'string', default: '2' },
    'ack-seconds': { type: 'string' },
    'paced-seconds': { type: 'string' },
    'hapi-pid': { type: 'string' },
    // Phases to run (default all): ceiling, acks, pipeline (throughput + latency).
    only: { type: 'string' },
    // Interleaved throughput rounds (loader, pipeline, loader, …), each --messages.
    rounds: { type: 'string' },
    // Fix the paced load (Obs/s) instead of half the measured maximum, to compare runs.
    'paced-rate': { type: 'string' },
    // Print where the pipeline process's CPU went in the throughput phase, by thread.
    threads: { type: 'boolean', default: false },
    // The FHIR server (java, PostgreSQL) on half the CPUs, the pipeline on the other half.
    partition: { type: 'boolean', default: false },
  },
});
const SHORT = args.short;
const MESSAGES = Number(args.messages ?? (SHORT ? 300 : 3000));
const DEVICES = Number(args.devices);
const ACK_DEVICES = Number(args['ack-devices'] ?? (SHORT ? 50 : 1000));
const ACK_RATE = Number(args['ack-rate']);
const ACK_SECONDS = Number(args['ack-seconds'] ?? (SHORT ? 5 : 30));
const PACED_SECONDS = Number(args['paced-seconds'] ?? (SHORT ? 5 : 30));
const GRID: readonly (readonly [size: number, inflight: number])[] = SHORT
  ? [[200, 4]]
  : [
      [100, 4],
      [200, 2],
      [200, 4],
      [200, 8],
      [400, 4],
    ];
const ROUNDS = Math.max(1, Number(args.rounds ?? (SHORT ? 1 : 3)));
const PHASES = new Set((args.only ?? 'ceiling,acks,pipeline').split(','));
const PACED_RATE = args['paced-rate'] ? Number(args['paced-rate']) : undefined;
const run = Date.now().toString(36);
const problems: string[] = [];

// ---------------------------------------------------------------- helpers

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;
const pct = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};
const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : 'n/a');
const line = (label: string, figure: string, baseline: string) =>
  console.log(`${label.padEnd(34)} ${figure.padEnd(30)} ${baseline}`);

/** One message: three Observations (heart rate, SpO2, respiratory rate), timed `at`. */
function message(i: number, at: number): string {
  return JSON.stringify({
    timestamp: new Date(at).toISOString(),
    heartRate: 60 + (i % 40),
    spo2: 94 + (i % 6),
    respiratoryRate: 12 + (i % 8),
  });
}

function connect(url: string, username?: string, password?: string): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, {
      username,
      password,
      clientId: username ?? `bench-${Math.random().toString(36).slice(2)}`,
      reconnectPeriod: 0,
      connectTimeout: 60_000,
    });
    c.once('connect', () => resolve(c));
    c.once('error', (err) => {
      c.end(true);
      reject(err);
    });
  });
}

/** Runs `fn` over `items`, `width` at a time. */
async function pool<T, R>(items: readonly T[], width: number, fn: (t: T, i: number) => Promise<R>) {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}

/** The java process listening on the FHIR server's port, if it is on this machine. */
function javaPid(url: string): number | undefined {
  if (args['hapi-pid']) return Number(args['hapi-pid']);
  return pidListening(new URL(url).port);
}

// ---------------------------------------------------------------- 1. FHIR ceiling

/**
 * `count` Observations of `patients` patients, each with its own Device, in the
 * order the pipeline meets them (message i from device i mod patients).
 */
async function observationsFor(
  mappings: MappingSet,
  patients: readonly string[],
  count: number,
): Promise<Observation[]> {
  const out: Observation[] = [];
  const base = Date.now() - 2 * 3600_000;
  for (let i = 0; out.length < count; i++) {
    const patient = patients[i % patients.length]!;
    const r = await normalizeMessage(mappings, {
      payload: message(i, base + i * 1000),
      meta: { deviceId: patient, topic: 't', receivedAt: Date.now() },
      patientId: patient,
      identifierSystem: 'urn:iomt:observation',
    });
    out.push(
      ...r.observations.map((o) => ({
        ...o.observation,
        device: { reference: `Device/dev-${patient}` },
      })),
    );
  }
  return out.slice(0, count);
}

/** Observations/s of transaction Bundles of `size`, `inflight` at a time. */
async function loaderRate(fhirUrl: string, obs: Observation[], size: number, inflight: number) {
  const gateway = createFhirGateway({ baseUrl: fhirUrl, timeoutMs: 300_000 });
  const bundles: BundleEntry[][] = [];
  for (let i = 0; i < obs.length; i += size)
    bundles.push(
      obs.slice(i, i + size).map((o) => ({
        resource: o,
        request: { method: 'PUT', url: `Observation/${o.id ?? ''}` },
      })),
    );
  const started = process.hrtime.bigint();
  await pool(bundles, inflight, async (b) => {
    const r = await gateway.transaction(b, { representation: true });
    if ((r.entry ?? []).length !== b.length) throw new Error('loader: short transaction answer');
  });
  return obs.length / seconds(started);
}

/**
 * A loader's fresh patients and Devices (as many as the pipeline's devices) and
 * their Observations: the pipeline creates, it does not re-PUT.
 */
async function loaderSet(config: Config, mappings: MappingSet, label: string, count: number) {
  const gateway = createFhirGateway({ baseUrl: config.fhir.url, timeoutMs: 60_000 });
  const store = createFhirStore(gateway);
  const patients = Array.from({ length: DEVICES }, (_, d) => `bench-${run}-loader-${label}-${d}`);
  await store.ensurePatients(
    patients.map((id) => ({
      id,
      identifier: { system: 'urn:iomt:patient', value: id },
      create: true,
    })),
  );
  for (const patient of patients)
    await gateway.update<Device>({
      resourceType: 'Device',
      id: `dev-${patient}`,
      identifier: [{ system: 'urn:iomt:device', value: patient }],
      patient: { reference: `Patient/${patient}` },
    });
  return observationsFor(mappings, patients, count);
}

/** The grid (3,000 Observations a point), then the best point again with `count`. */
async function fhirCeiling(config: Config, mappings: MappingSet, count: number) {
  let best = { rate: 0, size: 200, inflight: 4 };
  if (GRID.length > 1)
    for (const [size, inflight] of GRID) {
      const obs = await loaderSet(config, mappings, `${size}-${inflight}`, Math.min(count, 3000));
      const rate = await loaderRate(config.fhir.url, obs, size, inflight);
      console.log(
        `  loader: transaction Bundles of ${size}, ${inflight} in flight: ${f0(rate)} Obs/s`,
      );
      if (rate > best.rate) best = { rate, size, inflight };
    }
  const obs = await loaderSet(config, mappings, 'best', count);
  const pid = javaPid(config.fhir.url);
  const java0 = pid ? procCpuSeconds(pid) : NaN;
  const rate = await loaderRate(config.fhir.url, obs, best.size, best.inflight);
  const javaCpuPer1000 = pid ? ((procCpuSeconds(pid) - java0) / obs.length) * 1000 : NaN;
  return { ...best, rate, javaCpuPer1000 };
}

// ---------------------------------------------------------------- 2. acknowledgements

interface Publisher {
  readonly client: MqttClient;
  readonly topic: string;
}

/** Every device publishes QoS 1 at `rate` msg/s for `secs`; acks/s and ack latency. */
async function paced(pubs: readonly Publisher[], rate: number, secs: number, at: () => number) {
  const latencies: number[] = [];
  let sent = 0;
  let failed = 0;
  const started = process.hrtime.bigint();
  const end = Date.now() + secs * 1000;
  await Promise.all(
    pubs.map(async (p, d) => {
      await sleep(Math.random() * (1000 / rate)); // spread the devices' phases
      const inflight: Promise<void>[] = [];
      for (let i = 0; Date.now() < end; i++) {
        const t0 = process.hrtime.bigint();
        sent++;
        inflight.push(
          new Promise<void>((resolve) =>
            p.client.publish(p.topic, message(d + i, at()), { qos: 1 }, (err) => {
              if (err) failed++;
              else latencies.push(seconds(t0) * 1000);
              resolve();
            }),
          ),
        );
        await sleep(1000 / rate);
      }
      await Promise.all(inflight);
    }),
  );
  const elapsed = seconds(started);
  return {
    sent,
    acked: latencies.length,
    failed,
    rate: latencies.length / elapsed,
    p50: pct(latencies, 0.5),
    p99: pct(latencies, 0.99),
  };
}

/** Burst: each client keeps `window` unacknowledged; returns acks/s. */
async function burst(pubs: readonly Publisher[], count: number, window: number, at: () => number) {
  const per = Math.ceil(count / pubs.length);
  const started = process.hrtime.bigint();
  await Promise.all(
    pubs.map(
      (p, d) =>
        new Promise<void>((resolve, reject) => {
          let next = 0;
          let acked = 0;
          const send = () => {
            if (next >= per) return;
            const i = next++;
            p.client.publish(p.topic, message(d * per + i, at()), { qos: 1 }, (err) => {
              if (err) return reject(err);
              if (++acked === per) resolve();
              else send();
            });
          };
          for (let k = 0; k < Math.max(1, Math.floor(window / pubs.length)); k++) send();
        }),
    ),
  );
  return (per * pubs.length) / seconds(started);
}

/** A device timestamp source: unique, increasing, in the recent past. */
function clock(startMsAgo: number) {
  let t = Date.now() - startMsAgo;
  return () => (t += 1);
}

async function startMosquitto(): Promise<{ url: string; proc?: ChildProcess }> {
  const port = await freePort();
  const proc = spawn('mosquitto', ['-p', String(port)], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      (await connect(`mqtt://127.0.0.1:${port}`)).end(true);
      return { url: `mqtt://127.0.0.1:${port}`, proc };
    } catch {
      await sleep(100);
    }
  }
  proc.kill();
  return { url: process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883' };
}

/** `iomt broker` on `port` (the bench's Redis prefix and limits, from the environment). */
async function startBrokerProcess(config: Config, port: number): Promise<ChildProcess> {
  // BENCH_BROKER_NODE_ARGS: e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the broker.
  const nodeArgs = (process.env.BENCH_BROKER_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const proc = spawn(process.execPath, [...nodeArgs, 'bin/iomt.mjs', 'broker'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      ...process.env,
      QUEUE_PREFIX: config.redis.prefix,
      MQTT_HOST: '127.0.0.1',
      MQTT_PORT: String(port),
      MQTT_DEVICE_MAX_RATE: String(config.mqtt.deviceMaxRate),
      MQTT_DEVICE_BURST: String(config.mqtt.deviceBurst),
      MQTT_AUTH_MAX_PENDING_PER_ADDRESS: String(config.mqtt.authMaxPendingPerAddress),
      MQTT_AUTH_MAX_PENDING: String(config.mqtt.authMaxPending),
      MQTT_AUTH_MAX_WAIT_MS: String(config.mqtt.authMaxWaitMs),
      // No worker drains the ingest queue in this phase: the backpressure, which
      // meters acknowledgements to the workers' drain rate, would measure the
      // absent workers (every PUBACK after BROKER_BACKPRESSURE_MAX_WAIT_MS), not
      // the broker. Mosquitto has none; the durable enqueue before PUBACK stays.
      BROKER_BACKLOG_HIGH: '100000000',
      BROKER_BACKLOG_LOW: '99999999',
      LOG_LEVEL: 'warn',
    },
  });
  for (let i = 0; i < 600; i++) {
    if (proc.exitCode !== null) throw new Error(`iomt broker exited with ${proc.exitCode}`);
    const open = await new Promise<boolean>((resolve) => {
      const s = createConnection(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (open) return proc;
    await sleep(100);
  }
  proc.kill();
  throw new Error('iomt broker did not listen within 60 s');
}

/** Resident set of a process, bytes (/proc/<pid>/status VmRSS). */
function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

async function enrolAll(p: Pipeline, ids: readonly string[], patientOf: (id: string) => string) {
  return pool(ids, 4, async (id) => {
    const { secret } = await p.devices.add(id, {
      actor: 'bench',
      source: 'cli',
      patient: patientOf(id),
      newPatient: true,
      at: Date.now() - 2 * 24 * 3600_000,
    });
    return secret;
  });
}

async function connectAll(url: string, ids: readonly string[], secrets?: readonly string[]) {
  return pool(ids, 16, async (id, i) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return {
          client: await connect(url, secrets ? id : undefined, secrets?.[i]),
          topic: secrets ? `devices/${id}/telemetry` : `bench/${run}/${id}`,
        };
      } catch (err) {
        if (attempt >= 5) throw err;
        await sleep(500 * attempt);
      }
    }
  });
}

/** Messages held by the ingest queue's jobs (what the broker acknowledged). */
async function messagesInRedis(p: Pipeline): Promise<number> {
  const jobs = await p.queues.ingest.getJobs(['waiting', 'delayed', 'active', 'prioritized']);
  return jobs.reduce((n, j) => n + (j?.data.messages.length ?? 0), 0);
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const chdb = await mkdtemp(path.join(tmpdir(), 'iomt-bench-'));
  const overrides = {
    redis: { prefix: `bench-${run}` },
    mqtt: {
      host: '127.0.0.1',
      port: 0,
      // The per-device throttle is not what is measured (realistic rates stay under it;
      // the burst raises it) and every connection comes from 127.0.0.1.
      deviceMaxRate: 1000,
      deviceBurst: 1000,
      authMaxPendingPerAddress: 2000,
      authMaxPending: 5000,
      authMaxWaitMs: 60_000,
    },
    admin: { port: 0 },
    clickhouse: { url: undefined, dataPath: chdb },
  };
  let config = loadConfig(process.env, overrides);
  const loaded = await loadMappings(config.mappings.dir);
  if (!loaded.ok) throw new Error('mapping templates do not validate');
  const hapiPid = javaPid(config.fhir.url);
  console.log(
    `bench${SHORT ? ' --short' : ''}: FHIR ${config.fhir.url} (java pid ${hapiPid ?? 'unknown'}); ${MESSAGES} messages × 3 Observations from ${DEVICES} devices; acks: ${ACK_DEVICES} devices × ${ACK_RATE} msg/s for ${ACK_SECONDS} s`,
  );
  console.log(`${'figure'.padEnd(34)} ${'pipeline / ours'.padEnd(30)} baseline (same run)`);

  let partition: CpuPartition | undefined;
  if (args.partition) {
    if (hapiPid === undefined)
      throw new Error('--partition: no FHIR server process on this machine');
    partition = partitionCpus(hapiPid, new URL(config.redis.url).port || 6379);
    console.log(
      `partition: FHIR server (java, PostgreSQL) on CPU ${partition.server}; pipeline (this process, its children, Redis) on CPU ${partition.pipeline}`,
    );
  }
  try {
    // 1. FHIR ceiling.
    const measured = PHASES.has('ceiling')
      ? await fhirCeiling(config, loaded.mappings, MESSAGES * 3)
      : undefined;
    const ceiling = measured
      ? {
          ...measured,
          again: async (label: string) =>
            loaderRate(
              config.fhir.url,
              await loaderSet(config, loaded.mappings, label, MESSAGES * 3),
              measured.size,
              measured.inflight,
            ),
        }
      : { rate: NaN, size: config.fhir.batchSize, inflight: 4, javaCpuPer1000: NaN };
    line(
      'FHIR ceiling (best loader)',
      `${f0(ceiling.rate)} Obs/s`,
      `transaction Bundles of ${ceiling.size}, ${ceiling.inflight} in flight`,
    );
    config = loadConfig(process.env, {
      ...overrides,
      fhir: { batchSize: ceiling.size, concurrencyMax: Math.max(8, ceiling.inflight * 2) },
    });
    const log = createLogger('warn');

    // 2. Acknowledgements: Mosquitto, then our broker role alone.
    if (PHASES.has('acks')) await acks(config, log);
    if (PHASES.has('pipeline'))
      await pipelinePhases(config, log, ceiling, hapiPid, partition?.serverCpus);
  } finally {
    partition?.undo();
    await rm(chdb, { recursive: true, force: true });
    // This run's keys (devices, queues, templates: all under `bench-<run>`) leave Redis.
    await forgetKeys(config.redis.url, `*bench-${run}*`);
  }
}

async function acks(config: Config, log: ReturnType<typeof createLogger>): Promise<void> {
  const mosq = await startMosquitto();
  const ackIds = Array.from({ length: ACK_DEVICES }, (_, d) => `bench-${run}-a${d}`);
  let mosqPaced;
  let mosqBurst: number;
  {
    const pubs = await connectAll(mosq.url, ackIds);
    mosqPaced = await paced(pubs, ACK_RATE, ACK_SECONDS, clock(3600_000));
    for (const p of pubs) p.client.end(true);
    const few = await connectAll(mosq.url, ackIds.slice(0, DEVICES));
    mosqBurst = await burst(few, MESSAGES, 100, clock(3600_000));
    for (const p of few) p.client.end(true);
  }
  mosq.proc?.kill();
  {
    // Our broker role in a process of its own, as deployed (and as Mosquitto runs):
    // the 1,000 bench clients must not share its event loop. This process only
    // enrols the devices and counts what reached Redis.
    const brokerOnly = await startPipeline(config, [], log);
    const brokerPort = await freePort();
    const brokerProc = await startBrokerProcess(config, brokerPort);
    try {
      const url = `mqtt://127.0.0.1:${brokerPort}`;
      const t0 = process.hrtime.bigint();
      const secrets = await enrolAll(brokerOnly, ackIds, (id) => `${id}-p`);
      const pubs = await connectAll(url, ackIds, secrets);
      console.log(
        `  ${ACK_DEVICES} devices enrolled and connected to our broker in ${seconds(t0).toFixed(0)} s`,
      );
      const ours = await paced(pubs, ACK_RATE, ACK_SECONDS, clock(2 * 3600_000));
      const held = await messagesInRedis(brokerOnly);
      line(
        `QoS 1 acks, ${ACK_DEVICES} devices × ${ACK_RATE}/s`,
        `${f0(ours.rate)} acks/s (${(ours.rate / mosqPaced.rate).toFixed(2)}×)`,
        `Mosquitto ${f0(mosqPaced.rate)} acks/s`,
      );
      line(
        '  ack latency p50 / p99',
        `${ours.p50.toFixed(1)} / ${ours.p99.toFixed(1)} ms`,
        `Mosquitto ${mosqPaced.p50.toFixed(1)} / ${mosqPaced.p99.toFixed(1)} ms`,
      );
      line(
        '  acknowledged messages in Redis',
        `${held} of ${ours.acked} acked`,
        `(${ours.failed} refused)`,
      );
      if (held < ours.acked)
        problems.push(`acks: ${ours.acked - held} acknowledged messages not in Redis`);
      for (const p of pubs) p.client.end(true);
      const few = pubs.slice(0, DEVICES).map((p) => p.topic.split('/')[1]!);
      const fewPubs = await connectAll(url, few, secrets.slice(0, DEVICES));
      const oursBurst = await burst(fewPubs, MESSAGES, 100, clock(3 * 3600_000));
      line(
        `Burst acks, ${DEVICES} devices, 100 in flight`,
        `${f0(oursBurst)} acks/s (${(oursBurst / mosqBurst).toFixed(2)}×)`,
        `Mosquitto ${f0(mosqBurst)} acks/s (throttle raised)`,
      );
      for (const p of fewPubs) p.client.end(true);
      line(
        'Broker process RSS (ack phase)',
        `${(rssOf(brokerProc.pid!) / 2 ** 20).toFixed(0)} MB`,
        '(its own process; no baseline)',
      );
      await brokerOnly.queues.ingest.obliterate({ force: true });
    } finally {
      brokerProc.kill();
      await brokerOnly.close();
    }
  }
}

/** Bundles sent so far, their Observations and the jobs that shared them (the histograms' sums). */
async function bundleStats(p: Pipeline) {
  const sumOf = async (h: typeof p.metrics.fhirBundleEntries) => {
    const { name, values } = await h.get();
    const pick = (n: string) => values.find((v) => v.metricName === n)?.value ?? 0;
    return { count: pick(`${name}_count`), sum: pick(`${name}_sum`) };
  };
  const e = await sumOf(p.metrics.fhirBundleEntries);
  const parts = await sumOf(p.metrics.fhirBundleParts);
  return { count: e.count, entries: e.sum, parts: parts.sum };
}

async function pipelinePhases(
  config: Config,
  log: ReturnType<typeof createLogger>,
  ceiling: {
    rate: number;
    inflight: number;
    javaCpuPer1000: number;
    again?: (label: string) => Promise<number>;
  },
  hapiPid: number | undefined,
  /** Partitioned: the server side's CPUs, whose busy share each round prints. */
  serverCpus?: readonly number[],
): Promise<void> {
  // 3. The whole pipeline in this process.
  const pipeline = await startPipeline(config, ['broker', 'worker'], log);
  const rss: number[] = [];
  const sampler = setInterval(() => rss.push(process.memoryUsage().rss), 1000);
  try {
    const url = `mqtt://127.0.0.1:${pipeline.broker!.port}`;
    const ids = Array.from({ length: DEVICES }, (_, d) => `bench-${run}-e${d}`);
    const patients = ids.map((id) => `${id}-p`);
    const secrets = await enrolAll(pipeline, ids, (id) => `${id}-p`);
    const pubs = await connectAll(url, ids, secrets);
    const written = async () =>
      (await pipeline.metrics.fhirResources.get()).values.reduce((s, v) => s + v.value, 0);
    const waitWritten = async (n: number, label: string) => {
      const t0 = Date.now();
      while ((await written()) < n) {
        if (Date.now() - t0 > 900_000)
          throw new Error(`${label}: only ${await written()}/${n} written after 900 s`);
        await sleep(50);
      }
    };
    // Warm-up: Devices and Patients written, the JIT warm.
    await burst(pubs, DEVICES * 5, DEVICES, clock(4 * 3600_000));
    let expectedMessages = DEVICES * 5;
    await waitWritten(expectedMessages * 3, 'warm-up');

    // The queue's own server is part of the pipeline's cost (it shares the CPUs too).
    const redisPid = pidListening(new URL(config.redis.url).port || 6379);
    const store = pipeline.analyticsStore!;
    const inList = patients.map((p) => `'${p}'`).join(',');
    const count = async () =>
      Number(
        (
          await store.queryRows<{ n: string }>(
            `SELECT uniqExact(id) AS n FROM observations WHERE patient_id IN (${inList})`,
          )
        )[0]?.n ?? 0,
      );
    /**
     * Waits (up to 300 s) until the mirror has every Observation so far: no
     * insert runs under the next loader, and the final count sees them all
     * (a shortfall is then reported as lost).
     */
    const mirrored = async () => {
      const t0 = Date.now();
      while ((await count()) < expectedMessages * 3 && Date.now() - t0 < 300_000) await sleep(250);
    };

    // Interleaved rounds: loader, pipeline, loader, pipeline, …, loader. The
    // server's ceiling drifts over a run (its database grows, vacuum and
    // checkpoints come and go, a shared host's neighbours), so each round's
    // pipeline is compared with the loader runs on either side of it, the
    // higher of the two, and the figure is the median round.
    const total = {
      obs: 0,
      cpu: 0,
      java: 0,
      redis: 0,
      bundles: 0,
      entries: 0,
      parts: 0,
    };
    const threadTotal = new Map<string, number>();
    const slots: { limit: number; inFlight: number }[] = [];
    const rounds: { throughput: number; baseline: number }[] = [];
    let loaderBefore = ceiling.rate;
    const perDevice = Math.ceil(MESSAGES / DEVICES);
    for (let round = 1; round <= ROUNDS; round++) {
      const cpu0 = process.cpuUsage();
      const java0 = hapiPid ? procCpuSeconds(hapiPid) : NaN;
      const redis0 = redisPid ? procCpuSeconds(redisPid) : NaN;
      const before = await written();
      const bundles0 = await bundleStats(pipeline);
      const threads0 = args.threads ? threadCpu() : undefined;
      const started = process.hrtime.bigint();
      // The FHIR writer's adaptive limit over the phase (iomt_fhir_bundle_slots).
      const slotSampler = setInterval(() => {
        void pipeline.metrics.fhirBundleSlots.get().then((g) => {
          const v = (state: string) => g.values.find((x) => x.labels.state === state)?.value ?? NaN;
          slots.push({ limit: v('limit'), inFlight: v('in_flight') });
        });
      }, 200);
      const { busy } = await busyWhile(serverCpus, async () => {
        await burst(pubs, perDevice * DEVICES, 200, clock((6 + round) * 3600_000));
        expectedMessages += perDevice * DEVICES;
        await waitWritten(before + perDevice * DEVICES * 3, `throughput, round ${round}`);
      });
      const elapsed = seconds(started);
      clearInterval(slotSampler);
      const bundles1 = await bundleStats(pipeline);
      const cpu = process.cpuUsage(cpu0);
      const obs = perDevice * DEVICES * 3;
      total.obs += obs;
      total.cpu += (cpu.user + cpu.system) / 1e6;
      total.java += hapiPid ? procCpuSeconds(hapiPid) - java0 : NaN;
      total.redis += redisPid ? procCpuSeconds(redisPid) - redis0 : NaN;
      total.bundles += bundles1.count - bundles0.count;
      total.entries += bundles1.entries - bundles0.entries;
      total.parts += bundles1.parts - bundles0.parts;
      if (threads0)
        for (const [name, secs] of threadCpu())
          threadTotal.set(name, (threadTotal.get(name) ?? 0) + secs - (threads0.get(name) ?? 0));
      const throughput = obs / elapsed;
      let after = NaN;
      let afterBusy = NaN;
      if (ceiling.again) {
        await mirrored();
        ({ value: after, busy: afterBusy } = await busyWhile(serverCpus, () =>
          ceiling.again!(`again-${round}`),
        ));
      }
      // The higher loader run beside the round (only the one before it without a ceiling phase).
      const baseline = Math.max(loaderBefore, after || 0);
      rounds.push({ throughput, baseline });
      const busyNote = serverCpus
        ? `; server CPUs busy ${(busy * 100).toFixed(0)} % (loader after ${(afterBusy * 100).toFixed(0)} %)`
        : '';
      line(
        `  round ${round}: pipeline`,
        `${f0(throughput)} Obs/s (${(throughput / baseline).toFixed(2)}×)`,
        `loader before ${f0(loaderBefore)}, after ${f0(after)} Obs/s${busyNote}`,
      );
      loaderBefore = after;
    }
    // With an even number of rounds, the lower of the middle two (never the luckier).
    const median = (xs: number[]) =>
      [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)]!;
    const ratios = rounds.map((r) => r.throughput / r.baseline);
    const throughput = median(rounds.map((r) => r.throughput));
    const obs = total.obs;
    line(
      'Pipeline end to end',
      `${f0(throughput)} Obs/s (${median(ratios).toFixed(2)}×)`,
      ROUNDS > 1
        ? `median of ${ROUNDS} rounds (${ratios.map((x) => x.toFixed(2)).join(', ')}), each against the higher loader run beside it; before this work 105 Obs/s`
        : `FHIR ceiling ${f0(rounds[0]!.baseline)} Obs/s, the higher loader run beside it; before this work 105 Obs/s`,
    );
    line(
      'CPU-s per 1,000 Observations',
      `pipeline ${((total.cpu / obs) * 1000).toFixed(2)}, Redis ${((total.redis / obs) * 1000).toFixed(2)}`,
      `FHIR server ${((total.java / obs) * 1000).toFixed(2)}; under the best loader ${ceiling.javaCpuPer1000.toFixed(2)} (java /proc stat)`,
    );
    for (const [name, secs] of [...threadTotal].sort((a, b) => b[1] - a[1]).slice(0, 10))
      line(`  thread ${name}`, `${((secs / obs) * 1000).toFixed(3)} CPU-s / 1,000 Obs`, '');
    line(
      '  transaction Bundles sent',
      `${total.bundles}, mean ${f0(total.entries / total.bundles)} Observations, ${(total.parts / total.bundles).toFixed(1)} jobs`,
      `the loader: Bundles of ${config.fhir.batchSize}`,
    );
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const limits = slots.map((x) => x.limit);
    line(
      '  Bundle slots (adaptive limit)',
      `limit ${Math.min(...limits)}–${Math.max(...limits)}, mean ${mean(limits).toFixed(1)}; in flight mean ${mean(slots.map((x) => x.inFlight)).toFixed(1)}`,
      `the loader: ${ceiling.inflight} in flight; FHIR_CONCURRENCY_MAX ${config.fhir.concurrencyMax}`,
    );

    // 4. Latency at half the pipeline's maximum.
    const halfMsgPerS = Math.max(1, PACED_RATE ? PACED_RATE / 3 : throughput / 3 / 2);
    const pacedFrom = Date.now();
    const before = await written();
    const r = await paced(pubs, halfMsgPerS / pubs.length, PACED_SECONDS, clock(6 * 3600_000));
    expectedMessages += r.acked;
    await waitWritten(before + r.acked * 3, 'paced');
    // The mirror catches up, then latency from the rows' own timestamps.
    await mirrored();
    const lat = await store.queryRows<{ p50: number; p99: number; n: string }>(
      `SELECT quantileExact(0.5)(d) AS p50, quantileExact(0.99)(d) AS p99, count() AS n FROM (
         SELECT dateDiff('millisecond', received_at, fhir_committed_at) AS d
         FROM observations FINAL WHERE patient_id IN (${inList})
           AND received_at >= fromUnixTimestamp64Milli(${pacedFrom}))`,
    );
    for (const hop of await latencyBreakdown(
      pipeline.queues.ingest,
      pipeline.queues.fhir,
      pacedFrom,
    ))
      line(`  ${hop.name}`, `p50 ${f0(hop.p50)} ms, p99 ${f0(hop.p99)} ms`, '(BullMQ job times)');
    line(
      `Receipt → FHIR commit at ${PACED_RATE ? 'fixed' : '50 %'} load`,
      `p50 ${f0(Number(lat[0]?.p50))} ms, p99 ${f0(Number(lat[0]?.p99))} ms`,
      `${f0(halfMsgPerS * 3)} Obs/s for ${PACED_SECONDS} s, ${lat[0]?.n} Observations`,
    );

    // Lost or doubled: every Observation once in FHIR and in ClickHouse.
    const inClickHouse = await count();
    const gateway = createFhirGateway({ baseUrl: config.fhir.url, timeoutMs: 120_000 });
    let inFhir = 0;
    for (const p of patients) {
      const a = await fetch(`${gateway.baseUrl}/Observation?subject=Patient/${p}&_summary=count`, {
        headers: { accept: 'application/fhir+json', 'cache-control': 'no-cache' },
      });
      inFhir += ((await a.json()) as { total?: number }).total ?? 0;
    }
    const expected = expectedMessages * 3;
    line(
      'Observations (lost / doubled check)',
      `FHIR ${inFhir}, ClickHouse ${inClickHouse}`,
      `expected ${expected}`,
    );
    if (inFhir !== expected)
      problems.push(`FHIR holds ${inFhir} Observations, expected ${expected}`);
    if (inClickHouse !== expected)
      problems.push(`ClickHouse holds ${inClickHouse} Observations, expected ${expected}`);
    const dead = await pipeline.queues.deadLetter.getJobCounts();
    const deadN = Object.values(dead).reduce((a, b) => a + b, 0);
    if (deadN > 0) problems.push(`${deadN} dead letters`);
    for (const p of pubs) p.client.end(true);
  } finally {
    clearInterval(sampler);
    const mb = (b: number) => (b / 2 ** 20).toFixed(0);
    if (rss.length > 0)
      line(
        'Broker + worker RSS (one process)',
        `max ${mb(Math.max(...rss))} MB, last ${mb(rss.at(-1)!)} MB`,
        `first ${mb(rss[0]!)} MB; ${rss.length} samples (bench clients included)`,
      );
    await pipeline.close();
  }
}

main().then(
  () => {
    if (problems.length > 0) {
      console.error(`FAILED: ${problems.join('; ')}`);
      process.exit(1);
    }
    console.log('no message lost or doubled');
    process.exit(0);
  },
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
