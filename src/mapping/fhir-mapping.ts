/**
 * FHIR mapping: one measurement + its FHIR template → an R4 Observation. Pure.
 * The pipeline owns id, identifier, subject, device, encounter, effective[x]
 * and meta.tag; the template owns code, category and the value's shape — or,
 * for a JsonataFhir template, everything else its expression builds.
 */
import type { Extension, Identifier, Observation, ObservationComponent } from 'fhir/r4.js';
import { PipelineError, foreignErrorKind } from '../errors.js';
import type { CompiledFhirTemplate } from './compile.js';
import type { Bindings } from './expressions.js';
import { codings, valueFields } from './fhir-values.js';
import {
  observationId,
  observationIdentifierValue,
  valuePart,
  type ObservationGroup,
  type ResolvedIdentity,
} from './identity.js';
import type { CodeValueFhirSpec, Measurement } from './types.js';

export const TEMPLATE_TAG_SYSTEM = 'urn:iomt:template';
export { DATA_ABSENT_SYSTEM } from './fhir-values.js';
/** FHIR R4 core extension: the gateway that relayed a reading for another device. */
export const GATEWAY_EXTENSION_URL =
  'http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice';

export interface ObservationContext {
  /** Observation.identifier.system the pipeline owns. */
  readonly identifierSystem: string;
  readonly templateName: string;
  readonly templateVersion: string;
}

/** The business identifier and the id derived from it, for a reading or a group of readings. */
function readingIdentity(
  m: Pick<Measurement, 'deviceId' | 'occurrenceTime' | 'type'>,
  identity: ResolvedIdentity,
  code: string,
  ctx: ObservationContext,
  extra: { readonly group?: ObservationGroup; readonly value?: string },
): { id: string; identifier: Identifier[] } {
  const value = observationIdentifierValue({
    deviceId: m.deviceId,
    patientId: identity.patientId,
    type: m.type,
    code,
    occurrenceTime: m.occurrenceTime,
    ...extra,
  });
  return {
    id: observationId(ctx.identifierSystem, value),
    identifier: [{ system: ctx.identifierSystem, value }],
  };
}

/** The fields the pipeline owns, for a reading (or a group of readings) of one device. */
export function ownedFields(
  m: Pick<Measurement, 'deviceId' | 'occurrenceTime' | 'type'>,
  identity: ResolvedIdentity,
  code: string,
  ctx: ObservationContext,
  group?: ObservationGroup,
): Observation {
  const { id, identifier } = readingIdentity(m, identity, code, ctx, group ? { group } : {});
  const gateway: Extension[] =
    identity.gatewayResourceId !== undefined
      ? [
          {
            url: GATEWAY_EXTENSION_URL,
            valueReference: { reference: `Device/${identity.gatewayResourceId}` },
          },
        ]
      : [];
  return {
    resourceType: 'Observation',
    id,
    meta: {
      tag: [
        {
          system: TEMPLATE_TAG_SYSTEM,
          code: `${ctx.templateName}@${ctx.templateVersion}`,
          display: 'mapping template',
        },
      ],
    },
    ...(gateway.length > 0 ? { extension: gateway } : {}),
    identifier,
    status: 'final',
    code: { coding: [] },
    subject: { reference: `Patient/${identity.patientId}` },
    ...(identity.encounterResourceId !== undefined
      ? { encounter: { reference: `Encounter/${identity.encounterResourceId}` } }
      : {}),
    device: { reference: `Device/${identity.deviceResourceId}` },
  };
}

/**
 * A single reading's identity includes its value and units (HL7 PHD IG STU 1.1):
 * once the value fields are set, the identifier and id are computed again.
 */
export function stampReadingIdentity(
  obs: Observation,
  m: Pick<Measurement, 'deviceId' | 'occurrenceTime' | 'type'>,
  identity: ResolvedIdentity,
  code: string,
  ctx: ObservationContext,
): Observation {
  const { id, identifier } = readingIdentity(m, identity, code, ctx, { value: valuePart(obs) });
  obs.id = id;
  obs.identifier = identifier;
  return obs;
}

function primaryCode(t: CodeValueFhirSpec): string {
  const primary = t.codes[0];
  if (!primary)
    throw new PipelineError('TemplateInvalid', `FHIR template "${t.typeName}" has no code`);
  return primary.code;
}

/** Code and category of a CodeValueFhir template, in FHIR R4 shape. */
export function conceptFields(t: CodeValueFhirSpec): Pick<Observation, 'category' | 'code'> {
  const text = t.text ?? humanDisplay(t.codes);
  return {
    ...(t.category
      ? {
          // A category may be text only (MedTech): FHIR allows no empty coding array.
          category: t.category.map((c) => ({
            ...(c.coding.length > 0 ? { coding: codings(c.coding) } : {}),
            ...(c.text ? { text: c.text } : {}),
          })),
        }
      : {}),
    code: { coding: codings(t.codes), ...(text !== undefined ? { text } : {}) },
  };
}

/** IEEE 11073-10101 nomenclature: its displays are reference ids (MDC_…), not words. */
export const MDC_SYSTEM = 'urn:iso:std:iso:11073:10101';

/**
 * Observation.code.text is what an EHR shows: the first display that is not an
 * MDC reference id ("Heart rate", not "MDC_PULS_RATE_NON_INV"; the PHD IG notes
 * MDC displays are reference identifiers), else the first display at all.
 */
