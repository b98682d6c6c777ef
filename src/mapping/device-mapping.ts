/**
 * Device mapping: one parsed message → readings. Pure (no I/O, no clock: the
 * receipt time comes in `meta`). Every template whose match expression selects
 * something contributes; a template may select each element of an array, so
 * one message can yield many readings.
 *
 * What a template's expressions see depends on its kind (see types.ts):
 * JsonataContent reads the body; MedTech kinds read MedTech's event envelope
 * {Body, Properties, SystemProperties}, whose SystemProperties carry our
 * metadata under IoT Hub's names.
 *
 * Identity is not decided here: a reading carries the device and patient the
 * payload names (or the authenticated device); identity.ts resolves them.
 */
import { PipelineError, foreignErrorKind } from '../errors.js';
import type { CompiledDeviceTemplate, CompiledExpression, MappingSet } from './compile.js';
import { messageEnvelope, type MessageEnvelope } from './envelope.js';
import type { Bindings } from './expressions.js';
import type { AbsentCode } from './special-values.js';
import { parseTimestamp } from './timestamp.js';
import { applyValuePolicy, type ValueOutcome } from './value-policy.js';
import type { Measurement, MeasurementValue, MessageMeta } from './types.js';

/** A reading before identity resolution: the patient is only what the payload claims. */
export interface Reading extends Omit<Measurement, 'patientId' | 'gatewayId'> {
  readonly claimedPatientId?: string;
  /** `payload`: the template's device expression named the device; `connection`: it has none. */
  readonly deviceFrom: 'payload' | 'connection';
  /** The template has a patient expression and it yielded nothing. */
  readonly patientClaimMissing?: true;
}

/** What the debugger shows: every step of every template, in order. */
export type TraceEvent =
  | {
      readonly kind: 'match';
      readonly template: string;
      readonly file: string;
      readonly contexts: number;
    }
  | {
      readonly kind: 'expression';
      readonly template: string;
      readonly field: string;
      readonly language: string;
      readonly fast: boolean;
      readonly value: unknown;
    }
  | {
      readonly kind: 'value';
      readonly template: string;
      readonly valueName: string;
      /** The template's UCUM unit for the value, if it names one. */
      readonly unit?: string;
      readonly outcome: ValueOutcome;
    }
  | { readonly kind: 'reading'; readonly template: string; readonly reading: Reading };

export interface MapOptions {
  readonly trace?: (event: TraceEvent) => void;
  /**
   * The message's envelope (envelope.ts, per MEDTECH_ENVELOPE); default: the
   * payload as Body, no Properties, the broker's SystemProperties.
   */
  readonly envelope?: MessageEnvelope;
}

export interface DeviceMappingResult {
  readonly readings: readonly Reading[];
  /** Names of the templates that matched, in order (for the debugger and metrics). */
  readonly matchedTemplates: readonly string[];
}

/**
 * MedTech's event envelope. The device and time come from authentication and
 * the broker, under the names IoT Hub gives them (anti-spoofing properties).
 */
export function medtechEnvelope(
  body: unknown,
  meta: MessageMeta,
  envelope: MessageEnvelope = messageEnvelope(body, meta),
): Record<string, unknown> {
  return {
    Body: envelope.body,
    Properties: envelope.properties,
    SystemProperties: envelope.systemProperties,
  };
}

/** The expression reads the envelope's Properties or SystemProperties. */
function readsProperties(
  expr: CompiledExpression | undefined,
  t: CompiledDeviceTemplate,
  key: string,
): boolean {
  const spec = (t.spec as unknown as Record<string, { value?: string } | undefined>)[key];
  return expr !== undefined && /Properties/.test(spec?.value ?? '');
}

class Evaluation {
  constructor(
    readonly t: CompiledDeviceTemplate,
    readonly b: Bindings,
    readonly options: MapOptions,
  ) {}

  async run(expr: CompiledExpression, input: unknown, field: string): Promise<unknown> {
    let value: unknown;
    try {
      value = await expr.evaluate(input, this.b);
    } catch (err) {
      // The library's message quotes the payload value it failed on: not in a
      // reason, not as a (loggable) cause. The code and position say what failed.
      throw new PipelineError(
        'TemplateExpression',
        `template "${this.t.spec.typeName}" ${field}: ${foreignErrorKind(err)}`,
        { details: { template: this.t.spec.typeName, field, file: this.t.file } },
      );
    }
    this.options.trace?.({
      kind: 'expression',
      template: this.t.spec.typeName,
      field,
      language: expr.language,
      fast: expr.fast,
      value,
    });
    return value;
  }

