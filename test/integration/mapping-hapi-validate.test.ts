/**
 * Every sample template's output passes HAPI FHIR's `$validate` against FHIR
 * R4 — and against the vital-signs profile for that reading (heart rate,
 * oxygen saturation, blood pressure, body temperature, body weight, BMI,
 * respiratory rate) where one applies, and against every profile its
 * meta.profile claims. The Observations come from the library fixtures, and
 * from the value cases of issue 10 (special values, implausible flags, glucose
 * contexts and HI/LO, mean arterial pressure, sub-millisecond times, a device
 * sampling period), through the same pure path the worker runs.
 *
 * The HL7 PHD IG's profiles (STU 1.1) are stored on HAPI first, from
 * test/fixtures/phd (the IG package itself cannot be fetched here; see its
 * README), so PhdNumericObservation is checked where meta.profile claims it;
 * a test below keeps every claim to profiles HAPI can check.
 */
import { readdir, readFile } from 'node:fs/promises';
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
const phdDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/phd');
const PHD_NUMERIC = 'http://hl7.org/fhir/uv/phd/StructureDefinition/PhdNumericObservation';

/** The PHD IG's StructureDefinitions, ValueSets and CodeSystems, stored on HAPI (PUT: idempotent). */
async function loadPhdProfiles(): Promise<void> {
  for (const file of (await readdir(phdDir)).filter((f) => f.endsWith('.json'))) {
    const resource = JSON.parse(await readFile(path.join(phdDir, file), 'utf8')) as {
      resourceType: string;
      id: string;
    };
    const res = await fetch(`${fhirUrl}/${resource.resourceType}/${resource.id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(resource),
    });
    if (!res.ok) throw new Error(`PUT ${file}: HTTP ${res.status} ${await res.text()}`);
  }
}

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
  await loadPhdProfiles();
});

async function observationsOf(f: Fixture): Promise<Observation[]> {
  const s = f.settings;
  const out = await normalizeMessage(mappings, {
    payload: typeof f.message === 'string' ? f.message : JSON.stringify(f.message),
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

const AT = '2026-11-26T09:00:00Z';
const RECEIVED = '2026-11-26T09:00:05Z';
const valueCase = (name: string, body: unknown, deviceId = 'dev-1'): Fixture => ({
  name,
  settings: { deviceId, patientId: 'p-1', receivedAt: RECEIVED },
  message: JSON.stringify(body),
});

/** Issue 10's value cases: every shape the templates now produce. */
const VALUE_CASES: Fixture[] = [
  valueCase('monitor, 11073 FLOAT special values', {
    timestamp: AT,
    heartRate: 8388607,
    spo2: 8388608,
    respiratoryRate: 8388606,
    temperature: 8388610,
    bloodPressure: { systolic: 8388609, diastolic: 80, mean: 93 },
  }),
  valueCase('monitor, implausible values flagged', {
    timestamp: AT,
    heartRate: 320,
    spo2: 127,
    respiratoryRate: 0,
    temperature: 98.6,
    temperatureUnit: 'F',
    bloodPressure: { systolic: 450, diastolic: 80 },
  }),
  valueCase('monitor, sub-millisecond time and SpO2 as a fraction', {
    timestamp: '2026-11-26T09:00:00.000125Z',
    spo2: 0.97,
  }),
  valueCase('cuff in kPa with mean and an SFLOAT NaN pulse', {
    kind: 'bp-cuff',
    measuredAt: AT,
    systolic: 16.4,
    diastolic: 10.5,
    mean: 12.4,
    unit: 'kpa',
    pulse: 2047,
  }),
  valueCase('oximeter sentinels', {
    kind: 'pulse-oximeter',
    readings: [{ at: AT, spo2: 127, pulse: 255 }],
  }),
  valueCase('thermometer in [degF]', {
    kind: 'thermometer',
    time: AT,
    value: 101.2,
    unit: '[degF]',
    site: 'ear',
  }),
  valueCase('scale in grams', { kind: 'weight-scale', time: AT, weight: 3450, unit: 'g' }),
  valueCase('scale, implausible (questionable, HX) under the PHD profile', {
    kind: 'weight-scale',
    time: AT,
    weight: 3450,
    unit: 'kg',
  }),
  valueCase('oximeter pulse rate out of range', {
    kind: 'pulse-oximeter',
    readings: [{ at: AT, pulse: 330 }],
  }),
  valueCase('glucose HI at the reported range', {
    kind: 'glucose-meter',
    time: AT,
    glucose: 'HI',
    unit: 'mmol/L',
    meal: 'after',
    range: { low: 1.1, high: 33.3 },
  }),
  valueCase('glucose LO without a range, no meal', {
    kind: 'glucose-meter',
    time: AT,
    glucose: 'LO',
    unit: 'mg/dL',
  }),
  valueCase('glucose fasting, critical low', {
    kind: 'glucose-meter',
    time: AT,
    glucose: 28,
    unit: 'mg/dL',
    meal: 'fasting',
  }),
  valueCase('pleth at 8 ms', {
    kind: 'pleth',
    segment: 'seg-8',
    start: '2026-11-26T09:00:00.000Z',
    intervalMs: 8,
    samples: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
  }),
];

describe('library output against HAPI $validate', () => {
  it('the value cases of issue 10 are valid against R4, their vital-signs profile and their meta.profile', async () => {
    const failures: string[] = [];
    const claimed = new Set<string>();
    for (const f of VALUE_CASES) {
      for (const o of await observationsOf(f)) {
        const profiles = new Set([...profilesOf(o), ...(o.meta?.profile ?? [])]);
        for (const p of o.meta?.profile ?? []) claimed.add(p);
        for (const profile of [undefined, ...profiles]) {
          const errors = await validate(o, profile);
          if (errors.length > 0) {
            failures.push(
              `${f.name} ${o.code.coding?.[0]?.code ?? ''} ${profile ?? 'R4'}:\n    ${errors.join('\n    ')}`,
            );
          }
        }
      }
    }
    expect(failures).toEqual([]);
    expect([...claimed].sort()).toEqual([
      'http://hl7.org/fhir/StructureDefinition/bodytemp',
      'http://hl7.org/fhir/StructureDefinition/bodyweight',
      'http://hl7.org/fhir/StructureDefinition/bp',
      'http://hl7.org/fhir/StructureDefinition/heartrate',
      'http://hl7.org/fhir/StructureDefinition/oxygensat',
      'http://hl7.org/fhir/StructureDefinition/resprate',
      PHD_NUMERIC,
    ]);
  });

  it('claims only profiles this HAPI knows (the vital-signs profiles and, once stored, PHD)', async () => {
    const unknown = async (url: string) =>
      (
        await validate({
          resourceType: 'Observation',
          status: 'final',
          code: { text: 'probe' },
          meta: { profile: [url] },
        })
      ).some((e) => /could not be found|Failed to retrieve profile/.test(e));
    // The probe sees an unknown profile.
    expect(await unknown('http://example.org/fhir/StructureDefinition/never-stored')).toBe(true);
    const claimed = new Set<string>();
    for (const f of [...fixtures, ...VALUE_CASES]) {
      for (const o of await observationsOf(f))
        for (const p of o.meta?.profile ?? []) claimed.add(p);
    }
    expect(claimed).toContain(PHD_NUMERIC);
    for (const url of claimed) expect(await unknown(url), url).toBe(false);
  });

  it('the PHD profile is really checked: an Observation without the phd category fails it', async () => {
    const f = fixtures.find((x) => x.name === 'weight-scale')!;
    const [o] = await observationsOf(f);
    expect(o!.meta?.profile).toContain(PHD_NUMERIC);
    expect(await validate(o!, PHD_NUMERIC)).toEqual([]);
    const noCategory = { ...o!, category: o!.category!.slice(0, 1) };
    expect((await validate(noCategory, PHD_NUMERIC)).join('\n')).toMatch(/PHD-Observation/);
  });

  it('every fixture yields Observations valid against FHIR R4 and their vital-signs profile', async () => {
    const failures: string[] = [];
    let validated = 0;
    let profiled = 0;
    for (const f of fixtures) {
      for (const o of await observationsOf(f)) {
        for (const profile of [
          undefined,
          ...new Set([...profilesOf(o), ...(o.meta?.profile ?? [])]),
        ]) {
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
