/**
 * Shapes of mapping template files, checked with zod so that every problem is
 * reported with its path. Files use MedTech's envelope — CollectionContent /
 * CollectionFhir holding typed templates — and MedTech's own template types
 * load as MedTech wrote them: JsonPathContent, IotJsonPathContent,
 * IotCentralJsonPathContent and CalculatedContent device templates (with the
 * older "…Template" spellings), expressions as a string or {value, language},
 * `required` as a boolean or "true"/"false", CodeValueFhir with Quantity,
 * SampledData, CodeableConcept and String values and `category[].codes`.
 */
import { z } from 'zod';

const nonEmpty = z.string().min(1);

/** MedTech (Json.NET) reads "true"/"false" strings as booleans. */
const booleanish = z
  .union([z.boolean(), z.enum(['true', 'false', 'True', 'False'])])
  .transform((v) => v === true || v === 'true' || v === 'True');

const languageName = z
  .string()
  .transform((s) => s.toLowerCase())
  .pipe(z.enum(['jsonata', 'jsonpath', 'jmespath']));

/** A bare string (the template's default language) or MedTech's {value, language}. */
export const expressionSchema = z.union([
  nonEmpty,
  z.strictObject({ value: nonEmpty, language: languageName.optional() }),
]);

const absentCode = z.enum([
  'error',
  'unknown',
  'not-a-number',
  'positive-infinity',
  'negative-infinity',
]);

/** A documented device sentinel: the value alone (reason `error`) or with its reason. */
const sentinelSchema = z
  .union([
    z.number(),
    nonEmpty,
    z.strictObject({ value: z.union([z.number(), nonEmpty]), reason: absentCode.optional() }),
  ])
  .transform((s) =>
    typeof s === 'object'
      ? { value: s.value, reason: s.reason ?? 'error' }
      : { value: s, reason: 'error' as const },
  );

/** Ours: units, special values and sentinels of a value (see units.ts, special-values.ts). */
const valueExtras = {
  unitExpression: expressionSchema.optional(),
  defaultUnit: nonEmpty.optional(),
  unit: nonEmpty.optional(),
  molarMass: z.number().positive().optional(),
  fractionAtMost: z.number().positive().optional(),
  specialValues: z.enum(['FLOAT', 'SFLOAT']).optional(),
  sentinels: z.array(sentinelSchema).optional(),
};

const valueEntry = z.strictObject({
  valueName: nonEmpty,
  valueExpression: expressionSchema,
  required: booleanish.optional(),
  ...valueExtras,
});

const expressionFields = {
  typeName: nonEmpty,
  typeMatchExpression: expressionSchema,
  timestampExpression: expressionSchema.optional(),
  deviceIdExpression: expressionSchema.optional(),
  patientIdExpression: expressionSchema.optional(),
  encounterIdExpression: expressionSchema.optional(),
  correlationIdExpression: expressionSchema.optional(),
  values: z.array(valueEntry).min(1),
};

/** Ours: JSONata by default; `defaultExpressionLanguage` or {value, language} switch. */
export const jsonataContentSchema = z.strictObject({
  ...expressionFields,
  defaultExpressionLanguage: languageName.optional(),
});

/** MedTech CalculatedContent: JSONPath by default, JMESPath per expression or template. */
export const calculatedContentSchema = z.strictObject({
  ...expressionFields,
  defaultExpressionLanguage: languageName.optional(),
});

/** MedTech's JSONPath-only templates (language objects are refused, as MedTech did). */
const jsonPathOnly = z.union([nonEmpty, z.strictObject({ value: nonEmpty })]);
export const jsonPathContentSchema = z.strictObject({
  ...expressionFields,
  typeMatchExpression: jsonPathOnly,
  timestampExpression: jsonPathOnly.optional(),
  deviceIdExpression: jsonPathOnly.optional(),
  patientIdExpression: jsonPathOnly.optional(),
  encounterIdExpression: jsonPathOnly.optional(),
  correlationIdExpression: jsonPathOnly.optional(),
  values: z
    .array(
      z.strictObject({
        valueName: nonEmpty,
        valueExpression: jsonPathOnly,
        required: booleanish.optional(),
      }),
    )
    .min(1),
});

/** Template type names as files spell them → our canonical kind. */
export const DEVICE_TEMPLATE_TYPES = {
  JsonataContent: 'JsonataContent',
  JsonPathContent: 'JsonPathContent',
  JsonPathContentTemplate: 'JsonPathContent',
  IotJsonPathContent: 'IotJsonPathContent',
  IotJsonPathContentTemplate: 'IotJsonPathContent',
  IotCentralJsonPathContent: 'IotCentralJsonPathContent',
  IotCentralJsonPathContentTemplate: 'IotCentralJsonPathContent',
  CalculatedContent: 'CalculatedContent',
  CalculatedContentTemplate: 'CalculatedContent',
} as const;

/**
 * MedTech matches a template type name without regard to case, with or without
 * its "Template" suffix (TemplateContainer.MatchTemplateName): the name as the
 * file spells it → the canonical key of `names`.
 */
export function canonicalTypeName<K extends string>(
  names: readonly K[],
  written: string,
): K | undefined {
  const lower = written.toLowerCase();
  return (
    names.find((n) => n === written) ??
    names.find((n) => n.toLowerCase() === lower) ??
    names.find((n) => n.toLowerCase() === `${lower}template`)
  );
}

