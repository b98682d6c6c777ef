/**
 * Nothing from a payload reaches a log line or a dead-letter reason. Every
 * payload here carries a marker (an MRN-like string) and goes down one refusal
 * path — refused at the broker (too large, another device's topic, a topic not
 * allowed, a wrong secret) or dead-lettered (InvalidPayload of several kinds,
 * TimestampOutOfRange, InvalidTimestamp, RequiredValueMissing, DeviceSpoofing,
 * TemplateExpression, TemplateNotMatched) — or is recorded with
 * dataAbsentReason. Then the marker must appear in no log line of the whole
 * pipeline (broker, worker, admin; debug level) and in no dead-letter reason,
 * while every dead letter still holds it in its raw payload.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { DeadLetterJobData } from '../../src/queues.js';
import {
  connectDevice,
  enrol,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';
import { spoofAwareMappings } from './security-fixtures.js';

const fhirUrl = inject('fhirUrl');
const MARKER = `MRN-MARKER-${randomBytes(4).toString('hex')}`;
const KiB = 1024;

let h: Harness;
let mappingsDir: string;

beforeAll(async () => {
  mappingsDir = await spoofAwareMappings();
  h = await startHarness({ fhirUrl, overrides: { mappings: { dir: mappingsDir } } });
});

afterAll(async () => {
  await h?.close();
  if (mappingsDir) await rm(mappingsDir, { recursive: true, force: true });
});

interface Ctx {
  readonly deviceId: string;
  readonly otherDeviceId: string;
  readonly now: string;
}

interface MarkerCase {
  readonly name: string;
  readonly payload: (c: Ctx) => string | Buffer;
  readonly topic?: (c: Ctx) => string;
  /** A broker refusal (its log reason), a dead letter (its code), or recorded. */
  readonly outcome: { refused: string } | { deadLetter: string } | { recorded: true };
  /** Payload text besides the marker that must not reach a reason. */
  readonly alsoSecret?: string;
}

const reading = (c: Ctx, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ timestamp: c.now, heartRate: 71, ...extra });

const CASES: readonly MarkerCase[] = [
  // Refused at the broker.
  {
    name: 'a payload over the size limit',
    payload: (c) => reading(c, { mrn: MARKER, pad: 'x'.repeat(256 * KiB) }),
    outcome: { refused: 'payload-too-large' },
  },
  {
    name: 'a 2 MiB packet, closed after its header',
    payload: (c) => reading(c, { mrn: MARKER, pad: 'x'.repeat(2048 * KiB) }),
    outcome: { refused: 'packet-too-large' },
  },
  {
    name: "another device's topic",
    topic: (c) => `devices/${c.otherDeviceId}/telemetry`,
    payload: (c) => reading(c, { mrn: MARKER }),
    outcome: { refused: 'other-device-topic' },
  },
  {
    name: 'a topic not allowed',
    topic: (c) => `devices/${c.deviceId}/firmware`,
    payload: (c) => reading(c, { mrn: MARKER }),
    outcome: { refused: 'topic-not-allowed' },
  },
  // InvalidPayload, several kinds.
  {
    name: 'an unquoted value (JSON.parse would quote it)',
    payload: (c) => `{"timestamp":"${c.now}","heartRate":71,"mrn": ${MARKER}}`,
    outcome: { deadLetter: 'InvalidPayload' },
  },
  {
    name: 'text cut off inside a string',
    payload: (c) => `{"timestamp":"${c.now}","mrn":"${MARKER}`,
    outcome: { deadLetter: 'InvalidPayload' },
  },
  {
    name: 'a member named twice',
    payload: (c) => `{"timestamp":"${c.now}","heartRate":71,"${MARKER}":1,"${MARKER}":2}`,
    outcome: { deadLetter: 'InvalidPayload' },
  },
  {
    name: 'a bare JSON string',
    payload: () => JSON.stringify(MARKER),
    outcome: { deadLetter: 'InvalidPayload' },
  },
  {
    name: 'bytes that are not UTF-8',
    payload: () => Buffer.concat([Buffer.from(`{"mrn":"${MARKER}`, 'latin1'), Buffer.from([0xff])]),
    outcome: { deadLetter: 'InvalidPayload' },
  },
  {
    name: 'nesting too deep',
    payload: () => `${'['.repeat(40)}"${MARKER}"${']'.repeat(40)}`,
    outcome: { deadLetter: 'InvalidPayload' },
  },
  {
    name: 'an array too long',
    payload: (c) => reading(c, { mrn: Array.from({ length: 10_001 }, () => MARKER) }),
    outcome: { deadLetter: 'InvalidPayload' },
  },
  // The values and the time.
  {
    name: 'a timestamp in 2100',
    payload: () =>
      JSON.stringify({ timestamp: '2100-01-01T00:00:00Z', heartRate: 71, mrn: MARKER }),
    outcome: { deadLetter: 'TimestampOutOfRange' },
    alsoSecret: '2100-01-01',
  },
  {
    name: 'an unparseable timestamp',
    payload: () => JSON.stringify({ timestamp: MARKER, heartRate: 71 }),
    outcome: { deadLetter: 'InvalidTimestamp' },
  },
  {
    name: 'an object for a required value',
    payload: (c) => reading(c, { heartRate: { bpm: MARKER } }),
    outcome: { deadLetter: 'RequiredValueMissing' },
  },
  {
    name: 'a payload naming another device',
    payload: (c) => reading(c, { deviceId: MARKER }),
    outcome: { deadLetter: 'DeviceSpoofing' },
  },
  {
    name: 'a payload naming another patient',
    payload: (c) => reading(c, { patientId: MARKER }),
    outcome: { deadLetter: 'DeviceSpoofing' },
  },
  {
    name: 'a template expression failing on the value (JSONata would quote it)',
    payload: () =>
      JSON.stringify({ kind: 'pleth', start: MARKER, intervalMs: 20, samples: [512, 530] }),
    outcome: { deadLetter: 'TemplateExpression' },
  },
  {
    name: 'no template matching',
    payload: (c) => JSON.stringify({ timestamp: c.now, mrn: MARKER }),
    outcome: { deadLetter: 'TemplateNotMatched' },
  },
  // Recorded, not refused: a word where a number belongs.
  {
    name: 'a word for a value',
    payload: (c) => reading(c, { heartRate: MARKER }),
    outcome: { recorded: true },
  },
];

