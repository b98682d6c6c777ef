/**
 * Template entries (already shaped by schema.ts) → the model of types.ts, for
 * ours and MedTech's template types alike. Pure. Returns problems (the entry is
 * refused) and notes (it loads, but behaves as the note says) with their paths.
 */
import type { z } from 'zod';
import {
  calculatedContentSchema,
  codeValueFhirSchema,
  DEVICE_TEMPLATE_TYPES,
  FHIR_TEMPLATE_TYPES,
  jsonataContentSchema,
  jsonataFhirSchema,
  jsonPathContentSchema,
  type ExpressionInput,
} from './schema.js';
import { isUcum, readDeviceUnit } from './units.js';
import type {
  Coding,
  DeviceValueSpec,
  DeviceTemplateKind,
  DeviceTemplateSpec,
  ExpressionLanguage,
  ExpressionSpec,
  FhirTemplateSpec,
  FhirValueSpec,
} from './types.js';

export type Path = readonly (string | number)[];

export interface Finding {
  readonly path: Path;
  readonly message: string;
}

export interface ReadResult<T> {
  readonly spec?: T;
  readonly problems: readonly Finding[];
  readonly notes: readonly Finding[];
}

export function zodFindings(base: Path, error: z.ZodError): Finding[] {
  return error.issues.flatMap((issue) => {
    const path = [
      ...base,
      ...issue.path.filter((p): p is string | number => typeof p !== 'symbol'),
    ];
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => ({ path: [...path, k], message: `unknown field "${k}"` }));
    }
    return [{ path, message: issue.message }];
  });
}

function expression(input: ExpressionInput, fallback: ExpressionLanguage): ExpressionSpec {
  if (typeof input === 'string') return { value: input, language: fallback };
  return { value: input.value, language: input.language ?? fallback };
}

/** IoT Hub / IoT Central set these from their own metadata; MedTech ignores the template's. */
const FIXED_BY_KIND: Partial<Record<DeviceTemplateKind, string>> = {
  IotJsonPathContent:
    "as in MedTech, the device id is SystemProperties.iothub-connection-device-id (the authenticated MQTT device, or the device a bridged event names) and the time Properties.iothub-creation-time-utc, else SystemProperties.iothub-enqueuedtime (the receipt time, or the bridged hub's)",
  IotCentralJsonPathContent:
    'the device id is read from $.deviceId and the time from $.enqueuedTime (IoT Central export format)',
};

export function readDeviceTemplate(
  templateType: string,
  raw: unknown,
  base: Path,
): ReadResult<DeviceTemplateSpec> {
  const kind = DEVICE_TEMPLATE_TYPES[templateType as keyof typeof DEVICE_TEMPLATE_TYPES];
  const schema =
    kind === 'JsonataContent'
      ? jsonataContentSchema
      : kind === 'CalculatedContent'
        ? calculatedContentSchema
        : jsonPathContentSchema;
  const parsed = schema.safeParse(raw);
  if (!parsed.success) return { problems: zodFindings(base, parsed.error), notes: [] };
  const t = parsed.data as z.infer<typeof calculatedContentSchema>;
  const notes: Finding[] = [];
  const fallback: ExpressionLanguage =
    t.defaultExpressionLanguage ?? (kind === 'JsonataContent' ? 'jsonata' : 'jsonpath');
  const e = (input: ExpressionInput | undefined) =>
    input === undefined ? undefined : expression(input, fallback);

  let deviceIdExpression = e(t.deviceIdExpression);
  let timestampExpression = e(t.timestampExpression);
  const fixed = FIXED_BY_KIND[kind];
  if (fixed) {
    for (const key of ['deviceIdExpression', 'timestampExpression'] as const) {
      if (t[key] !== undefined)
        notes.push({ path: [...base, key], message: `ignored for ${kind}: ${fixed}` });
    }
    deviceIdExpression = undefined;
    timestampExpression = undefined;
    if (kind === 'IotCentralJsonPathContent') {
      deviceIdExpression = { value: '$.deviceId', language: 'jsonpath' };
      timestampExpression = { value: '$.enqueuedTime', language: 'jsonpath' };
    }
  }
  const spec: DeviceTemplateSpec = {
    kind,
    typeName: t.typeName,
    typeMatchExpression: expression(t.typeMatchExpression, fallback),
    ...(timestampExpression ? { timestampExpression } : {}),
    ...(deviceIdExpression ? { deviceIdExpression } : {}),
    ...(t.patientIdExpression ? { patientIdExpression: e(t.patientIdExpression)! } : {}),
    ...(t.encounterIdExpression ? { encounterIdExpression: e(t.encounterIdExpression)! } : {}),
    ...(t.correlationIdExpression
      ? { correlationIdExpression: e(t.correlationIdExpression)! }
      : {}),
    values: t.values.map((v) => ({
      valueName: v.valueName,
      valueExpression: expression(v.valueExpression, fallback),
      required: v.required ?? false,
      ...(v.unitExpression !== undefined
        ? { unitExpression: expression(v.unitExpression, fallback) }
        : {}),
      ...(v.defaultUnit !== undefined ? { defaultUnit: v.defaultUnit } : {}),
      ...(v.unit !== undefined ? { unit: v.unit } : {}),
      ...(v.molarMass !== undefined ? { molarMass: v.molarMass } : {}),
      ...(v.fractionAtMost !== undefined ? { fractionAtMost: v.fractionAtMost } : {}),
      ...(v.specialValues !== undefined ? { specialValues: v.specialValues } : {}),
      ...(v.sentinels !== undefined ? { sentinels: v.sentinels } : {}),
    })),
  };
  const problems = spec.values.flatMap((v, i) => unitProblems(v, [...base, 'values', i]));
  if (problems.length > 0) return { problems, notes };
  return { spec, problems: [], notes };
}

