/**
 * The pure parts of the mirror: SampledData points, provenance read from the
 * stored resource (meta.source / meta.tag / meta.lastUpdated), the buckets a
 * write touches, device_messages rows, and the FHIR writer's hand-off (which
 * messages are settled, which Observations to re-read).
 */
import type { Observation } from 'fhir/r4.js';
import { describe, expect, it } from 'vitest';
import { flattenObservation } from '../../src/clickhouse/flatten.js';
import { deviceMessageRow } from '../../src/clickhouse/messages.js';
import { touchedBuckets } from '../../src/clickhouse/rollup-touch.js';
import { expandSampledData } from '../../src/clickhouse/samples.js';
import { PipelineError } from '../../src/errors.js';
import { messageSourceUri, parseMessageSource } from '../../src/fhir/message-source.js';
import type { MessageOutcome, ObservationEnvelope } from '../../src/queues.js';
import { messagesDigest, settleMessages, storedVersions } from '../../workers/analytics-handoff.js';

const ctx = {
  observationId: 'o-1',
  componentIndex: -1,
  patientId: 'p-1',
  deviceId: 'dev-1',
  code: '131328',
  unit: 'mV',
  startMs: Date.UTC(2026, 0, 1, 12, 0, 0, 0),
  templateVersion: 'v1',
  committedAt: '2026-01-01 12:00:05.000',
};

describe('expandSampledData', () => {
  it('gives each point its own time, origin + factor × value, and keeps E/L/U as flags', () => {
    const rows = expandSampledData(
      { origin: { value: 10 }, period: 2.5, factor: 0.5, dimensions: 2, data: '2 4 E 6 L U' },
      ctx,
    );
    expect(rows.map((r) => [r.sample_index, r.dimension, r.ts, r.value, r.flag])).toEqual([
      [0, 0, '2026-01-01 12:00:00.000', 11, ''],
      [1, 1, '2026-01-01 12:00:00.000', 12, ''],
      [2, 0, '2026-01-01 12:00:00.003', null, 'E'], // round(1 × 2.5)
      [3, 1, '2026-01-01 12:00:00.003', 13, ''],
      [4, 0, '2026-01-01 12:00:00.005', null, 'L'],
      [5, 1, '2026-01-01 12:00:00.005', null, 'U'],
    ]);
  });

  it('refuses a point that is not a number with InvalidValue', () => {
    expect(() =>
      expandSampledData({ origin: { value: 0 }, period: 1, dimensions: 1, data: '1 x' }, ctx),
    ).toThrow(expect.objectContaining({ code: 'InvalidValue' }));
    expect(() =>
      expandSampledData({ origin: { value: 0 }, period: 1, dimensions: 0, data: '1' }, ctx),
    ).toThrow(/dimensions/);
  });
});

describe('message source (Observation.meta.source)', () => {
  it('round-trips, ignores the server request id and foreign sources', () => {
    const uri = messageSourceUri({ messageId: 'b-1:2/x', receivedAt: 1767268800123 });
    expect(uri).toBe('urn:iomt:message:1767268800123:b-1%3A2%2Fx');
    expect(parseMessageSource(`${uri}#Ab12Cd34Ef56Gh78`)).toEqual({
      messageId: 'b-1:2/x',
      receivedAt: 1767268800123,
    });
    expect(parseMessageSource('http://other.example/fhir')).toBeUndefined();
    expect(parseMessageSource(undefined)).toBeUndefined();
  });
});

const stored: Observation = {
  resourceType: 'Observation',
  id: 'obs-1',
  meta: {
    versionId: '3',
    lastUpdated: '2026-01-01T12:00:02.345+00:00',
    source: `${messageSourceUri({ messageId: 'first', receivedAt: Date.UTC(2026, 0, 1, 12, 0, 1) })}#Req1`,
    tag: [{ system: 'urn:iomt:template', code: 'heartrate@abc123' }],
  },
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
  subject: { reference: 'Patient/p-1' },
  device: { reference: 'Device/dev-1' },
  effectiveDateTime: '2026-01-01T12:00:00.000Z',
  valueQuantity: { value: 70, system: 'http://unitsofmeasure.org', code: '/min' },
};

