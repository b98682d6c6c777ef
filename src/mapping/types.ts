/**
 * The mapping model. Field names follow Azure MedTech's templates
 * (CollectionContent / CodeValueFhir) so that operators moving over recognise
 * them; MedTech's own template types load as they are (see medtech.ts).
 */

import type { AbsentCode, Sentinel, SpecialEncoding } from './special-values.js';

/** Expression languages: JSONata is ours; JSONPath and JMESPath are MedTech's. */
export type ExpressionLanguage = 'jsonata' | 'jsonpath' | 'jmespath';

/** An expression as written in a template: its text, and the language it is in. */
export interface ExpressionSpec {
  readonly value: string;
  readonly language: ExpressionLanguage;
}

/**
 * How a device template reads a message:
 *  - JsonataContent (ours): expressions see the message body, with `$meta`
 *    (deviceId, topic, receivedAt) and `$msg` (the whole body) bound.
 *  - JsonPathContent / IotJsonPathContent / IotCentralJsonPathContent (MedTech
 *    "legacy"): the match runs on MedTech's event envelope
 *    {Body, Properties, SystemProperties}; later expressions run on each match.
 *  - CalculatedContent (MedTech): the match runs on the envelope; later
 *    expressions run on the envelope with the match added as `matchedToken`.
 */
export type DeviceTemplateKind =
  | 'JsonataContent'
  | 'JsonPathContent'
  | 'IotJsonPathContent'
  | 'IotCentralJsonPathContent'
  | 'CalculatedContent';

/** One device mapping template: message → measurements of one type. */
export interface DeviceTemplateSpec {
  readonly kind: DeviceTemplateKind;
  readonly typeName: string;
  /**
   * Selects what to map. `true` maps the whole message; an object maps that
   * object; an array maps each element (a batch of readings in one message);
   * false / null / nothing means the template does not match.
   */
  readonly typeMatchExpression: ExpressionSpec;
  /** Absent: the broker's receipt time. Strings are ISO 8601; numbers are epoch ms. */
  readonly timestampExpression?: ExpressionSpec;
  /**
   * Absent: the authenticated device. Present: must be the authenticated device,
   * or a device the authenticated gateway may speak for.
   */
  readonly deviceIdExpression?: ExpressionSpec;
  readonly patientIdExpression?: ExpressionSpec;
  readonly encounterIdExpression?: ExpressionSpec;
  /** When present, a value is required (MedTech: CorrelationIdNotDefined). */
  readonly correlationIdExpression?: ExpressionSpec;
  readonly values: readonly DeviceValueSpec[];
}

export interface DeviceValueSpec {
  readonly valueName: string;
  readonly valueExpression: ExpressionSpec;
  readonly required: boolean;
  /** Ours: the device's unit for this value, as the device writes it (read leniently, units.ts). */
  readonly unitExpression?: ExpressionSpec;
  /** Ours: the device's unit when `unitExpression` gives none (the maker's documented unit). */
  readonly defaultUnit?: string;
  /** Ours: the UCUM code the value is written in; a reading in another unit is converted. */
  readonly unit?: string;
  /** Ours: molar mass in g/mol, for mass ↔ substance conversions (glucose: 180.156). */
  readonly molarMass?: number;
  /**
   * Ours: a reading of at most this, in "%" or with no unit, is a fraction of one
   * and converted (×100): a saturation of 0.97 % is not physiological; 0.97 is 97 %.
   */
  readonly fractionAtMost?: number;
  /** Ours: the IEEE 11073-20601 encoding whose special values the device forwards. */
  readonly specialValues?: SpecialEncoding;
  /** Ours: values the device sends for "no reading", each with its dataAbsentReason. */
  readonly sentinels?: readonly Sentinel[];
}

export interface Coding {
  /** MedTech allows a code without a system; ours always have one. */
  readonly system?: string;
  readonly code: string;
  readonly display?: string;
}

export interface CodeableConceptSpec {
  readonly coding: readonly Coding[];
  readonly text?: string;
}

export interface QuantityValueSpec {
  readonly valueType: 'Quantity';
  readonly valueName: string;
  /** Human-readable unit, e.g. "beats/minute". */
  readonly unit?: string;
  /** UCUM code, e.g. "/min" (MedTech makes it optional; our library always sets it). */
  readonly code?: string;
  readonly system?: string;
}

