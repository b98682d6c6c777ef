/**
 * Observation → ClickHouse rows, in the spirit of a SQL-on-FHIR v2 ViewDefinition:
 * one `observations` row per Observation version and one `observation_components`
 * row per Observation.component. PURE: no clock, no I/O; the commit time comes in.
 *
 * Contract: output field names are the column names (rows go to JSONEachRow as
 * they are); timestamps are 'YYYY-MM-DD hh:mm:ss.SSS' in UTC, which both the
 * embedded engine and a server parse into DateTime64(3, 'UTC') under the default
 * `date_time_input_format = basic` (epoch millis are read differently by
 * versions and settings, so we avoid them).
 */
import type {
  CodeableConcept,
  Coding,
  Observation,
  ObservationComponent,
  Quantity,
  Reference,
} from 'fhir/r4.js';
import { PipelineError } from '../errors.js';
import type { ObservationEnvelope } from '../queues.js';

export const LOINC_SYSTEM = 'http://loinc.org';
export const MDC_SYSTEM = 'urn:iso:std:iso:11073:10101';
export const UCUM_SYSTEM = 'http://unitsofmeasure.org';
const CATEGORY_SYSTEM = 'http://terminology.hl7.org/CodeSystem/observation-category';

/** Value columns shared by an Observation and a component (value[x] + dataAbsentReason). */
export interface ValueColumns {
  readonly value_num: number | null;
  readonly value_unit: string;
  readonly value_ucum: string;
  readonly value_string: string;
  readonly value_code_system: string;
  readonly value_code: string;
  readonly data_absent_reason: string;
}

/** Code columns: the primary coding (LOINC preferred) plus the LOINC and MDC codes. */
export interface CodeColumns {
  readonly code_system: string;
  readonly code: string;
  readonly code_display: string;
  readonly loinc_code: string;
  readonly mdc_code: string;
}

export interface ObservationRow extends CodeColumns, ValueColumns {
  readonly id: string;
  readonly identifier_system: string;
  readonly identifier_value: string;
  readonly status: string;
  readonly patient_id: string;
  readonly device_id: string;
  /** '' until provenance carries a gateway: nothing upstream sets one yet. */
  readonly gateway_id: string;
  readonly encounter_id: string;
  readonly category: string;
  readonly effective_start: string;
  readonly effective_end: string;
  readonly issued: string | null;
  readonly device_time: string;
  readonly received_at: string;
  readonly fhir_committed_at: string;
  readonly template_name: string;
  readonly template_version: string;
  readonly fhir_version_id: string;
  readonly message_id: string;
  readonly resource: string;
}

export interface ComponentRow extends CodeColumns, ValueColumns {
  readonly observation_id: string;
  readonly component_index: number;
  readonly patient_id: string;
  readonly effective_start: string;
  readonly template_version: string;
  /** The parent's commit time: the ReplacingMergeTree version, as for observations. */
  readonly fhir_committed_at: string;
}

export interface FlattenedObservation {
  readonly observation: ObservationRow;
  readonly components: ComponentRow[];
}

// DateTime64 holds 1900-01-01 .. 2299-12-31; outside that the engine would clamp silently.
const MIN_MS = Date.UTC(1900, 0, 1);
const MAX_MS = Date.UTC(2300, 0, 1) - 1;

/** Epoch milliseconds → 'YYYY-MM-DD hh:mm:ss.SSS' (UTC), the DateTime64(3) text form. */
export function toClickHouseDateTime(ms: number): string {
  if (!Number.isFinite(ms) || ms < MIN_MS || ms > MAX_MS) {
    throw new PipelineError('InvalidTimestamp', `timestamp ${ms} is outside DateTime64 range`, {
      stage: 'analytics',
    });
  }
  return new Date(ms).toISOString().slice(0, 23).replace('T', ' ');
}

/**
 * FHIR dateTime / instant → epoch ms. Partial dates ("2024", "2024-05") are read
 * as their first instant in UTC; a time without offset (invalid FHIR) as UTC,
 * never as the host's zone.
 */
export function parseFhirDateTime(value: string): number {
  const withZone = /T[^Z+-]*$/.test(value) ? `${value}Z` : value;
  const ms = Date.parse(withZone);
  if (Number.isNaN(ms)) {
    throw new PipelineError('InvalidTimestamp', 'an Observation date does not parse', {
      stage: 'analytics',
      details: { value: value.slice(0, 40) },
    });
  }
  return ms;
}

/** "Patient/x", ".../Patient/x/_history/2" → "x"; another type or no reference → ''. */
export function referenceId(ref: Reference | undefined, type: string): string {
  const m = new RegExp(`(?:^|/)${type}/([^/]+)(?:/_history/[^/]+)?$`).exec(ref?.reference ?? '');
  return m?.[1] ?? '';
}

/** Primary coding: the first LOINC coding, else the first coding. */
function codeColumns(concept: CodeableConcept | undefined): CodeColumns {
  const codings: Coding[] = concept?.coding ?? [];
  const loinc = codings.find((c) => c.system === LOINC_SYSTEM);
  const mdc = codings.find((c) => c.system === MDC_SYSTEM);
  const primary = loinc ?? codings[0];
  return {
    code_system: primary?.system ?? '',
    code: primary?.code ?? '',
    code_display: primary?.display ?? concept?.text ?? '',
    loinc_code: loinc?.code ?? '',
    mdc_code: mdc?.code ?? '',
  };
}

