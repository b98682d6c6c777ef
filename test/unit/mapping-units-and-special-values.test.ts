/**
 * Every value as the device meant it (issue 10), through the library's own
 * templates and the pure path the worker, `iomt mappings debug` and `iomt
 * mappings test` share: units converted with UCUM or refused with their code,
 * never relabelled; IEEE 11073 special values and device sentinels recorded as
 * dataAbsentReason; implausible values flagged and reported for the counter.
 * (Identities and the other details: mapping-identity-and-details.test.ts.)
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { debugMessage, type MappingSet } from '../../src/mapping/index.js';
import { AT, quantity, RECEIVED, useLibraryMappings } from '../support/library-mappings.js';

const DAR = 'http://terminology.hl7.org/CodeSystem/data-absent-reason';
const { normalize, refusal, observations, only, mappings: library } = useLibraryMappings();
let mappings: MappingSet;
beforeAll(() => {
  mappings = library();
});

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
    expect(spo2.interpretation?.[0]?.coding?.map((c) => c.code)).toEqual(['questionable', 'HX']);
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
    expect(bp.component![1]!.interpretation?.[0]?.coding?.map((c) => c.code)).toEqual([
      'questionable',
      'LX',
    ]);
    expect(out.implausible.map((f) => [f.code, f.side])).toEqual([['8462-4', 'low']]);
  });

  it('limits compare in their own unit: 3450 kg is implausible, 3450 g is not', async () => {
    const heavy = await normalize({ kind: 'weight-scale', time: AT, weight: 3450, unit: 'kg' });
    expect(heavy.implausible.map((f) => f.code)).toEqual(['29463-7']);
    const baby = await normalize({ kind: 'weight-scale', time: AT, weight: 3450, unit: 'g' });
    expect(baby.implausible).toEqual([]);
  });
});
