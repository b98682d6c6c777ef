/**
 * Issue 10, through the library's own templates and the pure path the worker,
 * `iomt mappings debug` and `iomt mappings test` share: identities that never
 * merge two readings (type name, value and unit, full time precision), the
 * device's own sampling interval, glucose meal contexts and limits, codes,
 * mean arterial pressure, meta.profile, daily windows in a time zone, and the
 * worker's input policy in the debugger and fixtures.
 * (Units, special values, plausibility: mapping-units-and-special-values.test.ts.)
 */
import type { Observation } from 'fhir/r4.js';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  compileSources,
  debugMessage,
  DEFAULT_POLICY,
  normalizeMessage,
  runFixture,
  type MappingSet,
} from '../../src/mapping/index.js';
import { AT, quantity, RECEIVED, useLibraryMappings } from '../support/library-mappings.js';

const { normalize, refusal, observations, only, mappings: library } = useLibraryMappings();
let mappings: MappingSet;
beforeAll(() => {
  mappings = library();
});

describe('identities that never merge two readings', () => {
  it('two types sharing a first code (8310-5) give two Observations', async () => {
    const monitor = await only({ timestamp: AT, temperature: 38 }, 'bodytemperature');
    const thermometer = await only({
      kind: 'thermometer',
      time: AT,
      value: 100.4,
      unit: 'F',
      site: 'oral',
    });
    expect(monitor.code.coding?.[0]?.code).toBe(thermometer.code.coding?.[0]?.code);
    expect(monitor.id).not.toBe(thermometer.id);
    expect(monitor.identifier?.[0]?.value).toContain('/bodytemperature/8310-5/');
    expect(thermometer.identifier?.[0]?.value).toContain('/bodytemperature-site/8310-5/');
  });

  it("MedTech's basic sample: deviceWorn and deviceRemoved sharing a code are two Observations", async () => {
    const device = {
      templateType: 'CollectionContent',
      template: ['deviceWorn', 'deviceRemoved'].map((typeName) => ({
        templateType: 'JsonataContent',
        template: {
          typeName,
          typeMatchExpression: `$exists(${typeName})`,
          timestampExpression: 't',
          values: [{ valueName: typeName, valueExpression: typeName, required: true }],
        },
      })),
    };
    const fhir = {
      templateType: 'CollectionFhir',
      template: ['deviceWorn', 'deviceRemoved'].map((typeName) => ({
        templateType: 'CodeValueFhir',
        template: {
          typeName,
          codes: [{ system: 'https://www.mydevice.com/v1', code: 'deviceEvent' }],
          value: {
            valueType: 'CodeableConcept',
            valueName: typeName,
            codes: [{ system: 'https://www.mydevice.com/v1', code: typeName }],
          },
        },
      })),
    };
    const r = compileSources([
      { file: 'device/d.json', kind: 'device', text: JSON.stringify(device) },
      { file: 'fhir/f.json', kind: 'fhir', text: JSON.stringify(fhir) },
    ]);
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    const out = await normalizeMessage(r.mappings, {
      payload: JSON.stringify({ t: AT, deviceWorn: true, deviceRemoved: true }),
      meta: { deviceId: 'band-1', topic: 'devices/band-1/telemetry', receivedAt: RECEIVED },
      patientId: 'p-1',
      identifierSystem: 'urn:iomt:observation',
    });
    expect(out.observations.map((o) => o.observation.identifier?.[0]?.value)).toEqual([
      'band-1/p-1/deviceWorn/deviceEvent/2026-11-26T09:00:00.000Z/deviceWorn',
      'band-1/p-1/deviceRemoved/deviceEvent/2026-11-26T09:00:00.000Z/deviceRemoved',
    ]);
  });

  it('two same-type readings in one millisecond with different values are both kept (PHD STU 1.1)', async () => {
    const out = await normalize({
      kind: 'pulse-oximeter',
      readings: [
        { at: AT, spo2: 97 },
        { at: AT, spo2: 93 },
      ],
    });
    const ids = out.observations.map((o) => o.observation.id);
    expect(new Set(ids).size).toBe(2);
    expect(out.observations.map((o) => o.observation.status)).toEqual(['final', 'final']);
    // The same reading sent twice is one Observation (a re-upload, as the PHD IG intends).
    const again = await normalize({
      kind: 'pulse-oximeter',
      readings: [
        { at: AT, spo2: 97 },
        { at: AT, spo2: 97 },
      ],
    });
    expect(new Set(again.observations.map((o) => o.observation.id)).size).toBe(1);
  });

  it('identifier values are safe in FHIR token search (no unescaped , | $ \\)', async () => {
    const [bp] = await observations({
      kind: 'bp-cuff',
      measuredAt: AT,
      systolic: 120,
      diastolic: 80,
      mean: 93,
      unit: 'mmHg',
    });
    const value = bp!.identifier![0]!.value!;
    expect(value).toBe(
      'dev-1/p-1/bloodpressure/85354-9/2026-11-26T09:00:00.000Z/120 mm[Hg];80 mm[Hg];93 mm[Hg]',
    );
    expect(value).not.toMatch(/[,|$\\]/);
  });

  it("keeps the device's sub-millisecond time: readings 250 µs apart are two readings", async () => {
    const out = await normalize({
      kind: 'pulse-oximeter',
      readings: [
        { at: '2026-11-26T10:00:00.000100+01:00', spo2: 97 },
        { at: '2026-11-26T10:00:00.000350+01:00', spo2: 97 },
      ],
    });
    expect(out.observations.map((o) => o.observation.effectiveDateTime)).toEqual([
      '2026-11-26T09:00:00.0001Z',
      '2026-11-26T09:00:00.00035Z',
    ]);
    expect(new Set(out.observations.map((o) => o.observation.id)).size).toBe(2);
  });
});