/** A value's unit fields must name real units, and a target whenever a device unit is read. */
function unitProblems(v: DeviceValueSpec, path: Path): Finding[] {
  const problems: Finding[] = [];
  const converts =
    v.unitExpression !== undefined ||
    v.defaultUnit !== undefined ||
    v.molarMass !== undefined ||
    v.fractionAtMost !== undefined;
  if (v.unit === undefined) {
    if (converts) {
      problems.push({
        path: [...path, 'unit'],
        message: `value "${v.valueName}": a device unit is read, so \`unit\` (the UCUM code to convert to) is required`,
      });
    }
    return problems;
  }
  if (!isUcum(v.unit)) {
    problems.push({
      path: [...path, 'unit'],
      message: `value "${v.valueName}": "${v.unit}" is not a UCUM code (case-sensitive, e.g. "Cel", "mm[Hg]", "mg/dL")`,
    });
  }
  if (v.defaultUnit !== undefined && readDeviceUnit(v.defaultUnit) === undefined) {
    problems.push({
      path: [...path, 'defaultUnit'],
      message: `value "${v.valueName}": "${v.defaultUnit}" is neither UCUM nor a known device spelling`,
    });
  }
  return problems;
}

/** FHIR R4 SampledData.data holds every slot; a window this large is refused. */
export const MAX_SAMPLED_SLOTS = 100_000;
export const UCUM_SYSTEM = 'http://unitsofmeasure.org';

function valueNotes(v: FhirValueSpec, path: Path, periodInterval: number): Finding[] {
  const notes: Finding[] = [];
  if (v.valueType === 'Quantity' && (v.code === undefined || v.system === undefined)) {
    notes.push({
      path,
      message: `Quantity "${v.valueName}" has no UCUM system and code: the Observation carries the unit text only`,
    });
  }
  if (v.valueType === 'SampledData' && (v.code === undefined || v.system === undefined)) {
    notes.push({
      path,
      message: `SampledData "${v.valueName}" origin has no UCUM system and code: it carries the unit text only`,
    });
  }
  if ((periodInterval === 60 || periodInterval === 1440) && v.valueType !== 'SampledData') {
    notes.push({
      path,
      message: `periodInterval ${periodInterval} groups SampledData only: "${v.valueType}" values stay one Observation per reading (MedTech grouped every value type by period; "compatibility": "MedTech" does too)`,
    });
  }
  return notes;
}

function codingNotes(codes: readonly Coding[], path: Path): Finding[] {
  return codes.flatMap((c, i) =>
    c.system === undefined
      ? [{ path: [...path, i], message: `code "${c.code}" has no system` }]
      : [],
  );
}

export function readFhirTemplate(
  templateType: string,
  raw: unknown,
  base: Path,
): ReadResult<FhirTemplateSpec> {
  const kind = FHIR_TEMPLATE_TYPES[templateType as keyof typeof FHIR_TEMPLATE_TYPES];
  if (kind === 'JsonataFhir') {
    const parsed = jsonataFhirSchema.safeParse(raw);
    if (!parsed.success) return { problems: zodFindings(base, parsed.error), notes: [] };
    return { spec: { kind, ...parsed.data }, problems: [], notes: [] };
  }
  const parsed = codeValueFhirSchema.safeParse(raw);
  if (!parsed.success) return { problems: zodFindings(base, parsed.error), notes: [] };
  const t = parsed.data;
  const periodInterval = t.periodInterval ?? 0;
  const problems: Finding[] = [];
  const notes: Finding[] = [...codingNotes(t.codes, [...base, 'codes'])];
  const values: [FhirValueSpec, Path][] = [
    ...(t.value ? [[t.value, [...base, 'value']] as [FhirValueSpec, Path]] : []),
    ...(t.components ?? []).map(
      (c, i) => [c.value, [...base, 'components', i, 'value']] as [FhirValueSpec, Path],
    ),
  ];
  for (const [v, path] of values) {
    notes.push(...valueNotes(v, path, periodInterval));
    if (v.valueType === 'SampledData' && (periodInterval === 60 || periodInterval === 1440)) {
      const slots = (periodInterval * 60_000) / v.defaultPeriod;
      if (slots > MAX_SAMPLED_SLOTS) {
        problems.push({
          path: [...path, 'defaultPeriod'],
          message: `a ${periodInterval}-minute window at ${v.defaultPeriod} ms has ${Math.ceil(slots)} slots; at most ${MAX_SAMPLED_SLOTS} are allowed (use a longer defaultPeriod or correlation grouping)`,
        });
      }
    }
  }
  if (
    periodInterval === 0 &&
    t.periodInterval === undefined &&
    values.some(([v]) => v.valueType === 'SampledData')
  ) {
    notes.push({
      path: base,
      message:
        'SampledData without periodInterval: one Observation per reading (MedTech requires periodInterval)',
    });
  }
  if (problems.length > 0) return { problems, notes };
  const spec: FhirTemplateSpec = {
    kind: 'CodeValueFhir',
    typeName: t.typeName,
    codes: t.codes,
    ...(t.text !== undefined ? { text: t.text } : {}),
    ...(t.profile !== undefined ? { profile: t.profile } : {}),
    ...(t.category
      ? {
          category: t.category.map((c) => ({
            coding: c.coding ?? c.codes ?? [],
            ...(c.text !== undefined ? { text: c.text } : {}),
          })),
        }
      : {}),
    periodInterval,
    ...(t.value ? { value: t.value } : {}),
    ...(t.components ? { components: t.components } : {}),
  };
  return { spec, problems: [], notes };
}
