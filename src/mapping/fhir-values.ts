/**
 * Observation.value[x] (and component values) from a reading, per MedTech's
 * value types: Quantity, SampledData, CodeableConcept, String. Pure.
 *
 * Standards: FHIR R4 Quantity carries the UCUM system and code beside the
 * human-readable unit; an unusable reading is not invented but recorded as
 * Observation.dataAbsentReason (R4 value set data-absent-reason: error,
 * not-a-number, positive-infinity, negative-infinity, unknown); SampledData
 * follows R4 (origin, period in ms, dimensions, data with "E" for no value).
 */
import type { CodeableConcept, Quantity, SampledData } from 'fhir/r4.js';
import { ABSENT_TEXT, type AbsentCode } from './special-values.js';
import type { Coding, FhirValueSpec, MeasurementValue, SampledDataValueSpec } from './types.js';

export const DATA_ABSENT_SYSTEM = 'http://terminology.hl7.org/CodeSystem/data-absent-reason';

export interface ValueFields {
  valueQuantity?: Quantity;
  valueString?: string;
  valueCodeableConcept?: CodeableConcept;
  valueSampledData?: SampledData;
  dataAbsentReason?: CodeableConcept;
}

export type { AbsentCode };

function absent(code: AbsentCode, text: string): ValueFields {
  return { dataAbsentReason: { coding: [{ system: DATA_ABSENT_SYSTEM, code }], text } };
}

export function codings(codes: readonly Coding[]) {
  return codes.map((c) => ({
    ...(c.system !== undefined ? { system: c.system } : {}),
    code: c.code,
    ...(c.display ? { display: c.display } : {}),
  }));
}

/** A reading as a number, or why it is not one. */
export function readNumber(raw: MeasurementValue): number | AbsentCode {
  if (typeof raw === 'number') return Number.isFinite(raw) ? raw : 'error';
  if (typeof raw !== 'string') return 'error';
  const s = raw.trim();
  if (s === 'NaN') return 'not-a-number';
  if (s === 'Infinity' || s === '+Infinity') return 'positive-infinity';
  if (s === '-Infinity') return 'negative-infinity';
  if (s === '' || !/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) return 'error';
  const n = Number(s);
  return Number.isFinite(n) ? n : 'error';
}

/** SampledData.origin: zero in the template's unit (UCUM system and code when given). */
export function sampledOrigin(spec: SampledDataValueSpec): Quantity {
  return {
    value: 0,
    ...(spec.unit !== '' ? { unit: spec.unit } : {}),
    ...(spec.system !== undefined ? { system: spec.system } : {}),
    ...(spec.code !== undefined ? { code: spec.code } : {}),
  };
}

/**
 * SampledData.period of a reading: the device's own interval when the template
 * names the value holding it (`periodName`, ms) and it is a positive number,
 * else the template's defaultPeriod.
 */
export function samplePeriod(
  spec: SampledDataValueSpec,
  values: Readonly<Record<string, MeasurementValue>>,
): number {
  if (spec.periodName === undefined) return spec.defaultPeriod;
  const raw = values[spec.periodName];
  const n = raw === undefined ? NaN : readNumber(raw);
  return typeof n === 'number' && n > 0 ? n : spec.defaultPeriod;
}

/** One SampledData token: a decimal, or "E" (error / no usable value). */
export function sampleToken(raw: MeasurementValue | undefined): string {
  if (raw === undefined) return 'E';
  const n = readNumber(raw);
  return typeof n === 'number' ? String(n) : 'E';
}

export interface Sample {
  readonly timeMs: number;
  readonly token: string;
}

/**
 * Lays samples on the grid [startMs, endMs] at `periodMs` (MedTech's
 * BuildSampledData): one token per slot, "E" for an empty slot. When several
 * samples fall in one slot, the one with the latest time wins; on equal times
 * the earlier in `samples` wins (callers put existing data first, so a replayed
 * reading never overwrites).
 */
export function layOutSamples(
  samples: readonly Sample[],
  startMs: number,
  endMs: number,
  periodMs: number,
): string {
  const slots = Math.floor((endMs - startMs) / periodMs) + 1;
  const tokens: string[] = new Array<string>(slots).fill('E');
  const at: number[] = new Array<number>(slots).fill(-Infinity);
  for (const s of samples) {
    if (s.token === 'E') continue;
    const i = Math.floor((s.timeMs - startMs) / periodMs);
    if (i < 0 || i >= slots) continue;
    if (s.timeMs > at[i]!) {
      tokens[i] = s.token;
      at[i] = s.timeMs;
    }
  }
  return tokens.join(' ');
}

/** SampledData.data → samples at their slot start times ("E" slots dropped). */
export function readSamples(data: string, startMs: number, periodMs: number): Sample[] {
  const out: Sample[] = [];
  data
    .trim()
    .split(/\s+/)
    .forEach((token, i) => {
      if (token !== '' && token !== 'E' && token !== 'L' && token !== 'U') {
        out.push({ timeMs: startMs + i * periodMs, token });
      }
    });
  return out;
}

/** The value[x] fields of one reading (a point in time). */
export function valueFields(
  spec: FhirValueSpec,
  values: Readonly<Record<string, MeasurementValue>>,
  absentValues: Readonly<Record<string, AbsentCode>> = {},
): ValueFields {
  if (spec.valueType === 'CodeableConcept') {
    // MedTech: the reading's value is not used; its presence records the concept.
    return {
      valueCodeableConcept: {
        coding: codings(spec.codes),
        ...(spec.text !== undefined ? { text: spec.text } : {}),
      },
    };
  }
  // A device special value or sentinel: the device said there is no measurement.
  const marked = absentValues[spec.valueName];
  if (marked !== undefined && spec.valueType !== 'SampledData') {
    return absent(marked, ABSENT_TEXT[marked]);
  }
  const raw = values[spec.valueName];
  if (spec.valueType === 'SampledData') {
    if (raw === undefined && marked === undefined)
      return absent('unknown', `no value "${spec.valueName}"`);
    return {
      valueSampledData: {
        origin: sampledOrigin(spec),
        period: samplePeriod(spec, values),
        dimensions: 1,
        data: sampleToken(raw),
      },
    };
  }
  if (raw === undefined) return absent('unknown', `no value "${spec.valueName}"`);
  if (spec.valueType === 'String') return { valueString: String(raw) };
  const n = readNumber(raw);
  if (typeof n !== 'number') return absent(n, `value "${spec.valueName}" is not a finite number`);
  // FHIR R4 Quantity: value + UCUM system and code; unit is the human-readable form.
  const q: Quantity = {
    value: n,
    ...(spec.unit !== undefined && spec.unit !== '' ? { unit: spec.unit } : {}),
    ...(spec.system !== undefined ? { system: spec.system } : {}),
    ...(spec.code !== undefined ? { code: spec.code } : {}),
  };
  return { valueQuantity: q };
}
