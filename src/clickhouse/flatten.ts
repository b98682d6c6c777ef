/**
 * Observation → ClickHouse rows, in the spirit of a SQL-on-FHIR v2 ViewDefinition:
 * one `observations` row per Observation version, one `observation_components`
 * row per Observation.component and one `samples` row per SampledData point.
 * PURE: no clock, no I/O; the commit time comes in.
 *
 * Contract: output field names are the column names (rows go to JSONEachRow as
 * they are); timestamps are 'YYYY-MM-DD hh:mm:ss.SSS' in UTC (time.ts).
 *
 * Every column derives from the stored resource when it says so: the delivery
 * (message id, broker receipt) from meta.source, the template from meta.tag, the
 * FHIR commit time from meta.lastUpdated. The envelope's provenance and the
 * job's commit time are only fallbacks for resources that lack them. That is what
 * makes `iomt mirror backfill` (which sees only FHIR) restore the same rows.
 */
import type {
  CodeableConcept,
  Coding,
  Observation,
  ObservationComponent,
  Quantity,
  Reference,
} from 'fhir/r4.js';
import { parseMessageSource } from '../fhir/message-source.js';
import { GATEWAY_EXTENSION_URL, TEMPLATE_TAG_SYSTEM } from '../mapping/fhir-mapping.js';
import type { ObservationEnvelope, ObservationProvenance } from '../queues.js';
import { expandSampledData, type SampleRow } from './samples.js';
import { parseFhirDateTime, toClickHouseDateTime } from './time.js';

export { parseFhirDateTime, toClickHouseDateTime } from './time.js';
export type { SampleRow } from './samples.js';

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
  readonly loinc_display: string;
  readonly mdc_code: string;
  readonly mdc_display: string;
}

export interface ObservationRow extends CodeColumns, ValueColumns {
  readonly id: string;
  readonly identifier_system: string;
  readonly identifier_value: string;
  readonly status: string;
  readonly patient_id: string;
  readonly device_id: string;
  /** The relaying gateway's Device id (R4 extension observation-gatewayDevice), else ''. */
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
  /** The Observation's device (FHIR Device id). */
  readonly device_id: string;
  readonly effective_start: string;
  readonly template_version: string;
  /** The parent's commit time: the ReplacingMergeTree version, as for observations. */
  readonly fhir_committed_at: string;
}

export interface FlattenedObservation {
  readonly observation: ObservationRow;
  readonly components: ComponentRow[];
  readonly samples: SampleRow[];
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
    loinc_display: loinc?.display ?? '',
    mdc_code: mdc?.code ?? '',
    mdc_display: mdc?.display ?? '',
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

/** The template that produced a resource: meta.tag `name@version` (fhir-mapping.ts), if any. */
function templateTag(obs: Observation): { name: string; version: string } | undefined {
  const code = obs.meta?.tag?.find((t) => t.system === TEMPLATE_TAG_SYSTEM)?.code;
  const at = code?.lastIndexOf('@') ?? -1;
  if (code === undefined || at <= 0) return undefined;
  return { name: code.slice(0, at), version: code.slice(at + 1) };
}

/**
 * What the resource itself says about its origin, over the envelope's fallback:
 * the stored resource is the system of record (see the header).
 */
export function provenanceOf(
  obs: Observation,
  fallback?: ObservationProvenance,
): {
  messageId: string;
  receivedAt: number | undefined;
  templateName: string;
  templateVersion: string;
} {
  const source = parseMessageSource(obs.meta?.source);
  const tag = templateTag(obs);
  return {
    messageId: source?.messageId ?? fallback?.messageId ?? '',
    receivedAt: source?.receivedAt ?? fallback?.receivedAt,
    templateName: tag?.name ?? fallback?.templateName ?? '',
    templateVersion: tag?.version ?? fallback?.templateVersion ?? '',
  };
}

function gatewayId(obs: Observation): string {
  const ext = obs.extension?.find((e) => e.url === GATEWAY_EXTENSION_URL);
  return referenceId(ext?.valueReference, 'Device');
}

/**
 * One envelope → its observation, component and sample rows. `committedAt` is
 * used only when the resource has no meta.lastUpdated. Throws InvalidTimestamp on
 * a bad date, InvalidValue on malformed SampledData.
 */
export function flattenObservation(
  env: ObservationEnvelope,
  committedAt: number,
): FlattenedObservation {
  const obs = env.observation;
  const prov = provenanceOf(obs, env.provenance);
  // Without a receipt time (another system's resource), the commit time stands in.
  const lastUpdated = obs.meta?.lastUpdated;
  const committedMs = lastUpdated === undefined ? committedAt : parseFhirDateTime(lastUpdated);
  const receivedMs = prov.receivedAt ?? committedMs;
  const [startMs, endMs] = effectiveRange(obs, receivedMs);
  const effectiveStart = toClickHouseDateTime(startMs);
  const committed = toClickHouseDateTime(committedMs);
  const identifier = obs.identifier?.[0];
  const patientId = referenceId(obs.subject, 'Patient');
  const deviceId = referenceId(obs.device, 'Device');
  const code = codeColumns(obs.code);

  const observation: ObservationRow = {
    id: obs.id ?? '',
    identifier_system: identifier?.system ?? '',
    identifier_value: identifier?.value ?? '',
    status: obs.status,
    patient_id: patientId,
    device_id: deviceId,
    gateway_id: gatewayId(obs),
    encounter_id: referenceId(obs.encounter, 'Encounter'),
    category: categoryCode(obs),
    ...code,
    ...valueColumns(obs),
    effective_start: effectiveStart,
    effective_end: toClickHouseDateTime(endMs),
    issued: obs.issued === undefined ? null : toClickHouseDateTime(parseFhirDateTime(obs.issued)),
    // The device's own clock: templates put it in effective[x]; provenance has no other.
    device_time: effectiveStart,
    received_at: toClickHouseDateTime(receivedMs),
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
    device_id: deviceId,
    ...codeColumns(comp.code),
    ...valueColumns(comp),
    effective_start: effectiveStart,
    template_version: prov.templateVersion,
    fhir_committed_at: committed,
  }));

  const sampleContext = (componentIndex: number, codeOf: CodeColumns, q: Quantity) => ({
    observationId: observation.id,
    componentIndex,
    patientId,
    deviceId,
    code: codeOf.code,
    unit: q.system === UCUM_SYSTEM ? (q.code ?? q.unit ?? '') : (q.unit ?? q.code ?? ''),
    startMs,
    templateVersion: prov.templateVersion,
    committedAt: committed,
  });
  const samples: SampleRow[] = [];
  if (obs.valueSampledData) {
    const sd = obs.valueSampledData;
    samples.push(...expandSampledData(sd, sampleContext(-1, code, sd.origin)));
  }
  (obs.component ?? []).forEach((comp, index) => {
    const sd = comp.valueSampledData;
    if (sd)
      samples.push(
        ...expandSampledData(sd, sampleContext(index, codeColumns(comp.code), sd.origin)),
      );
  });
  return { observation, components, samples };
}
