/**
 * MedTech compatibility mode's Observations (iomt-fhir's sample/templates/basic,
 * unchanged but for "compatibility": "MedTech") pass HAPI FHIR's R4 `$validate`:
 * a 64-character SHA-256 id, the service coding, effectivePeriod for a single
 * reading, issued, a code-only Observation and hourly windows.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Observation, OperationOutcome } from 'fhir/r4.js';
import { describe, expect, inject, it } from 'vitest';
import {
  compileSources,
  DEFAULT_POLICY,
  normalizeMessage,
  type MappingSet,
} from '../../src/mapping/index.js';

const fhirUrl = inject('fhirUrl');
const dir = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '../fixtures/medtech/iomt-fhir/samples/basic',
);
const read = (f: string) => readFileSync(path.join(dir, f), 'utf8');

async function validate(o: Observation): Promise<string[]> {
  const res = await fetch(`${fhirUrl}/Observation/$validate`, {
    method: 'POST',
    headers: { 'content-type': 'application/fhir+json', accept: 'application/fhir+json' },
    body: JSON.stringify(o),
  });
  const outcome = (await res.json()) as OperationOutcome;
  return (outcome.issue ?? [])
    .filter((i) => i.severity === 'error' || i.severity === 'fatal')
    .map((i) => `${i.expression?.join(',') ?? ''}: ${i.diagnostics ?? i.details?.text ?? ''}`);
}

function load(): MappingSet {
  const fhir = { ...(JSON.parse(read('fhirmapping.json')) as object), compatibility: 'MedTech' };
  const r = compileSources([
    { file: 'device/devicecontent.json', kind: 'device', text: read('devicecontent.json') },
    { file: 'fhir/fhirmapping.json', kind: 'fhir', text: JSON.stringify(fhir) },
  ]);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  return r.mappings;
}

describe('MedTech compatibility mode against HAPI $validate', () => {
  it('every Observation of sample/templates/basic is valid R4', async () => {
    const mappings = load();
    expect(mappings.compatibility).toBe('medtech');
    const at = '2026-01-01T10:15:30Z';
    const base = { deviceid: 'dev-1', patientid: 'pat-1', measurementdatetime: at };
    const out = await normalizeMessage(mappings, {
      policy: {
        ...DEFAULT_POLICY,
        input: { ...DEFAULT_POLICY.input, maxAgeMs: 1e13, maxFutureMs: 1e13 },
      },
      payload: JSON.stringify([
        { ...base, heartrate: 70 },
        { ...base, steps: 12 },
        { ...base, systolic: 120, diastolic: 80 },
        { ...base, hrv: 42 },
        { ...base, deviceWorn: 'true' },
      ]),
      meta: { deviceId: 'dev-1', topic: 'devices/dev-1/telemetry', receivedAt: Date.parse(at) },
      patientId: undefined,
      identifierSystem: 'urn:iomt:observation',
      resolveIdentity: () => ({ patientId: 'pat-1', deviceResourceId: 'dev-1' }),
    });
    expect(out.observations.length).toBeGreaterThanOrEqual(5);
    for (const { observation } of out.observations) {
      expect(observation.id).toMatch(/^[0-9a-f]{64}$/);
      expect(await validate(observation), observation.code.text).toEqual([]);
    }
  });
});
