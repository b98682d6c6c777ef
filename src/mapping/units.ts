/**
 * Units: a device's unit → UCUM, and a value converted to the template's UCUM
 * unit with the National Library of Medicine's UCUM library (@lhncbc/ucum-lhc).
 * Pure (the library's unit tables are data, loaded on the first call: a process
 * that never reads a unit, the broker, does not hold them).
 *
 * The pipeline never relabels a number: a device unit it cannot read, or one
 * that does not convert to the template's unit (kg ← mm[Hg]; mg/dL ← mmol/L
 * without the substance's molar mass), refuses the reading (UnitNotConvertible).
 *
 * Standards: UCUM (https://ucum.org/ucum), case-sensitive codes; FHIR R4
 * Quantity.code / system "http://unitsofmeasure.org".
 */
import { createRequire } from 'node:module';

interface UcumConversion {
  readonly status: 'succeeded' | 'failed' | 'error';
  readonly toVal: number | null;
  readonly msg: readonly string[];
}

interface UcumUtils {
  convertUnitTo(
    from: string,
    value: number,
    to: string,
    options?: { suggest?: boolean; molecularWeight?: number },
  ): UcumConversion;
  validateUnitString(
    text: string,
    suggest?: boolean,
  ): { status: 'valid' | 'invalid' | 'error'; ucumCode: string | null };
}

// ucum-lhc is CommonJS without types: the two calls we use, typed here.
const require = createRequire(import.meta.url);
let instance: UcumUtils | undefined;
function ucum(): UcumUtils {
  instance ??= (
    require('@lhncbc/ucum-lhc') as { UcumLhcUtils: { getInstance(): UcumUtils } }
  ).UcumLhcUtils.getInstance();
  return instance;
}

/**
 * Device spellings → UCUM codes. Consulted before UCUM itself, because devices
 * mean "F" as Fahrenheit and "C" as Celsius (UCUM: farad, coulomb). Keys are
 * lower case; a spelling is matched case-insensitively, after trimming.
 */
const DEVICE_SPELLINGS: ReadonlyMap<string, string> = new Map(
  Object.entries({
    // mass
    lb: '[lb_av]',
    lbs: '[lb_av]',
    pound: '[lb_av]',
    pounds: '[lb_av]',
    '[lb_av]': '[lb_av]',
    oz: '[oz_av]',
    st: '[stone_av]',
    stone: '[stone_av]',
    kg: 'kg',
    kgs: 'kg',
    kilogram: 'kg',
    kilograms: 'kg',
    g: 'g',
    gram: 'g',
    grams: 'g',
    // temperature
    f: '[degF]',
    '°f': '[degF]',
    '℉': '[degF]',
    degf: '[degF]',
    'deg f': '[degF]',
    '[degf]': '[degF]',
    fahrenheit: '[degF]',
    c: 'Cel',
    '°c': 'Cel',
    '℃': 'Cel',
    degc: 'Cel',
    'deg c': 'Cel',
    cel: 'Cel',
    celsius: 'Cel',
    // pressure
    kpa: 'kPa',
    mmhg: 'mm[Hg]',
    'mm hg': 'mm[Hg]',
    'mm[hg]': 'mm[Hg]',
    // concentration
    'mmol/l': 'mmol/L',
    'mmol/litre': 'mmol/L',
    'mmol/liter': 'mmol/L',
    'mg/dl': 'mg/dL',
    // fractions: SpO2 as 97 (%) or as 0.97 (a fraction of one)
    '%': '%',
    percent: '%',
    fraction: '1',
    ratio: '1',
    // rates
    bpm: '/min',
    '/min': '/min',
    '1/min': '/min',
    'beats/min': '/min',
    'breaths/min': '/min',
    // length
    cm: 'cm',
    in: '[in_i]',
    inch: '[in_i]',
    inches: '[in_i]',
  }),
);

/** A device's unit text → a UCUM code, or undefined when it is neither a known spelling nor UCUM. */
export function readDeviceUnit(text: string): string | undefined {
  const s = text.trim().replace(/\s+/g, ' ');
  if (s === '') return undefined;
  const spelled = DEVICE_SPELLINGS.get(s.toLowerCase());
  if (spelled !== undefined) return spelled;
  const v = ucum().validateUnitString(s, false);
  return v.status === 'valid' && v.ucumCode !== null ? v.ucumCode : undefined;
}

/** True when `code` is a valid UCUM code as written (case-sensitive). */
export function isUcum(code: string): boolean {
  const v = ucum().validateUnitString(code, false);
  return v.status === 'valid' && v.ucumCode === code;
}

export type ConversionFailure = 'incommensurable' | 'molar-mass-required';

/**
 * Significant digits of a number as written (JSON's shortest form): 165.2 → 4,
 * 0.97 → 2, 3450 → 4. A converted value keeps the precision of the reading.
 */
function significantDigits(n: number): number {
  const digits = String(Math.abs(n)).replace(/e.*$/i, '').replace('.', '').replace(/^0+/, '');
  return Math.min(Math.max(digits.length, 1), 15);
}

/**
 * Converts `value` from one UCUM unit to another. Same unit: the value as it
 * is. Otherwise UCUM's conversion (mass ↔ amount of substance needs the molar
 * mass in g/mol), rounded to the reading's own significant digits (165.2 lb →
 * 74.93 kg, 98.6 °F → 37 Cel, 0.97 → 97 %).
 */
export function convertValue(
  value: number,
  from: string,
  to: string,
  molarMass?: number,
): number | ConversionFailure {
  if (from === to) return value;
  const r = ucum().convertUnitTo(from, value, to, {
    suggest: false,
    ...(molarMass !== undefined ? { molecularWeight: molarMass } : {}),
  });
  if (r.status !== 'succeeded' || r.toVal === null || !Number.isFinite(r.toVal)) {
    return r.msg.some((m) => /molecular weight/i.test(m))
      ? 'molar-mass-required'
      : 'incommensurable';
  }
  return Number(r.toVal.toPrecision(significantDigits(value)));
}