  async text(
    expr: CompiledExpression | undefined,
    input: unknown,
    field: string,
  ): Promise<string | undefined> {
    if (!expr) return undefined;
    const v = scalar(await this.run(expr, input, field));
    return v === undefined || v === '' ? undefined : String(v);
  }

  /**
   * An identity expression (device, patient, encounter): its text, or null when
   * a JSONata expression yields null on purpose ("the payload makes no claim"),
   * or undefined when it yields nothing. JMESPath answers null for a missing
   * field, so there null is nothing.
   */
  async claim(
    expr: CompiledExpression,
    input: unknown,
    field: string,
  ): Promise<string | null | undefined> {
    const raw = await this.run(expr, input, field);
    if (raw === null) return expr.language === 'jsonata' ? null : undefined;
    const v = scalar(raw);
    return v === undefined || v === '' ? undefined : String(v);
  }

  fail(
    code:
      | 'InvalidTimestamp'
      | 'RequiredValueMissing'
      | 'DeviceIdMissing'
      | 'EncounterIdMissing'
      | 'MessagePropertyMissing',
    message: string,
    value?: string,
  ): never {
    const name = this.t.spec.typeName;
    throw new PipelineError(code, `template "${name}": ${message}`, {
      details: { template: name, file: this.t.file, ...(value ? { value } : {}) },
    });
  }
}

