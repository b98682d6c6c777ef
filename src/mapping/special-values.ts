/**
 * Device values that are not measurements: IEEE 11073-20601 FLOAT / SFLOAT
 * special values, and sentinels a device family documents (a pulse oximeter's
 * 127 for "no SpO2"). Each becomes a FHIR R4 Observation.dataAbsentReason code,
 * never a number. Pure.
 *
 * IEEE 11073-20601 (MDER FLOAT-Type / SFLOAT-Type): with exponent 0, these
 * mantissas are reserved (as tabulated in the HL7 PHD IG, "FLOAT and SFLOAT"):
 *
 *   meaning                      FLOAT (24-bit)  SFLOAT (12-bit)  dataAbsentReason
 *   NaN (not a number)           0x7FFFFF        0x7FF            not-a-number
 *   NRes (not at this resolution) 0x800000       0x800            unknown (*)
 *   +INF                         0x7FFFFE        0x7FE            positive-infinity
 *   -INF                         0x800002        0x802            negative-infinity
 *   reserved for future use      0x800001        0x801            error
 *
 * (*) The PHD IG maps NRes to the generic `error` for want of a closer code; we
 * follow our issue 10 and record `unknown` (R4 data-absent-reason: "the value is
 * expected to exist but is not known"): NRes says the value exists but lies
 * beyond the device's range or resolution, not that the device failed.
 *
 * A gateway may forward such a value as the signed mantissa (-2048), the
 * unsigned field (2048 = 0x800), or a hex string ("0x0800"); all are read.
 * A template opts in per value (`specialValues: "SFLOAT"`): 2047 is a valid
 * step count, so no number is special unless the template says which encoding
 * its device forwards.
 */
import type { MeasurementValue } from './types.js';

export type AbsentCode =
  'error' | 'unknown' | 'not-a-number' | 'positive-infinity' | 'negative-infinity';

export type SpecialEncoding = 'FLOAT' | 'SFLOAT';

/** A sentinel a device documents: the raw value and what it means. */
export interface Sentinel {
  readonly value: number | string;
  /** Default `error`: the device could not produce a reading. */
  readonly reason: AbsentCode;
}

/** Mantissa (unsigned field value) → meaning, per encoding. */
const SPECIAL: Record<SpecialEncoding, { bits: number; codes: ReadonlyMap<number, AbsentCode> }> = {
  FLOAT: {
    bits: 24,
    codes: new Map<number, AbsentCode>([
      [0x7fffff, 'not-a-number'],
      [0x800000, 'unknown'],
      [0x7ffffe, 'positive-infinity'],
      [0x800002, 'negative-infinity'],
      [0x800001, 'error'],
    ]),
  },
  SFLOAT: {
    bits: 12,
    codes: new Map<number, AbsentCode>([
      [0x7ff, 'not-a-number'],
      [0x800, 'unknown'],
      [0x7fe, 'positive-infinity'],
      [0x802, 'negative-infinity'],
      [0x801, 'error'],
    ]),
  },
};

/** The raw value as an integer: a number, or a decimal / "0x…" hex string. */
function asInteger(raw: MeasurementValue): number | undefined {
  if (typeof raw === 'number') return Number.isInteger(raw) ? raw : undefined;
  if (typeof raw !== 'string') return undefined;
  const s = raw.trim();
  if (/^0x[0-9a-f]+$/i.test(s)) return parseInt(s.slice(2), 16);
  if (/^-?\d+$/.test(s)) return Number(s);
  return undefined;
}

/** The 11073 special value `raw` encodes, if any (signed or unsigned mantissa, or hex). */
export function specialValue(
  raw: MeasurementValue,
  encoding: SpecialEncoding,
): AbsentCode | undefined {
  const n = asInteger(raw);
  if (n === undefined) return undefined;
  const { bits, codes } = SPECIAL[encoding];
  const field = 2 ** bits;
  // Signed mantissa (two's complement) → the unsigned field value.
  const unsigned = n < 0 && n >= -field / 2 ? n + field : n;
  return codes.get(unsigned);
}

/** The reason a documented sentinel stands for, if `raw` is one. */
export function sentinelValue(
  raw: MeasurementValue,
  sentinels: readonly Sentinel[],
): AbsentCode | undefined {
  for (const s of sentinels) {
    if (raw === s.value) return s.reason;
    if (typeof s.value === 'number' && typeof raw === 'string' && raw.trim() === String(s.value))
      return s.reason;
  }
  return undefined;
}

/** Human text for a dataAbsentReason, saying what the device sent — without its value. */
export const ABSENT_TEXT: Readonly<Record<AbsentCode, string>> = {
  'not-a-number': 'the device reported NaN (no valid measurement)',
  'positive-infinity': 'the device reported +INF (above what it can measure)',
  'negative-infinity': 'the device reported -INF (below what it can measure)',
  unknown: 'the device reported no value at this resolution (NRes)',
  error: 'the device reported a value that is not a measurement',
};
