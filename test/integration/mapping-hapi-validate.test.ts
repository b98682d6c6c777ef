/**
 * Every sample template's output passes HAPI FHIR's `$validate` against FHIR
 * R4 — and against the vital-signs profile for that reading (heart rate,
 * oxygen saturation, blood pressure, body temperature, body weight, BMI,
 * respiratory rate) where one applies. The Observations come from the library
 * fixtures through the same pure path the worker runs.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Observation, OperationOutcome } from 'fhir/r4.js';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import {
  bindingResolver,
  loadMappings,
  normalizeMessage,
  readFixtures,
  type Fixture,
  type MappingSet,
} from '../../src/mapping/index.js';

const fhirUrl = inject('fhirUrl');
const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../mappings');

/** FHIR R4 vital-signs profiles by LOINC code (http://hl7.org/fhir/R4/observation-vitalsigns.html). */
const VITAL_SIGNS: Record<string, string> = {
  '8867-4': 'heartrate',
  '2708-6': 'oxygensat',
  '59408-5': 'oxygensat',
  '85354-9': 'bp',
  '8310-5': 'bodytemp',
  '29463-7': 'bodyweight',
  '39156-5': 'bmi',
  '9279-1': 'resprate',
};

function profilesOf(o: Observation): string[] {
  const codes = (o.code.coding ?? [])
    .filter((c) => c.system === 'http://loinc.org')
    .map((c) => c.code ?? '');
  const specific = codes.map((c) => VITAL_SIGNS[c]).find((p) => p !== undefined);
  return specific ? [`http://hl7.org/fhir/StructureDefinition/${specific}`] : [];
}

async function validate(o: Observation, profile?: string): Promise<string[]> {
  const qs = profile ? `?profile=${encodeURIComponent(profile)}` : '';
  const res = await fetch(`${fhirUrl}/Observation/$validate${qs}`, {
    method: 'POST',
    headers: { 'content-type': 'application/fhir+json', accept: 'application/fhir+json' },
    body: JSON.stringify(o),
  });
  const outcome = (await res.json()) as OperationOutcome;
  return (outcome.issue ?? [])
    .filter((i) => i.severity === 'error' || i.severity === 'fatal')
    .map((i) => `${i.expression?.join(',') ?? ''}: ${i.diagnostics ?? i.details?.text ?? ''}`);
}

let mappings: MappingSet;
let fixtures: Fixture[];

beforeAll(async () => {
  const r = await loadMappings(dir);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  mappings = r.mappings;
  fixtures = (await readFixtures(dir)).filter((f) => !f.expectedError);
});

async function observationsOf(f: Fixture): Promise<Observation[]> {
  const s = f.settings;
  const out = await normalizeMessage(mappings, {
    payload: f.message,
    meta: {
      deviceId: s.deviceId,
      topic: `devices/${s.deviceId}/telemetry`,
      receivedAt: Date.parse(s.receivedAt),
    },
    patientId: s.patientId,
    identifierSystem: 'urn:iomt:observation',
    resolveIdentity: bindingResolver({
      patientId: s.patientId,
      children: new Map(Object.entries(s.children ?? {})),
    }),
  });
  return out.observations.map((o) => o.observation);
}

describe('library output against HAPI $validate', () => {
  it('every fixture yields Observations valid against FHIR R4 and their vital-signs profile', async () => {
    const failures: string[] = [];
    let validated = 0;
    let profiled = 0;
    for (const f of fixtures) {
      for (const o of await observationsOf(f)) {
        for (const profile of [undefined, ...profilesOf(o)]) {
          const errors = await validate(o, profile);
          validated++;
          if (profile) profiled++;
          if (errors.length > 0) {
            failures.push(
              `${f.name} ${o.code.coding?.[0]?.code ?? ''} ${profile ?? 'R4'}:\n    ${errors.join('\n    ')}`,
            );
          }
        }
      }
    }
    expect(failures).toEqual([]);
    // Sanity: the library's vital signs were checked against their profiles.
    expect(profiled).toBeGreaterThanOrEqual(10);
    expect(validated).toBeGreaterThan(profiled);
  });

  it('$validate does find errors (a broken Observation is refused)', async () => {
    const [o] = await observationsOf(fixtures.find((f) => f.name === 'weight-scale')!);
    const broken = { ...o!, status: 'not-a-status' } as unknown as Observation;
    expect((await validate(broken)).length).toBeGreaterThan(0);
    const noUnit = {
      ...o!,
      valueQuantity: { value: 70, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kilo' },
    };
    expect(
      (await validate(noUnit, 'http://hl7.org/fhir/StructureDefinition/bodyweight')).length,
    ).toBeGreaterThan(0);
  });
});