/** One value out of an expression result; a sequence of one is unwrapped. */
function scalar(v: unknown): MeasurementValue | undefined {
  if (Array.isArray(v)) return v.length === 1 ? scalar(v[0]) : undefined;
  if (typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') return v;
  return undefined;
}

async function mapContext(ev: Evaluation, ctx: unknown, envelope: unknown): Promise<Reading> {
  const t = ev.t;
  const kind = t.spec.kind;
  // CalculatedContent: later expressions see the envelope plus the match as `matchedToken`.
  const input = kind === 'CalculatedContent' ? { ...(envelope as object), matchedToken: ctx } : ctx;

  let occurrenceTime: string;
  const env = envelope as {
    Properties: Record<string, unknown>;
    SystemProperties: Record<string, unknown>;
  };
  if (kind === 'IotJsonPathContent') {
    // MedTech: the device's creation time (Properties.iothub-creation-time-utc),
    // else the hub's enqueued time (here the receipt time, or the bridged hub's).
    const raw =
      env.Properties['iothub-creation-time-utc'] ?? env.SystemProperties['iothub-enqueuedtime'];
    const parsed = parseTimestamp(raw, { zoneOptional: true });
    if (parsed === undefined) {
      ev.fail('InvalidTimestamp', 'iothub-creation-time-utc / iothub-enqueuedtime is not ISO 8601');
    }
    occurrenceTime = parsed;
  } else if (t.timestamp) {
    const raw = await ev.run(t.timestamp, input, 'timestampExpression');
    const parsed = parseTimestamp(raw, { zoneOptional: kind !== 'JsonataContent' });
    if (parsed === undefined) {
      ev.fail(
        'InvalidTimestamp',
        kind === 'JsonataContent'
          ? 'the timestamp is missing or not ISO 8601 with a zone / epoch ms'
          : 'the timestamp is missing or not ISO 8601 / epoch ms',
      );
    }
    occurrenceTime = parsed;
  } else {
    occurrenceTime = new Date(ev.b.meta.receivedAt).toISOString();
  }

  // Identity never falls back: an expression the template has must yield a value
  // (a patient or encounter expression may yield null: "no claim").
  // A property the message does not carry is never replaced by the MQTT identity.
  const propertyMissing = (what: string): never =>
    ev.fail(
      'MessagePropertyMissing',
      `the ${what} expression reads a message property the message does not carry (see MEDTECH_ENVELOPE)`,
    );
  let deviceId = ev.b.meta.deviceId;
  let deviceFrom: Reading['deviceFrom'] = t.deviceId ? 'payload' : 'connection';
  if (kind === 'IotJsonPathContent') {
    // MedTech: SystemProperties.iothub-connection-device-id — the authenticated
    // device, or the device a bridged event names (a claim, checked as any other).
    const named = scalar(env.SystemProperties['iothub-connection-device-id']);
    if (named === undefined || named === '')
      propertyMissing('device (iothub-connection-device-id)');
    deviceId = String(named);
    deviceFrom = deviceId === ev.b.meta.deviceId ? 'connection' : 'payload';
  } else if (t.deviceId) {
    const named = await ev.claim(t.deviceId, input, 'deviceIdExpression');
    if (named === undefined || named === null) {
      if (readsProperties(t.deviceId, t, 'deviceIdExpression')) propertyMissing('device');
      ev.fail('DeviceIdMissing', 'the device expression yielded nothing');
    }
    deviceId = named;
  }
  // A patient expression that yields nothing is decided by the identity mode
  // (identity.ts): refused where the association decides (Create), ignored where
  // the FHIR Device does (Lookup, as in MedTech).
  let claimedPatientId: string | undefined;
  let patientClaimMissing = false;
  if (t.patientId) {
    const named = await ev.claim(t.patientId, input, 'patientIdExpression');
    if (named === undefined && readsProperties(t.patientId, t, 'patientIdExpression'))
      propertyMissing('patient');
    patientClaimMissing = named === undefined;
    claimedPatientId = named ?? undefined;
  }
  let encounterId: string | undefined;
  if (t.encounterId) {
    const named = await ev.claim(t.encounterId, input, 'encounterIdExpression');
    if (named === undefined) {
      if (readsProperties(t.encounterId, t, 'encounterIdExpression')) propertyMissing('encounter');
      ev.fail('EncounterIdMissing', 'the encounter expression yielded nothing');
    }
    encounterId = named ?? undefined;
  }
  const correlationId = await ev.text(t.correlationId, input, 'correlationIdExpression');
  if (t.correlationId && correlationId === undefined) {
    ev.fail('RequiredValueMissing', 'the correlation id is missing');
  }

  const values: Record<string, MeasurementValue> = {};
  const absent: Record<string, AbsentCode> = {};
  const original: Record<string, { value: number; unit: string }> = {};
  for (const v of t.values) {
    const value = scalar(await ev.run(v.expression, input, `value "${v.valueName}"`));
    if (value === undefined) {
      if (v.required) ev.fail('RequiredValueMissing', `required value "${v.valueName}" is missing`);
      continue;
    }
    const unitText = v.unitExpression
      ? await ev.text(v.unitExpression, input, `unit of "${v.valueName}"`)
      : undefined;
    // Units, 11073 special values and sentinels (value-policy.ts).
    const outcome = applyValuePolicy(value, unitText, v.spec, {
      template: t.spec.typeName,
      file: t.file,
    });
    ev.options.trace?.({
      kind: 'value',
      template: t.spec.typeName,
      valueName: v.valueName,
      outcome,
      ...(v.spec.unit !== undefined ? { unit: v.spec.unit } : {}),
    });
    if (outcome.kind === 'absent') absent[v.valueName] = outcome.reason;
    else values[v.valueName] = outcome.value;
    if (outcome.kind === 'converted') original[v.valueName] = outcome.original;
  }

  return {
    type: t.spec.typeName,
    deviceId,
    deviceFrom,
    ...(claimedPatientId !== undefined ? { claimedPatientId } : {}),
    ...(patientClaimMissing ? { patientClaimMissing: true } : {}),
    ...(encounterId !== undefined ? { encounterId } : {}),
    ...(correlationId !== undefined ? { correlationId } : {}),
    occurrenceTime,
    values,
    ...(Object.keys(absent).length > 0 ? { absent } : {}),
    ...(Object.keys(original).length > 0 ? { original } : {}),
  };
}

/**
 * Maps one message body. Throws a PipelineError (TemplateExpression,
 * InvalidTimestamp, RequiredValueMissing); returns no readings when no
 * template matched — the caller decides what that means.
 */
export async function mapMessage(
  mappings: MappingSet,
  body: unknown,
  meta: MessageMeta,
  options: MapOptions = {},
): Promise<DeviceMappingResult> {
  const parts = options.envelope ?? messageEnvelope(body, meta);
  const b: Bindings = { msg: parts.body, meta };
  let envelope: Record<string, unknown> | undefined;
  const readings: Reading[] = [];
  const matchedTemplates: string[] = [];
  for (const t of mappings.deviceTemplates) {
    const ev = new Evaluation(t, b, options);
    let root: unknown = parts.body;
    if (t.spec.kind !== 'JsonataContent') root = envelope ??= medtechEnvelope(body, meta, parts);
    let selected: unknown;
    try {
      selected = await t.match.select(root, b);
    } catch (err) {
      throw new PipelineError(
        'TemplateExpression',
        `template "${t.spec.typeName}" typeMatchExpression: ${foreignErrorKind(err)}`,
        { details: { template: t.spec.typeName, file: t.file } },
      );
    }
    const contexts = selected as unknown[];
    options.trace?.({
      kind: 'match',
      template: t.spec.typeName,
      file: t.file,
      contexts: contexts.length,
    });
    if (contexts.length === 0) continue;
    matchedTemplates.push(t.spec.typeName);
    for (const ctx of contexts) {
      const reading = await mapContext(ev, ctx, root);
      options.trace?.({ kind: 'reading', template: t.spec.typeName, reading });
      readings.push(reading);
    }
  }
  return { readings, matchedTemplates };
}