const NO_VALUE: ValueColumns = {
  value_num: null,
  value_unit: '',
  value_ucum: '',
  value_string: '',
  value_code_system: '',
  value_code: '',
  data_absent_reason: '',
};

function quantityColumns(q: Quantity): Partial<ValueColumns> {
  return {
    value_num: q.value ?? null,
    // Quantity.unit is the human unit; Quantity.code is machine-readable only under UCUM.
    value_unit: q.unit ?? q.code ?? '',
    value_ucum: q.system === UCUM_SYSTEM ? (q.code ?? '') : '',
  };
}

/** value[x] and dataAbsentReason of an Observation or an Observation.component. */
function valueColumns(src: Observation | ObservationComponent): ValueColumns {
  const out: { -readonly [K in keyof ValueColumns]?: ValueColumns[K] } = {};
  if (src.valueQuantity) Object.assign(out, quantityColumns(src.valueQuantity));
  else if (src.valueString !== undefined) out.value_string = src.valueString;
  else if (src.valueInteger !== undefined) out.value_num = src.valueInteger;
  else if (src.valueBoolean !== undefined) {
    out.value_num = src.valueBoolean ? 1 : 0;
    out.value_string = String(src.valueBoolean);
  } else if (src.valueCodeableConcept) {
    const c = src.valueCodeableConcept.coding?.[0];
    out.value_code_system = c?.system ?? '';
    out.value_code = c?.code ?? '';
    out.value_string = c?.display ?? src.valueCodeableConcept.text ?? '';
  } else if (src.valueSampledData) {
    // Waveforms: the raw data string, its unit from SampledData.origin.
    Object.assign(out, quantityColumns(src.valueSampledData.origin), { value_num: null });
    out.value_string = src.valueSampledData.data ?? '';
  } else if (src.valueDateTime !== undefined) out.value_string = src.valueDateTime;
  else if (src.valueTime !== undefined) out.value_string = src.valueTime;
  // Observation.dataAbsentReason: the coded reason, else its text.
  const dar = src.dataAbsentReason;
  if (dar) out.data_absent_reason = dar.coding?.[0]?.code ?? dar.text ?? '';
  return { ...NO_VALUE, ...out };
}

/**
 * Observation.effective[x] → [start, end] in ms. effectiveDateTime / effectiveInstant
 * give start = end; effectivePeriod its bounds (an open end = start). Without
 * effective[x], Observation.issued, then the broker receipt time: both are stable
 * for one Observation, which the ORDER BY key needs (see schema.ts).
 */
function effectiveRange(obs: Observation, receivedAt: number): [number, number] {
  const point = obs.effectiveDateTime ?? obs.effectiveInstant;
  if (point !== undefined) {
    const ms = parseFhirDateTime(point);
    return [ms, ms];
  }
  const period = obs.effectivePeriod;
  if (period?.start !== undefined) {
    const start = parseFhirDateTime(period.start);
    return [start, period.end === undefined ? start : parseFhirDateTime(period.end)];
  }
  const fallback = obs.issued === undefined ? receivedAt : parseFhirDateTime(obs.issued);
  return [fallback, fallback];
}

function categoryCode(obs: Observation): string {
  const codings = (obs.category ?? []).flatMap((c) => c.coding ?? []);
  const preferred = codings.find((c) => c.system === CATEGORY_SYSTEM) ?? codings[0];
  return preferred?.code ?? '';
}

/** One envelope → its observation row and component rows. Throws InvalidTimestamp on a bad date. */
export function flattenObservation(
  env: ObservationEnvelope,
  committedAt: number,
): FlattenedObservation {
  const obs = env.observation;
  const prov = env.provenance;
  const [startMs, endMs] = effectiveRange(obs, prov.receivedAt);
  const effectiveStart = toClickHouseDateTime(startMs);
  const committed = toClickHouseDateTime(committedAt);
  const identifier = obs.identifier?.[0];
  const patientId = referenceId(obs.subject, 'Patient');

  const observation: ObservationRow = {
    id: obs.id ?? '',
    identifier_system: identifier?.system ?? '',
    identifier_value: identifier?.value ?? '',
    status: obs.status,
    patient_id: patientId,
    device_id: referenceId(obs.device, 'Device'),
    gateway_id: '',
    encounter_id: referenceId(obs.encounter, 'Encounter'),
    category: categoryCode(obs),
    ...codeColumns(obs.code),
    ...valueColumns(obs),
    effective_start: effectiveStart,
    effective_end: toClickHouseDateTime(endMs),
    issued: obs.issued === undefined ? null : toClickHouseDateTime(parseFhirDateTime(obs.issued)),
    // The device's own clock: our templates put it in effective[x]; provenance has no other yet.
    device_time: effectiveStart,
    received_at: toClickHouseDateTime(prov.receivedAt),
    fhir_committed_at: committed,
    template_name: prov.templateName,
    template_version: prov.templateVersion,
    fhir_version_id: obs.meta?.versionId ?? '',
    message_id: prov.messageId,
    resource: JSON.stringify(obs),
  };

  const components = (obs.component ?? []).map((comp, index): ComponentRow => ({
    observation_id: observation.id,
    component_index: index,
    patient_id: patientId,
    ...codeColumns(comp.code),
    ...valueColumns(comp),
    effective_start: effectiveStart,
    template_version: prov.templateVersion,
    fhir_committed_at: committed,
  }));
  return { observation, components };
}
