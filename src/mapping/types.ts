/**
 * The mapping model. Field names follow Azure MedTech's templates
 * (CollectionContent / CodeValueFhir) so that operators moving over recognise
 * them; expressions are JSONata.
 */

/** One device mapping template: message → measurements of one type. */
export interface DeviceTemplateSpec {
  readonly typeName: string;
  /**
   * Selects what to map. `true` maps the whole message; an object maps that
   * object; an array maps each element (a batch of readings in one message);
   * false / null / nothing means the template does not match.
   */
  readonly typeMatchExpression: string;
  /** Absent: the broker's receipt time. Strings are ISO 8601 with a zone; numbers are epoch ms. */
  readonly timestampExpression?: string;
  /** Absent: the authenticated device. Present: must equal it (no speaking for another). */
  readonly deviceIdExpression?: string;
  readonly patientIdExpression?: string;
  readonly encounterIdExpression?: string;
  readonly correlationIdExpression?: string;
  readonly values: readonly DeviceValueSpec[];
}

export interface DeviceValueSpec {
  readonly valueName: string;
  readonly valueExpression: string;
  readonly required?: boolean;
}

export interface Coding {
  readonly system: string;
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
  readonly unit: string;
  /** UCUM code, e.g. "/min". */
  readonly code: string;
  readonly system: string;
}

export interface StringValueSpec {
  readonly valueType: 'String';
  readonly valueName: string;
}

export type FhirValueSpec = QuantityValueSpec | StringValueSpec;

export interface FhirComponentSpec {
  readonly codes: readonly Coding[];
  readonly value: FhirValueSpec;
}

/** MedTech's CodeValueFhir: measurement type → Observation shape. */
export interface FhirTemplateSpec {
  readonly typeName: string;
  readonly codes: readonly Coding[];
  readonly category?: readonly CodeableConceptSpec[];
  /** 0 = one Observation per measurement (the only mode of this release). */
  readonly periodInterval?: number;
  readonly value?: FhirValueSpec;
  readonly components?: readonly FhirComponentSpec[];
}

export type MeasurementValue = number | string | boolean;

/** The device mapping's output: one reading of one type, device and time. */
export interface Measurement {
  readonly type: string;
  readonly deviceId: string;
  readonly patientId?: string;
  readonly encounterId?: string;
  readonly correlationId?: string;
  /** The device's own time, normalised to UTC ISO 8601 with milliseconds. */
  readonly occurrenceTime: string;
  readonly values: Readonly<Record<string, MeasurementValue>>;
}

/** What the pipeline knows about a message beside its body: bound to `$meta`. */
export interface MessageMeta {
  readonly deviceId: string;
  readonly topic: string;
  /** Epoch milliseconds. */
  readonly receivedAt: number;
}
