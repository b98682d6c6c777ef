/**
 * One device value as the device meant it. Pure. In order:
 *
 *  1. a documented sentinel or an IEEE 11073 special value → no value, a
 *     dataAbsentReason code (special-values.ts);
 *  2. a number in a unit other than the template's → converted with UCUM
 *     (units.ts), keeping what the device sent in `original`; a saturation
 *     written as a fraction of one (0.97) → converted to % when the template
 *     says so (`fractionAtMost`);
 *  3. a device unit that is missing (where the template reads one and documents
 *     no default), cannot be read or converted → UnitNotConvertible: the
 *     message is dead-lettered, never written with the template's unit on a
 *     number in another.
 *
 * Non-numbers (a meter's "HI", a word) pass through: the FHIR mapping records
 * them as dataAbsentReason, or the template handles them.
 */
import { PipelineError } from '../errors.js';
import { sentinelValue, specialValue, type AbsentCode } from './special-values.js';
import type { DeviceValueSpec, MeasurementValue } from './types.js';
import { convertValue, readDeviceUnit } from './units.js';

export type ValueOutcome =
  | { readonly kind: 'value'; readonly value: MeasurementValue }
  | {
      readonly kind: 'converted';
      readonly value: number;
      readonly original: { readonly value: number; readonly unit: string };
    }
  | { readonly kind: 'absent'; readonly reason: AbsentCode };

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

function numberOf(raw: MeasurementValue): number | undefined {
  if (typeof raw === 'number') return Number.isFinite(raw) ? raw : undefined;
  if (typeof raw === 'string' && DECIMAL.test(raw.trim())) {
    const n = Number(raw.trim());
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

export interface ValueContext {
  readonly template: string;
  readonly file: string;
}

function refuse(
  ctx: ValueContext,
  spec: DeviceValueSpec,
  reason: 'unit-missing' | 'unknown-unit' | 'incommensurable' | 'molar-mass-required',
  message: string,
): never {
  // The unit text is payload: it stays in the dead letter's raw message, not in the reason.
  throw new PipelineError(
    'UnitNotConvertible',
    `template "${ctx.template}" value "${spec.valueName}": ${message}`,
    { details: { template: ctx.template, file: ctx.file, value: spec.valueName, reason } },
  );
}

/**
 * Applies a value's special values, sentinels and unit. `deviceUnit` is what
 * the unitExpression gave (undefined: none).
 */
export function applyValuePolicy(
  raw: MeasurementValue,
  deviceUnit: string | undefined,
  spec: DeviceValueSpec,
  ctx: ValueContext,
): ValueOutcome {
  const sentinel = spec.sentinels ? sentinelValue(raw, spec.sentinels) : undefined;
  if (sentinel !== undefined) return { kind: 'absent', reason: sentinel };
  const special = spec.specialValues ? specialValue(raw, spec.specialValues) : undefined;
  if (special !== undefined) return { kind: 'absent', reason: special };

  const target = spec.unit;
  const n = numberOf(raw);
  if (target === undefined || n === undefined) return { kind: 'value', value: raw };

  const text = deviceUnit ?? spec.defaultUnit;
  if (text === undefined && spec.unitExpression !== undefined) {
    // The template reads the device's unit, the device sent none, and its maker documents no default.
    refuse(
      ctx,
      spec,
      'unit-missing',
      'the device sent no unit and the template names no defaultUnit',
    );
  }
  // No unit expression and no default: the template says the device writes the template's unit.
  let from = text === undefined ? target : readDeviceUnit(text);
  if (from === undefined) {
    refuse(
      ctx,
      spec,
      'unknown-unit',
      'the device unit is neither UCUM nor a known device spelling',
    );
  }
  // A saturation of at most `fractionAtMost` "%" is a fraction of one (0.97 → 97 %).
  if (spec.fractionAtMost !== undefined && from === '%' && n >= 0 && n <= spec.fractionAtMost) {
    from = '1';
  }
  if (from === target) return { kind: 'value', value: n };
  const converted = convertValue(n, from, target, spec.molarMass);
  if (converted === 'molar-mass-required') {
    refuse(
      ctx,
      spec,
      'molar-mass-required',
      `converting to "${target}" needs the substance's molar mass (template field molarMass)`,
    );
  }
  if (converted === 'incommensurable') {
    refuse(ctx, spec, 'incommensurable', `the device unit does not convert to "${target}"`);
  }
  return { kind: 'converted', value: converted, original: { value: n, unit: from } };
}
