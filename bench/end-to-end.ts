/**
 * End-to-end benchmark with two baselines measured in the same run:
 *
 *   1. QoS 1 acknowledgement rate: our broker (PUBACK after the durable
 *      enqueue into Redis) against Mosquitto (PUBACK with no durability wait),
 *      with the same client, message size and window of messages in flight.
 *   2. Throughput into FHIR: the whole pipeline (MQTT → Redis → mapping → batch
 *      Bundles) against the FHIR server alone, fed the same Observations as
 *      batch Bundles by a client with the same request concurrency.
 *
 * It also prints the receipt → FHIR-commit latency (p50 / p99) that the
 * pipeline measured for every Observation.
 *
 *   npx tsx bench/end-to-end.ts [--messages 2000] [--devices 10] [--inflight 100]
 *
 * Needs Redis (REDIS_URL), a FHIR server (FHIR_URL, e.g. `bash scripts/hapi.sh
 * start`) and, for the Mosquitto baseline, Mosquitto on MOSQUITTO_URL
 * (default mqtt://127.0.0.1:1883; skipped with a note when absent).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import type { Device, Observation } from 'fhir/r4.js';
import { loadConfig } from '../src/config.js';
import { createFhirGateway } from '../src/fhir/gateway.js';
import { createFhirStore } from '../src/fhir/store.js';
import { createLogger } from '../src/logger.js';
import { loadMappings, normalizeMessage, type MappingSet } from '../src/mapping/index.js';
import { startPipeline, type Pipeline } from '../src/pipeline.js';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '2000' },
    devices: { type: 'string', default: '10' },
    inflight: { type: 'string', default: '100' },
  },
});
const MESSAGES = Number(args.messages);
const DEVICES = Number(args.devices);
const INFLIGHT = Number(args.inflight);
const runId = Date.now().toString(36);

function message(i: number, base: number): string {
  // Three Observations per message: heart rate, SpO2, respiratory rate.
  return JSON.stringify({
    timestamp: new Date(base + i * 1000).toISOString(),
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
      clientId: `bench-${Math.random().toString(36).slice(2)}`,
      reconnectPeriod: 0,
    });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

/** Publishes `count` QoS 1 messages per client with at most `inflight` unacknowledged; returns acks/s. */
async function ackRate(
  clients: { client: MqttClient; topic: string }[],
  count: number,
  base: number,
): Promise<number> {
  const started = process.hrtime.bigint();
  await Promise.all(
    clients.map(async ({ client, topic }, d) => {
      let next = 0;
      const perClient = Math.ceil(count / clients.length);
      const window = Math.max(1, Math.floor(INFLIGHT / clients.length));
      await new Promise<void>((resolve, reject) => {
        let acked = 0;
        const send = () => {
          if (next >= perClient) return;
          const i = next++;
          client.publish(topic, message(d * perClient + i, base), { qos: 1 }, (err) => {
            if (err) return reject(err);
            if (++acked === perClient) resolve();
            else send();
          });
        };
        for (let k = 0; k < window; k++) send();
      });
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return (Math.ceil(count / clients.length) * clients.length) / seconds;
}

/** A bench device, associated with its patient from before the bench's device timestamps. */
async function enrolBench(p: Pipeline, deviceId: string, patientId: string): Promise<string> {
  const { secret } = await p.devices.add(deviceId, {
    actor: 'bench',
    source: 'cli',
    patient: patientId,
    newPatient: true,
    at: Date.parse('2025-12-01T00:00:00Z'),
  });
  return secret;
}

async function fhirAloneRate(
  fhirUrl: string,
  mappings: MappingSet,
  count: number,
  concurrency: number,
  batch: number,
): Promise<number> {
  // The same Observations the pipeline would write, for patients that exist.
  const gateway = createFhirGateway({ baseUrl: fhirUrl, timeoutMs: 60_000 });
  const store = createFhirStore(gateway);
  const patient = `bench-${runId}-baseline`;
  await store.ensurePatients([
    { id: patient, identifier: { system: 'urn:iomt:patient', value: patient }, create: true },
  ]);
  await gateway.transaction([
    {
      resource: {
        resourceType: 'Device',
        id: `dev-${patient}`,
        identifier: [{ system: 'urn:iomt:device', value: patient }],
        patient: { reference: `Patient/${patient}` },
      } as Device,
      request: { method: 'PUT', url: `Device/dev-${patient}` },
    },
  ]);
  const observations: Observation[] = [];
  const base = Date.parse('2026-01-01T00:00:00Z');
  for (let i = 0; observations.length < count; i++) {
    const out = await normalizeMessage(mappings, {
      payload: message(i, base),
      meta: { deviceId: patient, topic: 't', receivedAt: base + i * 1000 },
      patientId: patient,
      identifierSystem: 'urn:iomt:observation',
    });
    observations.push(...out.observations.map((o) => o.observation));
  }
  const chunks: Observation[][] = [];
  for (let i = 0; i < observations.length; i += batch)
    chunks.push(observations.slice(i, i + batch));
  const started = process.hrtime.bigint();
  let cursor = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (cursor < chunks.length) {
        const chunk = chunks[cursor++]!;
        const outcomes = await store.writeObservations(chunk);
        if (outcomes.some((o) => !o.ok)) throw new Error('baseline write rejected');
      }
    }),
  );
  return observations.length / (Number(process.hrtime.bigint() - started) / 1e9);
}

