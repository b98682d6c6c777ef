/**
 * Shapes of mapping template files, checked with zod so that every problem is
 * reported with its path. Files use MedTech's envelope — CollectionContent /
 * CollectionFhir holding typed templates — so MedTech's own files can be loaded
 * beside ours.
 */
import { z } from 'zod';

const nonEmpty = z.string().min(1);

export const deviceValueSchema = z.strictObject({
  valueName: nonEmpty,
  valueExpression: nonEmpty,
  required: z.boolean().optional(),
});

export const jsonataContentSchema = z.strictObject({
  typeName: nonEmpty,
  typeMatchExpression: nonEmpty,
  timestampExpression: nonEmpty.optional(),
  deviceIdExpression: nonEmpty.optional(),
  patientIdExpression: nonEmpty.optional(),
  encounterIdExpression: nonEmpty.optional(),
  correlationIdExpression: nonEmpty.optional(),
  values: z.array(deviceValueSchema).min(1),
});

export const deviceCollectionSchema = z.strictObject({
  templateType: z.literal('CollectionContent'),
  template: z.array(
    z.strictObject({
      templateType: z.literal('JsonataContent'),
      template: jsonataContentSchema,
    }),
  ),
});

const codingSchema = z.strictObject({
  system: nonEmpty,
  code: nonEmpty,
  display: z.string().optional(),
});

const valueSchema = z.discriminatedUnion('valueType', [
  z.strictObject({
    valueType: z.literal('Quantity'),
    valueName: nonEmpty,
    unit: nonEmpty,
    code: nonEmpty,
    system: nonEmpty,
  }),
  z.strictObject({ valueType: z.literal('String'), valueName: nonEmpty }),
]);

export const codeValueFhirSchema = z
  .strictObject({
    typeName: nonEmpty,
    codes: z.array(codingSchema).min(1),
    category: z
      .array(z.strictObject({ coding: z.array(codingSchema).min(1), text: z.string().optional() }))
      .optional(),
    periodInterval: z.literal(0).optional(),
    value: valueSchema.optional(),
    components: z
      .array(z.strictObject({ codes: z.array(codingSchema).min(1), value: valueSchema }))
      .optional(),
  })
  .refine((t) => t.value !== undefined || (t.components?.length ?? 0) > 0, {
    message: 'a FHIR template needs a value or at least one component',
  });

export const fhirCollectionSchema = z.strictObject({
  templateType: z.literal('CollectionFhir'),
  template: z.array(
    z.strictObject({
      templateType: z.literal('CodeValueFhir'),
      template: codeValueFhirSchema,
    }),
  ),
});