/**
 * FHIR R4 SampledData: readings on a fixed grid from the Observation's start,
 * one slot per `defaultPeriod` milliseconds, "E" where no reading fell.
 */
export interface SampledDataValueSpec {
  readonly valueType: 'SampledData';
  readonly valueName: string;
  /** Milliseconds between slots, unless the reading carries its own (`periodName`). */
  readonly defaultPeriod: number;
  /** Ours: the measurement value holding the device's sampling interval in ms. */
  readonly periodName?: string;
  /** Unit of SampledData.origin. */
  readonly unit: string;
  /** UCUM code and system of the origin (our addition; MedTech sets the unit only). */
  readonly code?: string;
  readonly system?: string;
}

/** MedTech: the reading's value is not used; its presence records this concept. */
export interface CodeableConceptValueSpec {
  readonly valueType: 'CodeableConcept';
  readonly valueName?: string;
  readonly text?: string;
  readonly codes: readonly Coding[];
}

export interface StringValueSpec {
  readonly valueType: 'String';
  readonly valueName: string;
}

export type FhirValueSpec =
  QuantityValueSpec | SampledDataValueSpec | CodeableConceptValueSpec | StringValueSpec;

export interface FhirComponentSpec {
  readonly codes: readonly Coding[];
  readonly value: FhirValueSpec;
}

/**
 * MedTech's periodInterval: 0 one Observation per measurement; 60 / 1440 hourly
 * and daily windows aligned to UTC (SampledData values); -1 one Observation per
 * correlation id (MedTech's ObservationPeriodInterval.CorrelationId).
 */
export type PeriodInterval = -1 | 0 | 60 | 1440;

/** MedTech's CodeValueFhir: measurement type → Observation shape. */
export interface CodeValueFhirSpec {
  readonly kind: 'CodeValueFhir';
  readonly typeName: string;
  readonly codes: readonly Coding[];
  /** Ours: Observation.code.text; default: the first display that is not an MDC reference id. */
  readonly text?: string;
  /** Ours: Observation.meta.profile, for profiles the output is known to meet. */
  readonly profile?: readonly string[];
  readonly category?: readonly CodeableConceptSpec[];
  readonly periodInterval: PeriodInterval;
  readonly value?: FhirValueSpec;
  readonly components?: readonly FhirComponentSpec[];
}

/**
 * Ours: a JSONata expression that builds the whole Observation from the
 * measurement (extensions, referenceRange, interpretation, note, method,
 * bodySite…); the pipeline then sets the fields it owns.
 */
export interface JsonataFhirSpec {
  readonly kind: 'JsonataFhir';
  readonly typeName: string;
  readonly observationExpression: string;
}

export type FhirTemplateSpec = CodeValueFhirSpec | JsonataFhirSpec;

export type MeasurementValue = number | string | boolean;

/** The device mapping's output: one reading of one type, device and time. */
export interface Measurement {
  readonly type: string;
  /** The device that took the reading (a gateway's child, or the authenticated device). */
  readonly deviceId: string;
  /** Set when a gateway published the reading for another device. */
  readonly gatewayId?: string;
  readonly patientId?: string;
  readonly encounterId?: string;
  readonly correlationId?: string;
  /**
   * The device's own time, normalised to UTC ISO 8601 with at least millisecond
   * digits — and every finer digit the device sent (…T09:00:00.123456Z).
   */
  readonly occurrenceTime: string;
  /** Values in the template's units (converted when the device used another). */
  readonly values: Readonly<Record<string, MeasurementValue>>;
  /** Values the device marked as no measurement (11073 special values, sentinels). */
  readonly absent?: Readonly<Record<string, AbsentCode>>;
  /** For each converted value: the number and the UCUM unit the device sent. */
  readonly original?: Readonly<Record<string, { readonly value: number; readonly unit: string }>>;
}

/** What the pipeline knows about a message beside its body: bound to `$meta`. */
export interface MessageMeta {
  /** The authenticated device (from CONNECT, never from the payload). */
  readonly deviceId: string;
  readonly topic: string;
  /** Epoch milliseconds. */
  readonly receivedAt: number;
}