function quantile(buckets: { le: number; count: number }[], total: number, q: number): string {
  const target = total * q;
  const hit = buckets.find((b) => b.count >= target);
  return hit ? (Number.isFinite(hit.le) ? `≤ ${hit.le * 1000} ms` : '> 60 s') : 'n/a';
}

async function main(): Promise<void> {
  const chdb = await mkdtemp(path.join(tmpdir(), 'iomt-bench-'));
  const config = loadConfig(process.env, {
    redis: { prefix: `bench-${runId}` },
    mqtt: { host: '127.0.0.1', port: 0 },
    admin: { port: 0 },
    clickhouse: { url: undefined, dataPath: chdb },
  });
  const loaded = await loadMappings(config.mappings.dir);
  if (!loaded.ok) throw new Error('mapping templates do not validate');
  console.log(
    `bench: ${MESSAGES} messages (3 Observations each) from ${DEVICES} devices, ${INFLIGHT} in flight; FHIR ${config.fhir.url}`,
  );

  // 1. FHIR server alone (baseline for throughput).
  const fhirAlone = await fhirAloneRate(
    config.fhir.url,
    loaded.mappings,
    Math.min(MESSAGES * 3, 3000),
    config.worker.concurrency,
    config.fhir.batchSize,
  );
  console.log(
    `FHIR server alone:        ${fhirAlone.toFixed(0)} Observations/s (batch ${config.fhir.batchSize}, ${config.worker.concurrency} concurrent)`,
  );

  // 2. Mosquitto ack rate (baseline for PUBACK speed).
  const mosquittoUrl = process.env.MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';
  try {
    const clients = await Promise.all(
      Array.from({ length: DEVICES }, async (_, d) => ({
        client: await connect(mosquittoUrl),
        topic: `bench/${runId}/${d}`,
      })),
    );
    const rate = await ackRate(clients, MESSAGES, Date.parse('2026-01-01T00:00:00Z'));
    console.log(`Mosquitto QoS 1 acks:     ${rate.toFixed(0)} msg/s (no durable enqueue)`);
    for (const c of clients) c.client.end(true);
  } catch (err) {
    console.log(`Mosquitto QoS 1 acks:     skipped (${(err as Error).message})`);
  }

  const log = createLogger('warn');

  // 3. Our broker alone (the broker role, as deployed apart from the workers).
  {
    const brokerOnly = await startPipeline(config, ['broker'], log);
    try {
      const url = `mqtt://127.0.0.1:${brokerOnly.broker!.port}`;
      const clients = await Promise.all(
        Array.from({ length: DEVICES }, async (_, d) => {
          const id = `bench-${runId}-b${d}`;
          const secret = await enrolBench(brokerOnly, id, `bench-${runId}-p${d}`);
          return { client: await connect(url, id, secret), topic: `devices/${id}/telemetry` };
        }),
      );
      const rate = await ackRate(clients, MESSAGES, Date.parse('2026-01-15T00:00:00Z'));
      console.log(
        `Our broker alone, acks:   ${rate.toFixed(0)} msg/s (broker role only; PUBACK after the job is in Redis)`,
      );
      for (const c of clients) c.client.end(true);
      await brokerOnly.queues.ingest.obliterate({ force: true });
    } finally {
      await brokerOnly.close();
    }
  }

  // 4. The whole pipeline in one process.
  const pipeline = await startPipeline(config, ['broker', 'worker'], log);
  try {
    const url = `mqtt://127.0.0.1:${pipeline.broker!.port}`;
    const clients = await Promise.all(
      Array.from({ length: DEVICES }, async (_, d) => {
        const id = `bench-${runId}-${d}`;
        const secret = await enrolBench(pipeline, id, `bench-${runId}-p${d}`);
        return { client: await connect(url, id, secret), topic: `devices/${id}/telemetry` };
      }),
    );
    const started = process.hrtime.bigint();
    const rate = await ackRate(clients, MESSAGES, Date.parse('2026-02-01T00:00:00Z'));
    console.log(
      `Broker beside workers:    ${rate.toFixed(0)} msg/s acks (one process runs broker and workers)`,
    );
    const expected = Math.ceil(MESSAGES / DEVICES) * DEVICES * 3;
    const written = async () =>
      (await pipeline.metrics.fhirResources.get()).values.reduce((s, v) => s + v.value, 0);
    let last = 0;
    while ((last = await written()) < expected) {
      await new Promise((r) => setTimeout(r, 100));
      if (Number(process.hrtime.bigint() - started) / 1e9 > 600)
        throw new Error(`only ${last}/${expected} written after 600 s`);
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const throughput = expected / seconds;
    console.log(
      `Pipeline end to end:      ${throughput.toFixed(0)} Observations/s (${expected} in ${seconds.toFixed(1)} s) = ${((throughput / fhirAlone) * 100).toFixed(0)} % of the FHIR server alone`,
    );
    // Latency is measured apart from the burst, at a pace the FHIR server keeps up with.
    pipeline.metrics.endToEndSeconds.reset();
    const pacedSeconds = 10;
    const pacedPerSecond = Math.max(1, Math.floor(fhirAlone / 3 / 4)); // a quarter of the server's capacity
    const before = await written();
    for (let t = 0; t < pacedSeconds * pacedPerSecond; t++) {
      const { client, topic } = clients[t % clients.length]!;
      client.publish(topic, message(100_000 + t, Date.parse('2026-03-01T00:00:00Z')), { qos: 1 });
      await new Promise((r) => setTimeout(r, 1000 / pacedPerSecond));
    }
    while ((await written()) < before + pacedSeconds * pacedPerSecond * 3)
      await new Promise((r) => setTimeout(r, 100));
    console.log(
      `Paced phase:              ${pacedPerSecond} msg/s for ${pacedSeconds} s (${pacedPerSecond * 3} Observations/s)`,
    );
    const hist = (await pipeline.metrics.endToEndSeconds.get()).values;
    const buckets = hist
      .filter((v) => v.metricName?.endsWith('_bucket'))
      .map((v) => ({ le: Number(v.labels.le), count: v.value }));
    const total = hist.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
    console.log(
      `Receipt → FHIR commit:    p50 ${quantile(buckets, total, 0.5)}, p99 ${quantile(buckets, total, 0.99)} (histogram buckets, ${total} Observations)`,
    );
    for (const c of clients) c.client.end(true);
  } finally {
    await pipeline.close();
    await rm(chdb, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
