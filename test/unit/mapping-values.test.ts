/**
 * Every value as the device meant it (issue 10), through the library's own
 * templates and the pure path the worker, `iomt mappings debug` and `iomt
 * mappings test` share: units converted with UCUM or refused with their code,
 * never relabelled; IEEE 11073 special values and device sentinels recorded as
 * dataAbsentReason; implausible values flagged; identities that never merge two
 * readings; the device's own sampling interval and time precision kept.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Observation, Quantity } from 'fhir/r4.js';
import { beforeAll, describe, expect, it } from 'vitest';
import type { PipelineError } from '../../src/errors.js';
import {
  bindingResolver,
  compileSources,
  debugMessage,
  DEFAULT_POLICY,
  loadMappings,
  normalizeMessage,
  runFixture,
  type MappingSet,
  type NormalizeResult,
} from '../../src/mapping/index.js';

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../mappings');
const DAR = 'http://terminology.hl7.org/CodeSystem/data-absent-reason';
const AT = '2026-11-26T09:00:00.000Z';
const RECEIVED = Date.parse('2026-11-26T09:00:05Z');
let mappings: MappingSet;

beforeAll(async () => {
  const r = await loadMappings(dir);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  mappings = r.mappings;
});

async function normalize(body: unknown, deviceId = 'dev-1'): Promise<NormalizeResult> {
  return normalizeMessage(mappings, {
    payload: JSON.stringify(body),
    meta: { deviceId, topic: `devices/${deviceId}/telemetry`, receivedAt: RECEIVED },
    patientId: 'p-1',
    identifierSystem: 'urn:iomt:observation',
    resolveIdentity: bindingResolver({ patientId: 'p-1' }),
  });
}

async function refusal(body: unknown): Promise<PipelineError> {
  try {
    await normalize(body);
  } catch (err) {
    return err as PipelineError;
  }
  throw new Error('expected the message to be refused');
}

async function observations(body: unknown): Promise<Observation[]> {
  return (await normalize(body)).observations.map((o) => o.observation);
}

async function only(body: unknown, type?: string): Promise<Observation> {
  const out = await normalize(body);
  const picked = out.observations.filter((o) => type === undefined || o.templateName === type);
  expect(picked).toHaveLength(1);
  return picked[0]!.observation;
}

const quantity = (o: { valueQuantity?: Quantity }) => {
  const q = o.valueQuantity;
  return q ? [q.value, q.code] : undefined;
};

describe('units: converted with UCUM, never relabelled', () => {
  const weigh = (weight: number, unit?: string) => ({
    kind: 'weight-scale',
    time: AT,
    weight,
    ...(unit !== undefined ? { unit } : {}),
  });

  it('"lbs", "lb" and "[lb_av]": pounds become kilograms', async () => {
    for (const unit of ['lbs', 'lb', 'LBS', '[lb_av]', 'pounds']) {
      const o = await only(weigh(165.2, unit));
      expect(quantity(o), unit).toEqual([74.93, 'kg']);
    }
  });

  it('"g": grams become kilograms (a newborn of 3450 g is 3.45 kg, not 3450 kg)', async () => {
    const o = await only(weigh(3450, 'g'));
    expect(quantity(o)).toEqual([3.45, 'kg']);
    expect(o.status).toBe('final');
  });

  it('"kpa" and "kPa": blood pressure becomes mm[Hg]', async () => {
    for (const unit of ['kpa', 'kPa', 'KPA']) {
      const [bp] = await observations({
        kind: 'bp-cuff',
        measuredAt: AT,
        systolic: 16.4,
        diastolic: 10.5,
        unit,
      });
      expect(bp!.component!.map(quantity), unit).toEqual([
        [123, 'mm[Hg]'],
        [78.8, 'mm[Hg]'],
      ]);
    }
  });

  it('"mmol/l": glucose becomes mg/dL with glucose\'s molar mass, and is not flagged low', async () => {
    const o = await only({ kind: 'glucose-meter', time: AT, glucose: 5.4, unit: 'mmol/l' });
    // 5.4 mmol/L × 180.156 g/mol = 97.3 mg/dL, kept to the reading's two significant digits.
    expect(quantity(o)).toEqual([97, 'mg/dL']);
    expect(o.interpretation?.[0]?.coding?.[0]?.code).toBe('N');
    expect(o.note?.[0]?.text).toBe('measured as 5.4 mmol/L (UCUM), converted to mg/dL');
  });

  it('"°F", "F", "f", "[degF]": a thermometer\'s Fahrenheit becomes Cel', async () => {
    for (const unit of ['°F', 'F', 'f', '[degF]', 'degF']) {
      const o = await only({ kind: 'thermometer', time: AT, value: 98.6, unit, site: 'oral' });
      expect(quantity(o), unit).toEqual([37, 'Cel']);
    }
  });

  it('the bedside monitor reads temperatureUnit: 98.6 "F" is 37 Cel, not 98.6 Cel', async () => {
    const o = await only(
      { timestamp: AT, temperature: 98.6, temperatureUnit: 'F' },
      'bodytemperature',
    );
    expect(quantity(o)).toEqual([37, 'Cel']);
    const celsius = await only({ timestamp: AT, temperature: 36.9 }, 'bodytemperature');
    expect(quantity(celsius)).toEqual([36.9, 'Cel']);
  });

  it('SpO2 as a fraction (0.97) becomes 97 %, from the monitor, the oximeter and a gateway', async () => {
    expect(quantity(await only({ timestamp: AT, spo2: 0.97 }, 'spo2'))).toEqual([97, '%']);
    const oxi = await only({ kind: 'pulse-oximeter', readings: [{ at: AT, spo2: 0.97 }] }, 'spo2');
    expect(quantity(oxi)).toEqual([97, '%']);
    const fraction = await only(
      { kind: 'pulse-oximeter', readings: [{ at: AT, spo2: 0.95, unit: 'fraction' }] },
      'spo2',
    );
    expect(quantity(fraction)).toEqual([95, '%']);
    expect(quantity(await only({ timestamp: AT, spo2: 97 }, 'spo2'))).toEqual([97, '%']);
  });

  it('a unit that cannot be read or converted is refused with UnitNotConvertible', async () => {
    const cases: [unknown, string][] = [
      [weigh(70, 'stone-ish'), 'unknown-unit'],
      [weigh(70, 'mmHg'), 'incommensurable'],
      [weigh(70), 'unit-missing'], // a scale that does not say kg or lb: never guessed
      [{ kind: 'glucose-meter', time: AT, glucose: 5.4 }, 'unit-missing'],
      [{ kind: 'glucose-meter', time: AT, glucose: 5.4, unit: 'mmol/kg' }, 'incommensurable'],
      [{ kind: 'thermometer', time: AT, value: 98.6, unit: 'K/s' }, 'incommensurable'],
    ];
    for (const [body, reason] of cases) {
      const err = await refusal(body);
      expect(err.code, JSON.stringify(body)).toBe('UnitNotConvertible');
      expect(err.details.reason, JSON.stringify(body)).toBe(reason);
      // The reason names the template and value, never the payload's unit or number.
      expect(err.message).not.toMatch(/stone-ish|mmHg|mmol\/kg|K\/s|70|5\.4|98\.6/);
    }
  });

  it('mappings debug shows the conversion, and refuses what the worker refuses, with the code', async () => {
    const debug = (body: unknown) =>
      debugMessage(mappings, {
        payload: JSON.stringify(body),
        meta: { deviceId: 'scale-1', topic: 'devices/scale-1/telemetry', receivedAt: RECEIVED },
        patientId: 'p-1',
        identifierSystem: 'urn:iomt:observation',
      });
    const ok = await debug(weigh(165.2, 'lbs'));
    expect(ok.ok).toBe(true);
    expect(ok.text).toContain('value "kg": 165.2 [lb_av] → 74.93 kg (UCUM)');
    const refused = await debug(weigh(165.2, 'pfund'));
    expect(refused.ok).toBe(false);
    expect(refused.text).toContain('REJECTED UnitNotConvertible (stage normalize)');
  });
});

describe('IEEE 11073 special values and device sentinels → dataAbsentReason', () => {
  const absentOf = (o: { dataAbsentReason?: { coding?: { system?: string; code?: string }[] } }) =>
    o.dataAbsentReason?.coding?.find((c) => c.system === DAR)?.code;

  it('FLOAT (the bedside monitor): NaN, NRes, +INF, -INF, reserved, as numbers, signed or hex', async () => {
    const cases: [unknown, string][] = [
      [8388607, 'not-a-number'], // 0x007FFFFF
      ['0x7FFFFF', 'not-a-number'],
      [8388608, 'unknown'], // 0x00800000 NRes
      [-8388608, 'unknown'],
      [8388606, 'positive-infinity'], // 0x007FFFFE
      [8388610, 'negative-infinity'], // 0x00800002
      [-8388606, 'negative-infinity'],
      [8388609, 'error'], // 0x00800001 reserved
    ];
    for (const [raw, code] of cases) {
      const o = await only({ timestamp: AT, respiratoryRate: raw }, 'respiratoryrate');
      expect(o.valueQuantity, String(raw)).toBeUndefined();
      expect(absentOf(o), String(raw)).toBe(code);
    }
  });

  it('SFLOAT (the BP cuff): 0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801', async () => {
    const cases: [unknown, string][] = [
      [2047, 'not-a-number'],
      ['0x07FF', 'not-a-number'],
      [2048, 'unknown'],
      [-2048, 'unknown'],
      [2046, 'positive-infinity'],
      ['0x0802', 'negative-infinity'],
      [2049, 'error'],
    ];
    for (const [raw, code] of cases) {
      const [, pulse] = await observations({
        kind: 'bp-cuff',
        measuredAt: AT,
        systolic: 120,
        diastolic: 80,
        pulse: raw,
      });
      expect(pulse!.valueQuantity, String(raw)).toBeUndefined();
      expect(absentOf(pulse!), String(raw)).toBe(code);
    }
    // In a panel, the component says it; its neighbours keep their values.
    const [bp] = await observations({
      kind: 'bp-cuff',
      measuredAt: AT,
      systolic: 2047,
      diastolic: 80,
    });
    expect(absentOf(bp!.component![0]!)).toBe('not-a-number');
    expect(quantity(bp!.component![1]!)).toEqual([80, 'mm[Hg]']);
  });

  it('special values are only special where the template says which encoding a device sends', async () => {
    // 2047 steps in a minute is implausible but a number: the step counter declares no encoding.
    const out = await normalize({
      kind: 'step-counter',
      minutes: [{ start: '2026-11-26T08:00:00Z', steps: 2047 }],
    });
    expect(out.observations[0]!.observation.valueSampledData?.data).toContain('2047');
  });

  it("configured sentinels: the oximeter's 127 (no SpO2) and 255 (no pulse rate)", async () => {
    const out = await normalize({
      kind: 'pulse-oximeter',
      readings: [{ at: AT, spo2: 127, pulse: 255 }],
    });
    for (const o of out.observations) {
      expect(o.observation.valueQuantity).toBeUndefined();
      expect(absentOf(o.observation)).toBe('error');
    }
    expect(out.implausible).toEqual([]);
  });
});

describe('plausibility: flagged, kept, reported for the counter', () => {
  it('SpO2 127 % from a monitor without sentinels is kept, preliminary, HX, and reported', async () => {
    const out = await normalize({ timestamp: AT, spo2: 127, heartRate: 72 });
    const spo2 = out.observations.find((o) => o.templateName === 'spo2')!.observation;
    expect(quantity(spo2)).toEqual([127, '%']);
    expect(spo2.status).toBe('preliminary');
    expect(spo2.interpretation?.[0]?.coding?.[0]?.code).toBe('HX');
    expect(spo2.interpretation?.[0]?.text).toMatch(/implausible.*\(0,100\] %/);
    const hr = out.observations.find((o) => o.templateName === 'heartrate')!.observation;
    expect(hr.status).toBe('final');
    expect(hr.interpretation).toBeUndefined();
    expect(out.implausible).toEqual([
      { type: 'spo2', code: '59408-5', side: 'high', observationId: spo2.id },
    ]);
  });

  it('a component out of range flags the component and the panel', async () => {
    const out = await normalize({
      kind: 'bp-cuff',
      measuredAt: AT,
      systolic: 120,
      diastolic: 0,
    });
    const bp = out.observations[0]!.observation;
    expect(bp.status).toBe('preliminary');
    expect(bp.component![1]!.interpretation?.[0]?.coding?.[0]?.code).toBe('LX');
    expect(out.implausible.map((f) => [f.code, f.side])).toEqual([['8462-4', 'low']]);
  });

  it('limits compare in their own unit: 3450 kg is implausible, 3450 g is not', async () => {
    const heavy = await normalize({ kind: 'weight-scale', time: AT, weight: 3450, unit: 'kg' });
    expect(heavy.implausible.map((f) => f.code)).toEqual(['29463-7']);
    const baby = await normalize({ kind: 'weight-scale', time: AT, weight: 3450, unit: 'g' });
    expect(baby.implausible).toEqual([]);
  });
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
