/**
 * FHIR mapping: measurement + CodeValueFhir template → R4 Observation. Pure.
 * The pipeline owns id, identifier, subject, device, effective and meta; the
 * template owns code, category and value shape.
 */
import type { Observation, ObservationComponent, Quantity } from 'fhir/r4.js';
import { PipelineError } from '../errors.js';
import { deviceResourceId, observationId, observationIdentifierValue } from './identity.js';
import type {
  Coding,
  FhirTemplateSpec,
  FhirValueSpec,
  Measurement,
  MeasurementValue,
} from './types.js';

export const TEMPLATE_TAG_SYSTEM = 'urn:iomt:template';
export const DATA_ABSENT_SYSTEM = 'http://terminology.hl7.org/CodeSystem/data-absent-reason';

export interface ObservationContext {
  /** Observation.identifier.system the pipeline owns. */
  readonly identifierSystem: string;
  readonly templateName: string;
  readonly templateVersion: string;
}

type ValueFields = Pick<Observation, 'valueQuantity' | 'valueString' | 'dataAbsentReason'>;

function absent(code: 'error' | 'unknown', text: string): ValueFields {
  return { dataAbsentReason: { coding: [{ system: DATA_ABSENT_SYSTEM, code }], text } };
}

/** FHIR R4 Observation.value[x] (or dataAbsentReason when the reading is unusable). */
function valueFields(
  spec: FhirValueSpec,
  values: Readonly<Record<string, MeasurementValue>>,
): ValueFields {
  const raw = values[spec.valueName];
  if (raw === undefined) return absent('unknown', `no value "${spec.valueName}"`);
  if (spec.valueType === 'String') return { valueString: String(raw) };
  const n =
    typeof raw === 'number'
      ? raw
      : typeof raw === 'string' && raw.trim() !== ''
        ? Number(raw)
        : NaN;
  if (!Number.isFinite(n))
    return absent('error', `value "${spec.valueName}" is not a finite number`);
  // FHIR R4 Quantity: value + UCUM system and code; unit is the human-readable form.
  const q: Quantity = { value: n, unit: spec.unit, system: spec.system, code: spec.code };
  return { valueQuantity: q };
}

function codings(codes: readonly Coding[]) {
  return codes.map((c) => ({
    system: c.system,
    code: c.code,
    ...(c.display ? { display: c.display } : {}),
  }));
}

export function buildObservation(
  m: Measurement,
  t: FhirTemplateSpec,
  ctx: ObservationContext,
): Observation {
  if (m.patientId === undefined) {
    throw new PipelineError('PatientNotFound', `measurement "${m.type}" has no patient`);
  }
  const primary = t.codes[0];
  if (!primary)
    throw new PipelineError('TemplateInvalid', `FHIR template "${t.typeName}" has no code`);
  const identifierValue = observationIdentifierValue({
    deviceId: m.deviceId,
    patientId: m.patientId,
    code: primary.code,
    occurrenceTime: m.occurrenceTime,
  });
  const obs: Observation = {
    resourceType: 'Observation',
    id: observationId(ctx.identifierSystem, identifierValue),
    meta: {
      tag: [
        {
          system: TEMPLATE_TAG_SYSTEM,
          code: `${ctx.templateName}@${ctx.templateVersion}`,
          display: 'mapping template',
        },
      ],
    },
    identifier: [{ system: ctx.identifierSystem, value: identifierValue }],
    status: 'final',
    ...(t.category
      ? {
          category: t.category.map((c) => ({
            coding: codings(c.coding),
            ...(c.text ? { text: c.text } : {}),
          })),
        }
      : {}),
    code: { coding: codings(t.codes), ...(primary.display ? { text: primary.display } : {}) },
    subject: { reference: `Patient/${m.patientId}` },
    ...(m.encounterId !== undefined
      ? { encounter: { reference: `Encounter/${m.encounterId}` } }
      : {}),
    // FHIR R4 Observation.effective[x]: the device's own time, not ours.
    effectiveDateTime: m.occurrenceTime,
    device: { reference: `Device/${deviceResourceId(m.deviceId)}` },
  };
  if (t.value) Object.assign(obs, valueFields(t.value, m.values));
  if (t.components && t.components.length > 0) {
    obs.component = t.components.map((c): ObservationComponent => ({
      code: { coding: codings(c.codes) },
      ...valueFields(c.value, m.values),
    }));
  }
  return obs;
}
