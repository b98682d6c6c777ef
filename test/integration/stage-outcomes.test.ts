/**
 * One final outcome per message, on every path, and what the runner promises
 * (issue: one stage contract) — against the real Redis, BullMQ, HAPI and the
 * ClickHouse engine:
 *  - each path leaves each message exactly one final row in device_messages
 *    (read with FINAL): a normalize refusal, a FHIR entry refused, a FHIR job
 *    whose transient retries ran out, the FHIR-stage replays that then
 *    succeed, and an analytics envelope the mirror cannot flatten;
 *  - transient retries do not spend a job's attempts;
 *  - an unexpected error in one message of a 500-message job dead-letters that
 *    message only, and the other 499 reach FHIR in the same run.
 */
import { Worker, type Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DeviceService, queueAssociationSync } from '../../src/devices/index.js';
import { DeadLetterStore } from '../../src/dlq/index.js';
import { createIdentityService } from '../../src/fhir/identity.js';
import { createLogger } from '../../src/logger.js';
import type { IngestJobData, MessageOutcome, TelemetryMessage } from '../../src/queues.js';
import { createRedis } from '../../src/queue-runtime.js';
import { createNormalizeStage } from '../../workers/normalize.js';
import { createRunner } from '../../workers/runner.js';
import {
  connectDevice,
  enrol,
  fhirSearch,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

const fhirUrl = inject('fhirUrl');
const ACTOR = { actor: 'test', source: 'api' } as const;

describe('one final outcome per message, on every path', () => {
  let proxy: TcpProxy;
  let h: Harness;

  beforeAll(async () => {
    proxy = await startTcpProxy(new URL(fhirUrl));
    h = await startHarness({
      fhirUrl: proxy.url,
      overrides: { worker: { retryCapMs: 300, maxTransientRetries: 2 } },
    });
  });
  afterAll(async () => {
    await h?.close();
    await proxy?.close();
  });

  const outcomes = (deviceId: string) =>
    h.pipeline.analyticsStore!.queryRows<{
      message_id: string;
      outcome: string;
      error_code: string;
      error_stage: string;
      n: string;
    }>(
      `SELECT message_id, outcome, error_code, error_stage, count() OVER (PARTITION BY message_id) AS n
       FROM device_messages FINAL WHERE mqtt_device_id = '${deviceId}' ORDER BY received_at`,
    );
  const dlq = () =>
    new DeadLetterStore(h.pipeline.queues, {
      associations: { reader: h.pipeline.associations, createPatients: false },
    });

  it('a refusal, a refused entry, exhausted retries, two replays that succeed, and a bad envelope', async () => {
    const at = (k: number) => new Date(Date.now() - (10 - k) * 60_000).toISOString();
    // 1. A device whose patient the FHIR server does not have (recorded while it
    //    could not be asked), and one that is fine.
    const [lost, fine] = [uniqueId('lost'), uniqueId('fine')];
    const missing = uniqueId('p-missing');
    const unchecked = new DeviceService({
      registry: h.pipeline.registry,
      associations: h.pipeline.associations,
      revoke: () => Promise.resolve(),
      sync: queueAssociationSync(h.pipeline.queues),
      patientExists: () => Promise.resolve(true),
      createPatients: false,
      identityMode: 'Create',
    });
    const { secret: lostSecret } = await unchecked.add(lost, {
      ...ACTOR,
      patient: missing,
      at: Date.now() - 3_600_000,
    });
    const fineSecret = await enrol(h.pipeline, fine, uniqueId('p-fine'));
    const l = await connectDevice(h.mqttUrl, lost, lostSecret);
    const f = await connectDevice(h.mqttUrl, fine, fineSecret);

    // 2. A normalize refusal, and a reading whose Patient may not be created.
    await publish(f, `devices/${fine}/telemetry`, '{"heartRate": 7');
    await publish(l, `devices/${lost}/telemetry`, { timestamp: at(1), heartRate: 61 });
    // 3. The FHIR server goes away: a reading whose retries run out.
    await waitFor(
      async () => (await outcomes(lost)).length,
      (n) => n === 1,
      30_000,
      'the refused entry settled',
    );
    await proxy.down();
    await publish(f, `devices/${fine}/telemetry`, { timestamp: at(2), heartRate: 62 });
    await waitFor(
      async () => (await outcomes(fine)).length,
      (n) => n === 2,
      60_000,
      'the exhausted reading settled',
    );
    expect(
      (await outcomes(fine)).map((o) => [o.outcome, o.error_code, o.error_stage, o.n]),
    ).toEqual([
      ['dead_lettered', 'InvalidPayload', 'normalize', '1'],
      ['dead_lettered', 'FhirUnavailable', 'fhir', '1'],
    ]);
    expect(
      (await outcomes(lost)).map((o) => [o.outcome, o.error_code, o.error_stage, o.n]),
    ).toEqual([['dead_lettered', 'PatientNotFound', 'fhir', '1']]);
    // The exhausted job was started once per round but spent one attempt only (its
    // completion; BullMQ counts that too): each round was a reschedule, not a failure.
    const fhirJobs = await h.pipeline.queues.fhir.getJobs(['completed'], 0, -1);
    const exhausted = fhirJobs.filter((j) => (j.data.transientRetries ?? 0) > 0);
    expect(exhausted.length).toBeGreaterThan(0);
    for (const j of exhausted) {
      expect(j.data.transientRetries).toBe(2);
      expect(j.attemptsStarted).toBe(3);
      expect(j.attemptsMade).toBe(1);
    }

    // 4. The server is back, the Patient exists: both FHIR-stage dead letters replay.
    await proxy.up();
    const put = await fetch(`${fhirUrl}/Patient/${missing}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Patient', id: missing }),
    });
    expect(put.ok).toBe(true);
    const replayed = await dlq().replay({ stage: 'fhir' });
    expect(replayed.byStage.fhir).toBeGreaterThanOrEqual(2);
    await waitFor(
      async () => (await outcomes(lost)).map((o) => o.outcome),
      (o) => o.join() === 'processed',
      60_000,
      'the replayed entry settled as processed',
    );
    await waitFor(
      async () => (await outcomes(fine))[1]?.outcome,
      (o) => o === 'processed',
      60_000,
      'the exhausted reading, replayed, settled as processed',
    );
    expect((await outcomes(fine)).map((o) => [o.outcome, o.error_code, o.n])).toEqual([
      ['dead_lettered', 'InvalidPayload', '1'],
      ['processed', '', '1'],
    ]);

    // 5. An envelope the mirror cannot flatten (a date out of range), with its message.
    const bad = {
      ...(await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${missing}` })).entry![0]!
        .resource,
    } as Record<string, unknown>;
    const outcome: MessageOutcome = {
      message: {
        id: `${uniqueId('m')}`,
        deviceId: lost,
        topic: `devices/${lost}/telemetry`,
        qos: 1,
        receivedAt: Date.now(),
        payload: '{}',
        encoding: 'utf8',
      },
      patientId: missing,
      outcome: 'processed',
      observationCount: 1,
      templateVersion: 'v-test',
      decidedAt: Date.now(),
    };
    await h.pipeline.queues.analytics.add('batch', {
      traceId: 'bad-envelope',
      committedAt: Date.now(),
      observations: [
        {
          observation: {
            ...(bad as object),
            id: 'obs-bad-date',
            effectiveDateTime: '2500-01-01T00:00:00Z',
          } as never,
          provenance: {
            messageId: outcome.message.id,
            deviceId: lost,
            receivedAt: outcome.message.receivedAt,
            templateName: 'heartrate',
            templateVersion: 'v-test',
          },
        },
      ],
      messages: [outcome],
    });
    const last = await waitFor(
      async () => (await outcomes(lost)).find((o) => o.message_id === outcome.message.id),
      (o) => o !== undefined,
      30_000,
      'the bad envelope settled',
    );
    expect(last).toMatchObject({
      outcome: 'dead_lettered',
      error_code: 'InvalidTimestamp',
      error_stage: 'analytics',
      n: '1',
    });
    l.end(true);
    f.end(true);
  });
});

