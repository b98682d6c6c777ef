/**
 * MedTech compatibility mode (a FHIR template set with
 * `"compatibility": "MedTech"`): Observations in the shape, and under the
 * identity, that the MedTech service (microsoft/iomt-fhir, R4) wrote them, so
 * that a migrating user's new Observations merge with the stored ones. Pure.
 *
 * Rules, each from iomt-fhir's R4 source (docs/mappings.md lists them):
 *  - identifier: system FhirImportService.ServiceSystem, value
 *    `{patient}.{device}.{type}.{segment}` (FHIR ids of Patient and Device),
 *    the segment `{start}.{end}` as yyyyMMddHHmmss + "Z" for a single reading
 *    or a window (start = end for a single reading), or the correlation id;
 *  - id: SHA-256 (lower-case hex) of `{system}_{value}`
 *    (IdentifierExtensions.ComputeHashForIdentifier);
 *  - code: the template's codings, then the service coding (system
 *    ServiceSystem, code and display the type name), text the type name; each
 *    component's code likewise with its value name (CodeValueFhirTemplateProcessor.ResolveCode);
 *  - effectivePeriod always, start = end for a single reading;
 *  - issued: here the broker's receipt time (MedTech: the write time; the pure
 *    path has no clock).
 */
import { createHash } from 'node:crypto';
import type { CodeableConcept, Observation } from 'fhir/r4.js';
import { PipelineError } from '../errors.js';
import { DATA_ABSENT_SYSTEM } from './fhir-values.js';
import type { ResolvedIdentity } from './identity.js';
import type { CodeValueFhirSpec } from './types.js';

export const MEDTECH_SERVICE_SYSTEM =
  'https://azure.microsoft.com/en-us/services/iomt-fhir-connector/';

/** yyyyMMddHHmmss followed by a literal Z, as .NET formats "yyyyMMddHHmmssZ". */
export function medtechTimeToken(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19).replace(/[-T:]/g, '') + 'Z';
}

export function medtechIdentifier(
  identity: ResolvedIdentity,
  type: string,
  segment: string,
): { system: string; value: string; id: string } {
  const value = `${identity.patientId}.${identity.deviceResourceId}.${type}.${segment}`;
  const id = createHash('sha256')
    .update(`${MEDTECH_SERVICE_SYSTEM}_${value}`, 'utf8')
    .digest('hex');
  return { system: MEDTECH_SERVICE_SYSTEM, value, id };
}

function withServiceCoding(concept: CodeableConcept | undefined, name: string): CodeableConcept {
  return {
    coding: [
      ...(concept?.coding ?? []),
      { system: MEDTECH_SERVICE_SYSTEM, code: name, display: name },
    ],
    text: name,
  };
}

export interface MedTechGroup {
  readonly startMs: number;
  readonly endMs: number;
  /** The correlation id, for periodInterval -1. */
  readonly correlationId?: string;
}

/**
 * MedTech's error semantics for a value: an unparseable Quantity and several
 * values for one Quantity in a group are errors (InvalidQuantityFhirValueException),
 * not dataAbsentReason.
 */
function refuseAbsent(o: Observation, type: string): void {
  for (const part of [o, ...(o.component ?? [])]) {
    const error = part.dataAbsentReason?.coding?.some(
      (c) => c.system === DATA_ABSENT_SYSTEM && c.code !== 'unknown',
    );
    if (error) {
      throw new PipelineError(
        'InvalidValue',
        `FHIR template "${type}": a value is not a number (MedTech compatibility: InvalidQuantityFhirValueException)`,
        { details: { template: type } },
      );
    }
  }
}

/** The Observation our mapping built → MedTech's shape and identity. */
export function medtechShape(
  o: Observation,
  t: CodeValueFhirSpec,
  identity: ResolvedIdentity,
  group: MedTechGroup,
  receivedAt: number,
): Observation {
  refuseAbsent(o, t.typeName);
  // A value the reading lacks is left out (MedTech adds a value only when the group has it).
  const lacks = (part: { dataAbsentReason?: CodeableConcept }) =>
    part.dataAbsentReason?.coding?.some(
      (c) => c.system === DATA_ABSENT_SYSTEM && c.code === 'unknown',
    ) === true;
  const segment =
    group.correlationId ?? `${medtechTimeToken(group.startMs)}.${medtechTimeToken(group.endMs)}`;
  const ident = medtechIdentifier(identity, t.typeName, segment);
  const components = o.component
    ?.filter((c) => !lacks(c))
    .map((c, i) => {
      const spec =
        (t.components ?? []).find(
          (s) =>
            JSON.stringify(s.codes.map((x) => x.code)) ===
            JSON.stringify(c.code.coding?.map((x) => x.code)),
        ) ?? t.components?.[i];
      const name = spec?.value.valueName ?? c.code.coding?.[0]?.code ?? '';
      return { ...c, code: withServiceCoding(c.code, name) };
    });
  const {
    effectiveDateTime: _dt,
    effectivePeriod: _p,
    id: _id,
    identifier: _ident,
    component: _c,
    ...rest
  } = o;
  void [_dt, _p, _id, _ident, _c];
  if (lacks(rest)) delete rest.dataAbsentReason;
  const out: Observation = {
    ...rest,
    id: ident.id,
    identifier: [{ system: ident.system, value: ident.value }],
    code: withServiceCoding(o.code, t.typeName),
    effectivePeriod: {
      start: new Date(group.startMs).toISOString(),
      end: new Date(group.endMs).toISOString(),
    },
    issued: new Date(receivedAt).toISOString(),
    ...(components && components.length > 0 ? { component: components } : {}),
  };
  return out;
}