/** A template type name, any case → one of `names` (as written in our own files). */
function typeNameSchema<K extends string>(names: readonly K[]) {
  return z.string().transform((s, ctx): K => {
    const k = canonicalTypeName(names, s);
    if (k === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `unknown template type "${s}" (expected one of ${names.join(', ')}, in any case)`,
      });
      return z.NEVER;
    }
    return k;
  });
}

export const deviceEntrySchema = z.strictObject({
  templateType: typeNameSchema(
    Object.keys(DEVICE_TEMPLATE_TYPES) as (keyof typeof DEVICE_TEMPLATE_TYPES)[],
  ),
  template: z.record(z.string(), z.unknown()),
});

export const deviceCollectionSchema = z.strictObject({
  templateType: typeNameSchema(['CollectionContent', 'CollectionContentTemplate'] as const),
  template: z.array(deviceEntrySchema),
});

const codingSchema = z.strictObject({
  code: nonEmpty,
  system: nonEmpty.optional(),
  display: z.string().optional(),
});

/** Ours write `coding` (FHIR's name); MedTech wrote `codes`. Text alone is a category too (MedTech). */
const categorySchema = z
  .strictObject({
    coding: z.array(codingSchema).min(1).optional(),
    codes: z.array(codingSchema).min(1).optional(),
    text: z.string().min(1).optional(),
  })
  .refine((c) => (c.coding ?? c.codes) !== undefined || c.text !== undefined, {
    message: 'a category needs `coding` (or MedTech `codes`), or `text`',
  });

export const VALUE_TYPES = ['Quantity', 'SampledData', 'CodeableConcept', 'String'] as const;

/**
 * MedTech finds a value type by name without regard to case (AbstractJsonConverter,
 * InvariantCultureIgnoreCase; "sampledData", "quantity" in its own docs), and with
 * or without the "FhirValueType" suffix of its class names.
 */
function canonicalValueType(raw: unknown): unknown {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return raw;
  const v = raw as Record<string, unknown>;
  if (typeof v.valueType !== 'string') return raw;
  const lower = v.valueType.toLowerCase().replace(/fhirvaluetype$/, '');
  const k = VALUE_TYPES.find((t) => t.toLowerCase() === lower);
  return k === undefined || k === v.valueType ? raw : { ...v, valueType: k };
}

export const valueSchema = z.preprocess(canonicalValueType, valueUnion());

function valueUnion() {
  return z.discriminatedUnion('valueType', [
    z.strictObject({
      valueType: z.literal('Quantity'),
      valueName: nonEmpty,
      unit: z.string().optional(),
      code: nonEmpty.optional(),
      system: nonEmpty.optional(),
    }),
    z.strictObject({
      valueType: z.literal('SampledData'),
      valueName: nonEmpty,
      defaultPeriod: z.number().positive(),
      periodName: nonEmpty.optional(),
      unit: z.string(),
      code: nonEmpty.optional(),
      system: nonEmpty.optional(),
    }),
    z.strictObject({
      valueType: z.literal('CodeableConcept'),
      valueName: nonEmpty.optional(),
      text: z.string().optional(),
      codes: z.array(codingSchema).min(1),
    }),
    z.strictObject({ valueType: z.literal('String'), valueName: nonEmpty }),
  ]);
}

export const codeValueFhirSchema = z.strictObject({
  typeName: nonEmpty,
  codes: z.array(codingSchema).min(1),
  text: nonEmpty.optional(),
  profile: z.array(z.url()).optional(),
  category: z.array(categorySchema).optional(),
  periodInterval: z.union([z.literal(-1), z.literal(0), z.literal(60), z.literal(1440)]).optional(),
  value: valueSchema.optional(),
  components: z
    .array(z.strictObject({ codes: z.array(codingSchema).min(1), value: valueSchema }))
    .optional(),
});

export const jsonataFhirSchema = z.strictObject({
  typeName: nonEmpty,
  observationExpression: nonEmpty,
});

export const FHIR_TEMPLATE_TYPES = {
  CodeValueFhir: 'CodeValueFhir',
  CodeValueFhirTemplate: 'CodeValueFhir',
  JsonataFhir: 'JsonataFhir',
} as const;

export const fhirCollectionSchema = z.strictObject({
  templateType: typeNameSchema(['CollectionFhir', 'CollectionFhirTemplate'] as const),
  /** Ours: MedTech compatibility mode for this template set (medtech-compat.ts). */
  compatibility: z
    .string()
    .transform((s) => s.toLowerCase())
    .pipe(z.literal('medtech'))
    .optional(),
  template: z.array(
    z.strictObject({
      templateType: typeNameSchema(
        Object.keys(FHIR_TEMPLATE_TYPES) as (keyof typeof FHIR_TEMPLATE_TYPES)[],
      ),
      template: z.record(z.string(), z.unknown()),
    }),
  ),
});

export type ExpressionInput = z.infer<typeof expressionSchema>;
export type DeviceTemplateInput = z.infer<typeof calculatedContentSchema>;
export type CodeValueFhirInput = z.infer<typeof codeValueFhirSchema>;