describe('an unexpected error in one message of a 500-message job', () => {
  let h: Harness;
  let normalizer: Worker | undefined;

  beforeAll(async () => {
    // The normalize stage runs below with a fault injected into its identity port;
    // this pipeline runs the FHIR and analytics stages.
    h = await startHarness({
      fhirUrl,
      roles: ['broker', 'worker', 'admin'],
      overrides: { worker: { stages: ['fhir', 'analytics'] }, fhir: { batchSize: 500 } },
    });
  });
  afterAll(async () => {
    await normalizer?.close();
    await h?.close();
  });

  it('dead-letters that message only; the other 499 are in FHIR in the same run', async () => {
    const devices = Array.from({ length: 5 }, () => uniqueId('bulk'));
    const patients = new Map<string, string>();
    for (const d of devices) {
      const p = uniqueId('p-bulk');
      patients.set(d, p);
      await enrol(h.pipeline, d, p);
    }
    const culprit = uniqueId('m-culprit');
    const base = Date.now() - 20 * 60_000;
    const messages: TelemetryMessage[] = Array.from({ length: 500 }, (_, k) => {
      const deviceId = devices[k % devices.length]!;
      return {
        id: k === 250 ? culprit : `m-${k}-${uniqueId('x')}`,
        deviceId,
        topic: `devices/${deviceId}/telemetry`,
        qos: 1,
        receivedAt: Date.now(),
        payload: JSON.stringify({
          timestamp: new Date(base + k * 1000).toISOString(),
          heartRate: 60 + (k % 40),
        }),
        encoding: 'utf8',
      };
    });
    // The fault: resolving the culprit reading's identity throws a TypeError (a bug).
    const culpritTime = new Date(base + 250 * 1000).toISOString();
    const real = createIdentityService({
      mode: 'Create',
      fhir: h.pipeline.fhir,
      deviceIdentifierSystem: h.pipeline.config.fhir.deviceIdentifierSystem,
      createPatients: false,
      associations: h.pipeline.associations,
      registry: h.pipeline.registry,
    });
    const faulty = {
      async forJob(ids: readonly string[]) {
        const job = await real.forJob(ids);
        return {
          async forMessage(deviceId: string) {
            const who = await job.forMessage(deviceId);
            return {
              ...who,
              resolve: (claim: Parameters<typeof who.resolve>[0]) => {
                if (claim.occurrenceTime === culpritTime)
                  throw new TypeError("Cannot read properties of undefined (reading 'x')");
                return who.resolve(claim);
              },
            };
          },
        };
      },
    };
    const log = createLogger('silent');
    const stage = createNormalizeStage({
      config: h.pipeline.config,
      identity: faulty,
      mappings: () => h.pipeline.templates!.current(),
      log,
    });
    const runner = createRunner(stage, {
      fhir: h.pipeline.queues.fhir,
      analytics: h.pipeline.queues.analytics,
      deadLetter: h.pipeline.queues.deadLetter,
      log,
      retryCapMs: 1000,
      maxTransientRetries: 200,
    });
    const connection = createRedis(h.pipeline.config.redis.url, true);
    normalizer = new Worker<IngestJobData>(
      'ingest',
      (job: Job<IngestJobData>, token) => runner.process(job, token),
      {
        connection,
        prefix: h.prefix,
      },
    );
    const job = await h.pipeline.queues.ingest.add('batch', { traceId: 'bulk', messages });

    // 1. The culprit alone is dead-lettered, as Internal.
    const letters = await waitFor(
      async () => (await h.pipeline.queues.deadLetter.getJobs(['waiting'])).map((j) => j.data),
      (l) => l.length >= 1,
      60_000,
      'the dead letter',
    );
    expect(letters.map((d) => [d.message?.id, d.code])).toEqual([[culprit, 'Internal']]);
    // 2. The other 499 reach FHIR, each on its patient.
    let total = 0;
    for (const d of devices) {
      const want = messages.filter((m) => m.deviceId === d && m.id !== culprit).length;
      const found = await waitFor(
        () =>
          fhirSearch(fhirUrl, 'Observation', {
            subject: `Patient/${patients.get(d)!}`,
            _count: '200',
            _summary: 'count',
          }),
        (b) => (b.total ?? 0) === want,
        120_000,
        `the readings of ${d}`,
      );
      total += found.total ?? 0;
    }
    expect(total).toBe(499);
    // 3. In the same run: the job ran once (one start, its completion the one attempt).
    const done = await h.pipeline.queues.ingest.getJob(job.id!);
    expect(done?.attemptsStarted).toBe(1);
    expect(done?.attemptsMade).toBe(1);
    expect(done?.data.transientRetries).toBeUndefined();
    connection.disconnect();
  });
});