function send(client: MqttClient, topic: string, payload: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) =>
    client.publish(topic, payload, { qos: 1 }, (err) => (err ? reject(err) : resolve())),
  );
}

async function deadLettersOf(deviceId: string): Promise<DeadLetterJobData[]> {
  const jobs = await h.pipeline.queues.deadLetter.getJobs(['waiting'], 0, -1);
  return jobs.map((j) => j.data).filter((d) => d.deviceId === deviceId);
}

async function run(c: MarkerCase): Promise<DeadLetterJobData | undefined> {
  const deviceId = uniqueId('mark');
  const otherDeviceId = uniqueId('other');
  const secret = await enrol(h.pipeline, deviceId, uniqueId('pat'));
  await enrol(h.pipeline, otherDeviceId, uniqueId('pat'));
  const ctx: Ctx = { deviceId, otherDeviceId, now: new Date(Date.now() - 60_000).toISOString() };
  const client = await connectDevice(h.mqttUrl, deviceId, secret);
  client.on('error', () => undefined);
  const topic = c.topic?.(ctx) ?? `devices/${deviceId}/telemetry`;
  const outcome = c.outcome;
  if ('refused' in outcome) {
    const closed = new Promise<void>((r) => client.once('close', () => r()));
    void send(client, topic, c.payload(ctx)).catch(() => undefined);
    await closed;
    await waitFor(
      () =>
        Promise.resolve(
          h.logs.find((l) => l.deviceId === deviceId && l.reason === outcome.refused),
        ),
      (l) => l !== undefined,
      20_000,
      `the ${outcome.refused} refusal`,
    );
    client.end(true);
    return undefined;
  }
  await send(client, topic, c.payload(ctx));
  client.end(true);
  if ('recorded' in outcome) {
    await waitFor(
      () => Promise.resolve(h.logs.some((l) => l.event === 'normalized')),
      (ok) => ok,
      30_000,
    );
    return undefined;
  }
  const [letter] = await waitFor(
    () => deadLettersOf(deviceId),
    (l) => l.length >= 1,
    30_000,
    `a ${outcome.deadLetter} dead letter`,
  );
  expect(letter!.code, c.name).toBe(outcome.deadLetter);
  return letter;
}

describe('a marker in the payload', () => {
  it('is in no log line and no dead-letter reason, on every refusal path, and stays in the raw payload', async () => {
    // 1. A wrong secret carrying the marker (secrets are never logged either).
    const d = uniqueId('mark');
    await enrol(h.pipeline, d, uniqueId('pat'));
    await expect(connectDevice(h.mqttUrl, d, `wrong-${MARKER}`)).rejects.toThrow(/Not authorized/);

    // 2. Every payload case, one device each.
    const letters = new Map<string, DeadLetterJobData>();
    for (const c of CASES) {
      const letter = await run(c);
      if (letter) letters.set(c.name, letter);
    }
    expect(letters.size).toBe(CASES.filter((c) => 'deadLetter' in c.outcome).length);

    // 3. No reason holds the marker (or another payload value), every raw payload does.
    for (const c of CASES) {
      const letter = letters.get(c.name);
      if (!letter) continue;
      expect(letter.reason, c.name).not.toContain(MARKER);
      if (c.alsoSecret) expect(letter.reason, c.name).not.toContain(c.alsoSecret);
      const raw = Buffer.from(
        letter.message!.payload,
        letter.message!.encoding === 'utf8' ? 'utf8' : 'base64',
      );
      expect(raw.includes(Buffer.from(MARKER, 'latin1')), c.name).toBe(true);
    }

    // 4. No log line of the whole pipeline holds it, at any level.
    const leaked = h.logs.filter((l) => JSON.stringify(l).includes(MARKER));
    expect(leaked).toEqual([]);
    expect(h.logs.filter((l) => JSON.stringify(l).includes('2100-01-01'))).toEqual([]);
    // The test saw real refusal and dead-letter lines.
    expect(h.logs.filter((l) => l.event === 'dead-letter').length).toBeGreaterThanOrEqual(
      letters.size,
    );
  });
});
