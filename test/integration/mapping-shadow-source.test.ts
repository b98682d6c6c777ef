/**
 * The shadow run reads real payloads: device_messages rows written by the
 * mirror's own insert path, read back through the embedded engine and through
 * the server driver (clickhouse-targets.ts), plus the dead letters waiting in
 * Redis. The gates then refuse the heartRate → heartrate edit with the counts
 * of those very messages.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAnalyticsStore, type AnalyticsStore } from '../../src/clickhouse/index.js';
import { loadConfig } from '../../src/config.js';
import { readCandidate } from '../../src/mapping/index.js';
import { createShadowSource, runGates, type Candidate } from '../../src/mapping/lifecycle/index.js';
import { createRedis } from '../../src/queue-runtime.js';
import {
  QUEUE,
  type DeadLetterJobData,
  type MessageOutcome,
  type TelemetryMessage,
} from '../../src/queues.js';
import { clickhouseTargets } from '../support/clickhouse-targets.js';
import { uniqueId } from '../support/harness.js';

const library = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../mappings');
const targets = clickhouseTargets('shadow');
const config = loadConfig({});
const redis = createRedis(config.redis.url);
const prefix = uniqueId('shadow');
const deadLetters = new Queue<DeadLetterJobData>(QUEUE.deadLetter, { connection: redis, prefix });
const T0 = Date.now() - 3_600_000;

let v1: Candidate;
let broken: Candidate;

function message(i: number, body: unknown, encoding: 'utf8' | 'base64' = 'utf8'): TelemetryMessage {
  return {
    id: `b-${i}`,
    deviceId: 'mon-1',
    topic: 'devices/mon-1/telemetry',
    qos: 1,
    receivedAt: T0 + i * 1000,
    payload:
      encoding === 'utf8' ? JSON.stringify(body) : Buffer.from('\xff\xfe').toString('base64'),
    encoding,
  };
}

function outcome(m: TelemetryMessage): MessageOutcome {
  return {
    message: m,
    patientId: 'p-shadow',
    outcome: 'processed',
    observationCount: 2,
    templateVersion: 'v1',
    decidedAt: m.receivedAt + 50,
  };
}

const vitals = (i: number) =>
  message(i, {
    timestamp: new Date(T0 + i * 1000 - 200).toISOString(),
    heartRate: 60 + i,
    spo2: 97,
  });

beforeAll(async () => {
  v1 = await readCandidate(library);
  broken = {
    ...v1,
    files: v1.files.map((f) =>
      f.file === 'device/vitals.json'
        ? {
            ...f,
            text: f.text.replace(
              '"valueExpression": "heartRate"',
              '"valueExpression": "heartrate"',
            ),
          }
        : f,
    ),
  };
  // A vitals message refused earlier (it waits in the dead-letter queue).
  await deadLetters.add('dead', {
    traceId: 't-1',
    stage: 'normalize',
    code: 'TimestampOutOfRange',
    reason: 'test',
    deviceId: 'mon-1',
    failedAt: Date.now(),
    message: { ...vitals(100), id: 'dl-1' },
  });
});

afterAll(async () => {
  await deadLetters.obliterate({ force: true }).catch(() => undefined);
  await deadLetters.close();
  redis.disconnect();
  for (const t of targets.all) if (t.enabled) await t.dropDatabase?.().catch(() => undefined);
  await targets.cleanup();
});

for (const target of targets.all) {
  describe.skipIf(!target.enabled)(`shadow source: ${target.name}`, () => {
    let store: AnalyticsStore;

    beforeAll(async () => {
      store = createAnalyticsStore(target.config, undefined, target.options);
      await store.migrate();
      const rows = [
        ...Array.from({ length: 40 }, (_, i) => vitals(i)),
        message(50, {
          kind: 'weight-scale',
          measuredAt: new Date(T0).toISOString(),
          weight: 70,
          unit: 'kg',
        }),
        message(51, null, 'base64'),
      ].map(outcome);
      await store.insertMessages(rows);
      // A later verdict on the same message replaces the first (FINAL): still one sample.
      await store.insertMessages([
        { ...rows[0]!, outcome: 'dead_lettered', decidedAt: rows[0]!.decidedAt + 1 },
      ]);
    });

    afterAll(async () => {
      await store?.close();
    });

    it('reads recent device_messages payloads, newest first, once each, with the dead letters first', async () => {
      const source = createShadowSource({ store, database: target.config.database, deadLetters });
      const { samples } = await source.samples({ deviceMessages: 1000, deadLetters: 100 });
      expect(samples[0]).toMatchObject({ id: 'dl-1', source: 'dead-letter' });
      const rows = samples.filter((s) => s.source === 'device_messages');
      // 40 vitals + the scale; the base64 payload never reached a template.
      expect(rows).toHaveLength(41);
      expect(rows[0]).toMatchObject({ id: 'b-50', patientId: 'p-shadow', deviceId: 'mon-1' });
      expect(rows.at(-1)).toMatchObject({ id: 'b-0', receivedAt: T0 });
      expect(JSON.parse(rows.at(-1)!.payload)).toMatchObject({ heartRate: 60 });
      const limited = await source.samples({ deviceMessages: 5, deadLetters: 0 });
      expect(limited.samples.map((s) => s.id)).toEqual(['b-50', 'b-39', 'b-38', 'b-37', 'b-36']);
    });

    it('gives the gates the counts of those messages: 41 of 41 recent vitals messages would be dead-lettered', async () => {
      const source = createShadowSource({ store, database: target.config.database, deadLetters });
      const { samples } = await source.samples({ deviceMessages: 1000, deadLetters: 100 });
      const report = await runGates({
        candidate: broken,
        active: v1.files,
        samples,
        settings: {
          identifierSystem: 'urn:iomt:observation',
          input: config.input,
          perTemplate: 500,
          maxNewDeadLetters: 0,
        },
        accept: {},
      });
      if (report.shadow?.status !== 'ran') throw new Error('no shadow run');
      expect(report.shadow.templates).toHaveLength(1);
      expect(report.shadow.templates[0]).toMatchObject({
        file: 'device/vitals.json',
        messages: 41,
        fromDeviceMessages: 40,
        fromDeadLetters: 1,
        active: { matched: 41 },
        candidate: { deadLettered: 41 },
      });
      expect(report.refusals).toContain(
        'device/vitals.json: 41 of 41 recent messages would be dead-lettered (0 with the active version): RequiredValueMissing 41',
      );
    });
  });
}
