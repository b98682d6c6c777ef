/**
 * Shared by the tests that run microsoft/iomt-fhir's own inputs
 * (test/fixtures/medtech/iomt-fhir; its README names each source): reading the
 * fixtures, loading them as a template set, and mapping a message the way the
 * worker does (pure path, no services).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  compileSources,
  DEFAULT_POLICY,
  mapMessage,
  messageEnvelope,
  normalizeMessage,
  type EnvelopePolicy,
  type MappingSet,
  type Reading,
} from '../../src/mapping/index.js';

export const IOMT_DIR = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '../fixtures/medtech/iomt-fhir',
);

/** A fixture's text. Some of iomt-fhir's inputs start with a byte-order mark, as Json.NET allows. */
export const text = (f: string): string =>
  readFileSync(path.join(IOMT_DIR, f), 'utf8').replace(/^\uFEFF/, '');

export const json = <T = unknown>(f: string): T => JSON.parse(text(f)) as T;

/** Single template files of MedTech's tests, inside a collection as a mapping file holds them. */
export function collection(kind: 'device' | 'fhir', ...files: string[]): string {
  return JSON.stringify({
    templateType: kind === 'device' ? 'CollectionContent' : 'CollectionFhir',
    template: files.map((f) => JSON.parse(text(f)) as unknown),
  });
}

export type Source = { kind: 'device' | 'fhir'; text: string; file?: string };

export function load(sources: Source[], requireFhirTemplates = true) {
  return compileSources(
    sources.map((s, i) => ({ file: s.file ?? `${s.kind}/${i}.json`, kind: s.kind, text: s.text })),
    IOMT_DIR,
    { requireFhirTemplates },
  );
}

export function loaded(sources: Source[], requireFhirTemplates = true): MappingSet {
  const r = load(sources, requireFhirTemplates);
  if (!r.ok) throw new Error(JSON.stringify(r.problems, null, 2));
  return r.mappings;
}

/** The input policy without the age window: MedTech's inputs are years old. */
export const ANY_TIME = {
  ...DEFAULT_POLICY,
  input: {
    ...DEFAULT_POLICY.input,
    maxAgeMs: Number.MAX_SAFE_INTEGER,
    maxFutureMs: Number.MAX_SAFE_INTEGER,
  },
};

export const meta = (deviceId: string, receivedAt = '2026-01-01T00:00:00Z') => ({
  deviceId,
  topic: `devices/${deviceId}/telemetry`,
  receivedAt: Date.parse(receivedAt),
});

export const EVENTHUB: EnvelopePolicy = { source: 'eventhub' };
export const NONE: EnvelopePolicy = { source: 'none' };

/** A reading as MedTech's tests look at a Measurement: type, time, device, properties. */
export function asMedTech(r: Reading) {
  return {
    type: r.type,
    occurrenceTimeUtc: r.occurrenceTime,
    deviceId: r.deviceId,
    properties: Object.entries(r.values).map(([name, value]) => ({ name, value })),
  };
}

/** The device mapping of one message, with the envelope MEDTECH_ENVELOPE would build. */
export async function mapWith(
  mappings: MappingSet,
  payload: unknown,
  deviceId: string,
  policy: EnvelopePolicy,
  topic?: string,
) {
  const m = { ...meta(deviceId), ...(topic ? { topic } : {}) };
  return mapMessage(mappings, payload, m, { envelope: messageEnvelope(payload, m, policy) });
}

/** The whole pure path (device and FHIR mapping) as the worker runs it. */
export function normalizeWith(
  mappings: MappingSet,
  payload: unknown,
  deviceId = 'd-1',
  identity = { patientId: 'patientId', deviceResourceId: 'deviceId' },
) {
  return normalizeMessage(mappings, {
    policy: ANY_TIME,
    payload: JSON.stringify(payload),
    meta: meta(deviceId),
    patientId: undefined,
    identifierSystem: 'urn:iomt:observation',
    resolveIdentity: () => identity,
  });
}

/** A device template producing `type` with the given values from the body (`$..[?(@type)]`, time `$.time`). */
export function deviceFor(type: string, values: string[]): string {
  return JSON.stringify({
    templateType: 'CollectionContent',
    template: [
      {
        templateType: 'JsonPathContent',
        template: {
          typeName: type,
          typeMatchExpression: `$..[?(@type == '${type}')]`,
          timestampExpression: '$.time',
          values: values.map((v) => ({ valueName: v, valueExpression: `$.${v}` })),
        },
      },
    ],
  });
}
