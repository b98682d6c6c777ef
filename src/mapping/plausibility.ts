/**
 * Physiological plausibility. A value outside its limits is kept — never
 * dropped, never changed — and flagged so that no one reads it as a verified
 * measurement:
 *
 *  - Observation.status `preliminary` (FHIR R4: "data may be incomplete or
 *    unverified"), not `final`;
 *  - Observation.interpretation (or the component's): "questionable" (the
 *    IEEE 11073 measurement status, coded as the HL7 PHD IG does) and HX
 *    "above high threshold" / LX "below low threshold" (HL7 v3
 *    ObservationInterpretation), with a text naming the limit;
 *  - counted by the worker (iomt_readings_implausible_total).
 *
 * Limits are per code (LOINC or IEEE 11073 MDC), in a UCUM unit: a value in
 * another unit is compared after UCUM conversion. Pure.
 *
 * Defaults (DEFAULT_LIMITS) are the MIMIC-IV vital-sign cleaning limits of the
 * MIT Laboratory for Computational Physiology (mimic-code,
 * mimic-iv/concepts/measurement/vitalsign.sql), which keep a charted value only
 * inside them; body weight is bounded by the heaviest documented human (about
 * 635 kg, Guinness World Records). PLAUSIBILITY_LIMITS changes them.
 */
import type { CodeableConcept, Observation, ObservationComponent } from 'fhir/r4.js';
import { convertValue, isUcum } from './units.js';

export const LOINC_SYSTEM = 'http://loinc.org';
export const MDC_SYSTEM = 'urn:iso:std:iso:11073:10101';
export const INTERPRETATION_SYSTEM =
  'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation';
/** HL7 POCD IG measurement status (IEEE 11073-10201 MeasurementStatus), as the PHD IG uses it. */
export const MEASUREMENT_STATUS_SYSTEM =
  'http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status';

export interface Bound {
  readonly value: number;
  /** `[`/`]`: the bound itself is plausible; `(`/`)`: it is not. */
  readonly inclusive: boolean;
}

export interface PlausibilityLimit {
  /** LOINC or MDC code of the Observation or component. */
  readonly code: string;
  readonly low?: Bound;
  readonly high?: Bound;
  /** UCUM unit of the bounds. */
  readonly unit: string;
}

const open = (value: number): Bound => ({ value, inclusive: false });
const closed = (value: number): Bound => ({ value, inclusive: true });

function limits(codes: readonly string[], unit: string, low?: Bound, high?: Bound) {
  return codes.map((code): PlausibilityLimit => ({
    code,
    unit,
    ...(low ? { low } : {}),
    ...(high ? { high } : {}),
  }));
}

/**
 * The defaults, with their source (mimic-code vitalsign.sql, as of its
 * MIMIC-IV concepts: heart_rate > 0 and < 300; sbp > 0 and < 400; dbp, mbp > 0
 * and < 300; resp_rate > 0 and < 70; temperature > 10 and < 50 °C; spo2 > 0 and
 * <= 100; glucose > 0).
 */
export const DEFAULT_LIMITS: readonly PlausibilityLimit[] = [
  // Heart / pulse rate: LOINC 8867-4, 8889-8; MDC_ECG_HEART_RATE, MDC_PULS_OXIM_PULS_RATE,
  // MDC_PULS_RATE_NON_INV, MDC_PULS_RATE.
  ...limits(
    ['8867-4', '8889-8', '147842', '149530', '149546', '149514'],
    '/min',
    open(0),
    open(300),
  ),
  // Blood pressure (mm[Hg]): systolic, diastolic, mean.
  ...limits(['8480-6', '150021'], 'mm[Hg]', open(0), open(400)),
  ...limits(['8462-4', '150022'], 'mm[Hg]', open(0), open(300)),
  ...limits(['8478-0', '150023'], 'mm[Hg]', open(0), open(300)),
  // Respiratory rate: LOINC 9279-1, MDC_RESP_RATE.
  ...limits(['9279-1', '151562'], '/min', open(0), open(70)),
  // Body temperature: LOINC 8310-5, MDC_TEMP_BODY.
  ...limits(['8310-5', '150364'], 'Cel', open(10), open(50)),
  // Oxygen saturation: LOINC 59408-5, 2708-6, MDC_PULS_OXIM_SAT_O2.
  ...limits(['59408-5', '2708-6', '150456'], '%', open(0), closed(100)),
  // Capillary blood glucose: LOINC 41653-7, MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD.
  ...limits(['41653-7', '160184'], 'mg/dL', open(0)),
  // Body weight: LOINC 29463-7, MDC_MASS_BODY_ACTUAL.
  ...limits(['29463-7', '188736'], 'kg', open(0), open(700)),
];

function showBound(b: Bound, side: 'low' | 'high'): string {
  return side === 'low'
    ? `${b.inclusive ? '[' : '('}${b.value}`
    : `${b.value}${b.inclusive ? ']' : ')'}`;
}

/** "(0,300) /min": the form PLAUSIBILITY_LIMITS takes and the flag's text shows. */
export function formatLimit(l: PlausibilityLimit): string {
  const low = l.low ? showBound(l.low, 'low') : '(-inf';
  const high = l.high ? showBound(l.high, 'high') : 'inf)';
  return `${low},${high} ${l.unit}`;
}

const ENTRY =
  /^([A-Za-z0-9.-]+)\s*=\s*(?:(off)|([[(])\s*(-?[\d.]+|-inf)?\s*,\s*(-?[\d.]+|inf)?\s*([\])])\s*(\S+))$/;