function humanDisplay(codes: CodeValueFhirSpec['codes']): string | undefined {
  const human = codes.find((c) => c.display && c.system !== MDC_SYSTEM && !/^MDC_/.test(c.display));
  return human?.display ?? codes.find((c) => c.display)?.display;
}

/**
 * The shape every CodeValueFhir Observation shares: the pipeline-owned fields,
 * the template's category and code, and effective[x], in the familiar field
 * order (…status, category, code, subject, encounter, effective, device).
 */
export function observationShell(
  owned: ReturnType<typeof ownedFields>,
  t: CodeValueFhirSpec,
  effective: Pick<Observation, 'effectiveDateTime' | 'effectivePeriod'>,
): Observation {
  const { category, code } = conceptFields(t);
  return {
    resourceType: 'Observation',
    id: owned.id,
    // FHIR R4 Meta.profile: the profiles the template's output is known to meet.
    meta: { ...(t.profile ? { profile: [...t.profile] } : {}), ...owned.meta },
    ...(owned.extension ? { extension: owned.extension } : {}),
    identifier: owned.identifier,
    status: 'final',
    ...(category ? { category } : {}),
    code,
    subject: owned.subject,
    ...(owned.encounter ? { encounter: owned.encounter } : {}),
    ...effective,
    device: owned.device,
  };
}

/** CodeValueFhir, one Observation per reading (periodInterval 0, or a non-SampledData value). */
export function buildObservation(
  m: Measurement,
  t: CodeValueFhirSpec,
  ctx: ObservationContext,
  identity: ResolvedIdentity,
): Observation {
  const code = primaryCode(t);
  const owned = ownedFields(m, identity, code, ctx);
  // FHIR R4 Observation.effective[x]: the device's own time, not ours.
  const obs = observationShell(owned, t, { effectiveDateTime: m.occurrenceTime });
  const absent = m.absent ?? {};
  if (t.value) Object.assign(obs, valueFields(t.value, m.values, absent));
  if (t.components && t.components.length > 0) {
    // A component whose value the reading lacks is left out (mean arterial
    // pressure where the cuff sends none), unless the template has no other.
    const present = t.components.filter(
      (c) =>
        c.value.valueType === 'CodeableConcept' ||
        m.values[c.value.valueName] !== undefined ||
        absent[c.value.valueName] !== undefined,
    );
    const chosen = present.length > 0 ? present : t.components;
    obs.component = chosen.map((c): ObservationComponent => ({
      code: { coding: codings(c.codes) },
      ...valueFields(c.value, m.values, absent),
    }));
  }
  return stampReadingIdentity(obs, m, identity, code, ctx);
}

/** Fields a JsonataFhir expression may not set: the pipeline's. */
const OWNED = [
  'resourceType',
  'id',
  'identifier',
  'subject',
  'encounter',
  'device',
  'effectiveDateTime',
  'effectivePeriod',
  'effectiveInstant',
  'effectiveTiming',
] as const;

/**
 * JsonataFhir: the template's expression builds the Observation from the
 * measurement (`$` is the measurement; `$msg` and `$meta` as in device
 * templates); the pipeline's fields are then set over it.
 */
export async function buildExpressionObservation(
  m: Measurement,
  t: CompiledFhirTemplate,
  ctx: ObservationContext,
  identity: ResolvedIdentity,
  bindings: Bindings,
): Promise<Observation> {
  const fail = (message: string, cause?: unknown): never => {
    throw new PipelineError(
      'TemplateExpression',
      `FHIR template "${t.spec.typeName}": ${message}`,
      {
        ...(cause !== undefined ? { cause } : {}),
        details: { template: t.spec.typeName, file: t.file },
      },
    );
  };
  let built: unknown;
  try {
    built = await t.observation!.evaluate(m, bindings);
  } catch (err) {
    // Not the library's message, nor the error as cause: both quote payload values.
    fail(foreignErrorKind(err));
  }
  if (typeof built !== 'object' || built === null || Array.isArray(built)) {
    fail('observationExpression must produce one object');
  }
  const out = { ...(built as Record<string, unknown>) };
  const code = (out.code as { coding?: { code?: unknown }[] } | undefined)?.coding?.[0]?.code;
  if (typeof code !== 'string' || code === '') {
    fail('the Observation it builds needs code.coding[0].code (it names the reading)');
  }
  for (const key of OWNED) delete out[key];
  const owned = ownedFields(m, identity, code as string, ctx);
  const identified = (o: Observation) => stampReadingIdentity(o, m, identity, code as string, ctx);
  const templateMeta = (out.meta ?? {}) as { profile?: string[]; tag?: unknown[] };
  const extension = [
    ...((out.extension as Extension[] | undefined) ?? []),
    ...(owned.extension ?? []),
  ];
  delete out.meta;
  delete out.extension;
  return identified({
    resourceType: 'Observation',
    id: owned.id,
    meta: {
      ...(templateMeta.profile ? { profile: templateMeta.profile } : {}),
      tag: owned.meta!.tag!,
    },
    ...(extension.length > 0 ? { extension } : {}),
    identifier: owned.identifier,
    ...(out as Partial<Observation>),
    status: (out.status as Observation['status'] | undefined) ?? 'final',
    code: out.code as Observation['code'],
    subject: owned.subject,
    ...(owned.encounter ? { encounter: owned.encounter } : {}),
    effectiveDateTime: m.occurrenceTime,
    device: owned.device,
  });
}