describe('details', () => {
  const pleth = (intervalMs: number) => ({
    kind: 'pleth',
    segment: `seg-${intervalMs}`,
    start: '2026-11-26T09:00:00.000Z',
    intervalMs,
    samples: [10, 11, 12, 13, 14, 15, 16, 17, 18, 19],
  });

  it('pleth at 8 ms and at 40 ms keeps every sample in its place, at the device period', async () => {
    for (const interval of [8, 40, 20]) {
      const [o] = await observations(pleth(interval));
      expect(o!.valueSampledData?.period, `${interval} ms`).toBe(interval);
      expect(o!.valueSampledData?.data, `${interval} ms`).toBe('10 11 12 13 14 15 16 17 18 19');
      expect(o!.effectivePeriod, `${interval} ms`).toEqual({
        start: '2026-11-26T09:00:00.000Z',
        end: new Date(Date.parse('2026-11-26T09:00:00.000Z') + 9 * interval).toISOString(),
      });
    }
  });

  const glucose = async (body: Record<string, unknown>) =>
    only({ kind: 'glucose-meter', time: AT, unit: 'mg/dL', ...body });
  const interp = (o: Observation) => o.interpretation?.[0]?.coding?.[0]?.code;
  const meal = (o: Observation) => o.component?.[0];

  it('glucose: "before a meal" is preprandial, not fasting, with its own range', async () => {
    const o = await glucose({ glucose: 110, meal: 'before' });
    expect(meal(o)?.valueCodeableConcept?.coding?.[0]?.code).toBe('8417868');
    expect(o.referenceRange?.[0]?.high?.value).toBe(130);
    expect(o.referenceRange?.[0]?.text).toMatch(/^before a meal/);
    expect(interp(o)).toBe('N'); // 110 is high fasting, in range before a meal
    const fasting = await glucose({ glucose: 110, meal: 'fasting' });
    expect(meal(fasting)?.valueCodeableConcept?.coding?.[0]?.code).toBe('8417876');
    expect(interp(fasting)).toBe('H');
    const after = await glucose({ glucose: 150, meal: 'after' });
    expect(meal(after)?.valueCodeableConcept?.coding?.[0]?.code).toBe('8417872');
    expect(after.referenceRange?.[0]?.text).toMatch(/^after a meal/);
  });

  it('glucose: no meal context → "unknown", and no range text that claims one', async () => {
    const o = await glucose({ glucose: 120 });
    expect(meal(o)?.dataAbsentReason?.coding?.[0]?.code).toBe('unknown');
    expect(o.referenceRange).toEqual([
      {
        low: { value: 70, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
      },
    ]);
  });

  it('glucose: 28 mg/dL is LL (critical), 60 is L, 450 is HH', async () => {
    expect(interp(await glucose({ glucose: 28 }))).toBe('LL');
    expect(interp(await glucose({ glucose: 60 }))).toBe('L');
    expect(interp(await glucose({ glucose: 450 }))).toBe('HH');
  });

  it('glucose: HI / LO at the range the meter reports, else dataAbsentReason — no invented bound', async () => {
    const hi = await glucose({ glucose: 'HI', range: { low: 20, high: 600 } });
    expect(hi.valueQuantity).toMatchObject({ value: 600, comparator: '>', code: 'mg/dL' });
    expect(interp(hi)).toBe('HH');
    const mmol = await glucose({ glucose: 'LO', unit: 'mmol/L', range: { low: 1.1, high: 33.3 } });
    expect(mmol.valueQuantity).toMatchObject({ value: 20, comparator: '<', code: 'mg/dL' });
    expect(interp(mmol)).toBe('LL');
    const bare = await glucose({ glucose: 'HI' });
    expect(bare.valueQuantity).toBeUndefined();
    expect(bare.dataAbsentReason?.coding?.[0]?.code).toBe('unknown');
    expect(bare.dataAbsentReason?.text).toMatch(/HI: above its measuring range/);
    expect(interp(bare)).toBe('HH');
  });

  it('glucose: a self-test meter reading is not categorised laboratory', async () => {
    expect((await glucose({ glucose: 100 })).category).toBeUndefined();
  });

  it('heart rate of unknown source: generic LOINC 8867-4 only; code.text is a human display', async () => {
    const hr = await only({ timestamp: AT, heartRate: 72 }, 'heartrate');
    expect(hr.code.coding?.map((c) => c.code)).toEqual(['8867-4']);
    expect(hr.code.text).toBe('Heart rate');
    const [, cuffPulse] = await observations({
      kind: 'bp-cuff',
      measuredAt: AT,
      systolic: 120,
      diastolic: 80,
      pulse: 70,
    });
    expect(cuffPulse!.code.text).toBe('Heart rate');
  });

  it('mean arterial pressure is mapped where sent, and left out where not', async () => {
    const [withMean] = await observations({
      kind: 'bp-cuff',
      measuredAt: AT,
      systolic: 120,
      diastolic: 80,
      mean: 93,
    });
    expect(withMean!.component!.map((c) => c.code.coding?.[0]?.code)).toEqual([
      '8480-6',
      '8462-4',
      '8478-0',
    ]);
    expect(quantity(withMean!.component![2]!)).toEqual([93, 'mm[Hg]']);
    const [without] = await observations({
      kind: 'bp-cuff',
      measuredAt: AT,
      systolic: 120,
      diastolic: 80,
    });
    expect(without!.component).toHaveLength(2);
  });

  it('meta.profile names the vital-signs profile each Observation meets', async () => {
    const out = await observations({ timestamp: AT, heartRate: 72, spo2: 97, respiratoryRate: 14 });
    expect(out.map((o) => o.meta?.profile)).toEqual([
      ['http://hl7.org/fhir/StructureDefinition/heartrate'],
      ['http://hl7.org/fhir/StructureDefinition/oxygensat'],
      ['http://hl7.org/fhir/StructureDefinition/resprate'],
    ]);
  });

  it('a daily step window is the local day of WINDOW_TIME_ZONE', async () => {
    const body = {
      kind: 'step-counter',
      minutes: [{ start: '2026-11-25T23:30:00Z', steps: 40 }], // 00:30 on the 26th in Berlin
    };
    const run = (windowTimeZone: string) =>
      normalizeMessage(mappings, {
        payload: JSON.stringify(body),
        meta: { deviceId: 'band-1', topic: 'devices/band-1/telemetry', receivedAt: RECEIVED },
        patientId: 'p-1',
        identifierSystem: 'urn:iomt:observation',
        policy: { ...DEFAULT_POLICY, windowTimeZone },
      });
    const utc = (await run('UTC')).observations[0]!.observation;
    expect(utc.effectivePeriod).toEqual({
      start: '2026-11-25T00:00:00.000Z',
      end: '2026-11-25T23:59:59.999Z',
    });
    const berlin = (await run('Europe/Berlin')).observations[0]!.observation;
    expect(berlin.effectivePeriod).toEqual({
      start: '2026-11-25T23:00:00.000Z',
      end: '2026-11-26T22:59:59.999Z',
    });
    // Minute 30 of the Berlin day holds the 40 steps.
    expect(berlin.valueSampledData?.data?.split(' ')[30]).toBe('40');
    // A DST day in New York has 25 hours (1 Nov 2026).
    const dst = await normalizeMessage(mappings, {
      payload: JSON.stringify({
        kind: 'step-counter',
        minutes: [{ start: '2026-11-01T12:00:00Z', steps: 5 }],
      }),
      meta: {
        deviceId: 'band-1',
        topic: 'devices/band-1/telemetry',
        receivedAt: Date.parse('2026-11-01T12:00:05Z'),
      },
      patientId: 'p-1',
      identifierSystem: 'urn:iomt:observation',
      policy: { ...DEFAULT_POLICY, windowTimeZone: 'America/New_York' },
    });
    const day = dst.observations[0]!.observation;
    expect(day.effectivePeriod).toEqual({
      start: '2026-11-01T04:00:00.000Z',
      end: '2026-11-02T04:59:59.999Z',
    });
    expect(day.valueSampledData?.data?.split(' ')).toHaveLength(25 * 60);
  });
});

describe("the debugger and the fixtures apply the worker's input policy", () => {
  const epochSeconds = {
    timestamp: Math.floor(RECEIVED / 1000),
    heartRate: 72,
  };

  it('epoch seconds (read as a 1970 date) are refused by mappings debug, as by the worker', async () => {
    const report = await debugMessage(mappings, {
      payload: JSON.stringify(epochSeconds),
      meta: { deviceId: 'm-1', topic: 'devices/m-1/telemetry', receivedAt: RECEIVED },
      patientId: 'p-1',
      identifierSystem: 'urn:iomt:observation',
    });
    expect(report.ok).toBe(false);
    expect(report.text).toContain('REJECTED TimestampOutOfRange');
    expect(report.text).toContain('epoch seconds where the template reads epoch milliseconds');
  });

  it('mappings test runs the same policy: a fixture of epoch seconds is refused', async () => {
    const outcome = await runFixture(mappings, {
      name: 'epoch-seconds',
      settings: { deviceId: 'm-1', patientId: 'p-1', receivedAt: new Date(RECEIVED).toISOString() },
      message: JSON.stringify(epochSeconds),
      expectedError: 'TimestampOutOfRange',
    });
    expect(outcome).toEqual({ name: 'epoch-seconds', ok: true, differences: [] });
  });

  it('the JSON shape limits apply in the pure path too', async () => {
    const err = await refusal(JSON.parse(`${'{"a":'.repeat(40)}1${'}'.repeat(40)}`));
    expect(err.code).toBe('InvalidPayload');
    expect(err.message).toMatch(/INPUT_MAX_JSON_DEPTH/);
  });
});