describe('flattenObservation provenance', () => {
  it('reads delivery, template and commit from the stored resource over the envelope', () => {
    const env: ObservationEnvelope = {
      observation: stored,
      provenance: {
        messageId: 'second',
        deviceId: 'd',
        receivedAt: 0,
        templateName: 'x',
        templateVersion: 'y',
      },
    };
    const row = flattenObservation(env, Date.UTC(2030, 0, 1)).observation;
    expect([
      row.message_id,
      row.received_at,
      row.template_name,
      row.template_version,
      row.fhir_committed_at,
      row.fhir_version_id,
    ]).toEqual([
      'first',
      '2026-01-01 12:00:01.000',
      'heartrate',
      'abc123',
      '2026-01-01 12:00:02.345',
      '3',
    ]);
  });
});

describe('touchedBuckets', () => {
  it('names each (patient, code, minute / hour) once', () => {
    const rows = [
      { patient_id: 'p', code: 'c', effective_start: '2026-01-01 12:59:59.999' },
      { patient_id: 'p', code: 'c', effective_start: '2026-01-01 12:59:00.000' },
      { patient_id: 'p', code: 'c', effective_start: '2026-01-01 13:00:00.000' },
    ];
    expect(touchedBuckets(rows, 'minute').map((t) => t.bucket)).toEqual([
      '2026-01-01 12:59:00',
      '2026-01-01 13:00:00',
    ]);
    expect(touchedBuckets(rows, 'hour')).toEqual([
      { grain: 'hour', patient_id: 'p', code: 'c', bucket: '2026-01-01 12:00:00' },
      { grain: 'hour', patient_id: 'p', code: 'c', bucket: '2026-01-01 13:00:00' },
    ]);
  });
});

const message = (id: string, payload = '{"a":1}', encoding: 'utf8' | 'base64' = 'utf8') => ({
  id,
  deviceId: 'monitor 7',
  topic: 'devices/monitor 7/telemetry',
  qos: 1 as const,
  receivedAt: Date.UTC(2026, 0, 1, 12),
  payload,
  encoding,
});
const fate = (id: string): MessageOutcome => ({
  message: message(id),
  patientId: 'p-1',
  outcome: 'processed',
  observationCount: 1,
  templateVersion: 'v1',
  decidedAt: 1,
});
const env = (id: string, messageId: string): ObservationEnvelope => ({
  observation: { ...stored, id },
  provenance: { messageId, deviceId: 'd', receivedAt: 0, templateName: 't', templateVersion: 'v' },
});

describe('deviceMessageRow', () => {
  it('joins observations by the FHIR Device id and measures the payload in bytes', () => {
    const row = deviceMessageRow({
      ...fate('m'),
      message: message('m', Buffer.from([0xff, 0xfe]).toString('base64'), 'base64'),
    });
    expect(row.device_id).toMatch(/^dev-/);
    expect(row.mqtt_device_id).toBe('monitor 7');
    expect(row.size_bytes).toBe(2); // the raw bytes, not the base64 text
    expect(row.received_at).toBe('2026-01-01 12:00:00.000');
  });
});

describe('the FHIR writer hand-off', () => {
  it('settles a message when all its Observations are done; refused ones make it a dead letter', () => {
    const refused = new PipelineError('FhirRejected', 'HTTP 422');
    const { settled, pending } = settleMessages(
      [fate('ok'), fate('bad'), fate('later')],
      {
        committed: [env('o1', 'ok'), env('o2', 'bad')],
        dead: [{ observation: env('o3', 'bad'), error: refused }],
        retry: [env('o4', 'later')],
      },
      42,
    );
    expect(
      settled.map((m) => [m.message.id, m.outcome, m.errorCode, m.errorStage, m.decidedAt]),
    ).toEqual([
      ['ok', 'processed', undefined, undefined, 42],
      ['bad', 'dead_lettered', 'FhirRejected', 'fhir', 42],
    ]);
    expect(pending.map((m) => m.message.id)).toEqual(['later']);
    expect(messagesDigest([])).toBe('');
    expect(messagesDigest(settled)).not.toBe(messagesDigest(settled.slice(0, 1)));
  });

  it('re-reads only what the server left unchanged', async () => {
    const asked: string[][] = [];
    const reader = {
      readObservations: (ids: readonly string[]) => {
        asked.push([...ids]);
        return Promise.resolve(
          ids.map((id) => ({ ...stored, id, meta: { ...stored.meta, versionId: '9' } })),
        );
      },
    };
    const out = await storedVersions(reader, [env('a', 'm'), env('b', 'm')], new Set(['b']));
    expect(asked).toEqual([['b']]);
    expect(out.map((e) => e.observation.meta?.versionId)).toEqual(['3', '9']);
    expect(await storedVersions(reader, [env('a', 'm')], new Set())).toHaveLength(1);
    expect(asked).toHaveLength(1);
  });
});