/**
 * PLAUSIBILITY_LIMITS: entries separated by ";", each `CODE=INTERVAL UNIT`
 * (interval notation: "(" and ")" exclude the bound, "[" and "]" include it; an
 * empty side is unbounded) or `CODE=off`. Entries replace the defaults of their
 * code; the rest of the defaults stay. Throws with every problem named.
 */
export function parseLimits(
  text: string,
  defaults: readonly PlausibilityLimit[] = DEFAULT_LIMITS,
): PlausibilityLimit[] {
  const byCode = new Map<string, PlausibilityLimit | undefined>(defaults.map((l) => [l.code, l]));
  const problems: string[] = [];
  for (const raw of text
    .split(';')
    .map((e) => e.trim())
    .filter(Boolean)) {
    const m = ENTRY.exec(raw);
    if (!m) {
      problems.push(`"${raw}" is not CODE=(low,high) UNIT or CODE=off`);
      continue;
    }
    const [, code, off, lb, lowText, highText, hb, unit] = m;
    if (off) {
      byCode.set(code!, undefined);
      continue;
    }
    if (!isUcum(unit!)) {
      problems.push(`"${raw}": "${unit}" is not a UCUM code`);
      continue;
    }
    const bound = (t: string | undefined, inclusive: boolean): Bound | undefined =>
      t === undefined || /inf$/.test(t) ? undefined : { value: Number(t), inclusive };
    const low = bound(lowText, lb === '[');
    const high = bound(highText, hb === ']');
    if ([low, high].some((b) => b !== undefined && !Number.isFinite(b.value))) {
      problems.push(`"${raw}": a bound is not a number`);
      continue;
    }
    byCode.set(code!, {
      code: code!,
      unit: unit!,
      ...(low ? { low } : {}),
      ...(high ? { high } : {}),
    });
  }
  if (problems.length > 0) throw new Error(problems.join('; '));
  return [...byCode.values()].filter((l): l is PlausibilityLimit => l !== undefined);
}

export interface ImplausibleValue {
  /** The code whose limit the value broke. */
  readonly code: string;
  readonly side: 'low' | 'high';
}

function limitFor(
  concept: CodeableConcept | undefined,
  index: ReadonlyMap<string, PlausibilityLimit>,
): PlausibilityLimit | undefined {
  for (const c of concept?.coding ?? []) {
    if ((c.system === LOINC_SYSTEM || c.system === MDC_SYSTEM) && c.code !== undefined) {
      const l = index.get(c.code);
      if (l) return l;
    }
  }
  return undefined;
}

/** Limits by code, built once per configured list. */
const indexes = new WeakMap<readonly PlausibilityLimit[], ReadonlyMap<string, PlausibilityLimit>>();
function indexOf(list: readonly PlausibilityLimit[]): ReadonlyMap<string, PlausibilityLimit> {
  let index = indexes.get(list);
  if (!index) {
    index = new Map(list.map((l) => [l.code, l]));
    indexes.set(list, index);
  }
  return index;
}

function breaks(value: number, l: PlausibilityLimit): 'low' | 'high' | undefined {
  if (l.low && (l.low.inclusive ? value < l.low.value : value <= l.low.value)) return 'low';
  if (l.high && (l.high.inclusive ? value > l.high.value : value >= l.high.value)) return 'high';
  return undefined;
}

/** The quantity in the limit's unit, or undefined when it cannot be compared. */
function comparable(part: Pick<ObservationComponent, 'valueQuantity'>, unit: string) {
  const q = part.valueQuantity;
  if (q?.value === undefined || q.comparator !== undefined) return undefined;
  if (q.code === unit) return q.value;
  if (q.code === undefined || q.system !== 'http://unitsofmeasure.org') return undefined;
  const v = convertValue(q.value, q.code, unit);
  return typeof v === 'number' ? v : undefined;
}

function flag(l: PlausibilityLimit, side: 'low' | 'high'): CodeableConcept {
  const high = side === 'high';
  return {
    coding: [
      // HL7 PHD IG: IEEE 11073 Measurement-Status "questionable" is written this way
      // (and PhdNumericObservation requires this coding in any interpretation).
      { system: MEASUREMENT_STATUS_SYSTEM, code: 'questionable', display: 'questionable' },
      {
        system: INTERPRETATION_SYSTEM,
        code: high ? 'HX' : 'LX',
        display: high ? 'above high threshold' : 'below low threshold',
      },
    ],
    text: `Physiologically implausible (${high ? 'above' : 'below'} the plausibility limit ${formatLimit(l)}): check the device before relying on this value`,
  };
}

/**
 * Flags implausible values of an Observation in place (status preliminary,
 * interpretation HX / LX) and returns what it flagged. Limits are looked up by
 * the Observation's code for its value, by each component's code for its own.
 */
export function flagImplausible(
  o: Observation,
  limitsList: readonly PlausibilityLimit[],
): ImplausibleValue[] {
  if (limitsList.length === 0) return [];
  const index = indexOf(limitsList);
  const found: ImplausibleValue[] = [];
  const check = (part: Observation | ObservationComponent, concept: CodeableConcept) => {
    const l = limitFor(concept, index);
    if (!l) return;
    const v = comparable(part, l.unit);
    const side = v === undefined ? undefined : breaks(v, l);
    if (!side) return;
    part.interpretation = [...(part.interpretation ?? []), flag(l, side)];
    found.push({ code: l.code, side });
  };
  check(o, o.code);
  for (const c of o.component ?? []) check(c, c.code);
  if (found.length > 0) o.status = 'preliminary';
  return found;
}
