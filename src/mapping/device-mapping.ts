/**
 * Device mapping: one parsed message → measurements. Pure (no I/O, no clock:
 * the receipt time comes in `meta`). Every template whose match expression
 * selects something contributes; a template may select each element of an
 * array, so one message can yield many measurements.
 */
import { PipelineError } from '../errors.js';
import type { CompiledDeviceTemplate, Expression, MappingSet } from './compile.js';
import type { Measurement, MeasurementValue, MessageMeta } from './types.js';

export interface DeviceMappingResult {
  readonly measurements: readonly Measurement[];
  /** Names of the templates that matched, in order (for the debugger and metrics). */
  readonly matchedTemplates: readonly string[];
}

interface Bindings {
  readonly msg: unknown;
  readonly meta: MessageMeta;
}

async function evaluate(
  expr: Expression,
  input: unknown,
  bindings: Bindings,
  template: CompiledDeviceTemplate,
  field: string,
): Promise<unknown> {
  try {
    return (await expr.evaluate(input, { msg: bindings.msg, meta: bindings.meta })) as unknown;
  } catch (err) {
    const e = err as { message?: string; position?: number };
    throw new PipelineError(
      'TemplateExpression',
      `template "${template.spec.typeName}" ${field}: ${e.message ?? String(err)}`,
      {
        cause: err,
        details: { template: template.spec.typeName, field, file: template.file },
      },
    );
  }
}

/** JSONata returns sequences as arrays (with a `sequence` flag); normalise to plain values. */
function contexts(selected: unknown, body: unknown): unknown[] {
  if (selected === undefined || selected === null || selected === false) return [];
  if (selected === true) return [body];
  if (Array.isArray(selected)) return selected.filter((s) => s !== undefined && s !== null);
  return [selected];
}

function scalar(v: unknown): MeasurementValue | undefined {
  if (Array.isArray(v)) return v.length === 1 ? scalar(v[0]) : undefined;
  if (typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') return v;
  return undefined;
}

/** ISO 8601 with an explicit zone, or epoch milliseconds; anything else is refused. */
const ISO_WITH_ZONE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;

export function parseTimestamp(v: unknown): string | undefined {
  const s = scalar(v);
  let ms: number;
  if (typeof s === 'number' && Number.isFinite(s)) ms = s;
  else if (typeof s === 'string' && ISO_WITH_ZONE.test(s)) ms = Date.parse(s);
  else return undefined;
  if (!Number.isFinite(ms)) return undefined;
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

async function optionalString(
  expr: Expression | undefined,
  ctx: unknown,
  b: Bindings,
  t: CompiledDeviceTemplate,
  field: string,
): Promise<string | undefined> {
  if (!expr) return undefined;
  const v = scalar(await evaluate(expr, ctx, b, t, field));
  return v === undefined ? undefined : String(v);
}

async function mapContext(
  t: CompiledDeviceTemplate,
  ctx: unknown,
  b: Bindings,
  boundPatientId: string | undefined,
): Promise<Measurement> {
  const name = t.spec.typeName;
  let occurrenceTime: string | undefined;
  if (t.timestamp) {
    occurrenceTime = parseTimestamp(await evaluate(t.timestamp, ctx, b, t, 'timestampExpression'));
    if (occurrenceTime === undefined) {
      throw new PipelineError(
        'InvalidTimestamp',
        `template "${name}": the timestamp is missing or not ISO 8601 with a zone / epoch ms`,
        {
          details: { template: name },
        },
      );
    }
  } else {
    occurrenceTime = new Date(b.meta.receivedAt).toISOString();
  }

  // A device speaks only for itself: a payload naming another device or patient is refused.
  const claimedDevice = await optionalString(t.deviceId, ctx, b, t, 'deviceIdExpression');
  if (claimedDevice !== undefined && claimedDevice !== b.meta.deviceId) {
    throw new PipelineError(
      'DeviceSpoofing',
      `template "${name}": the payload names another device`,
      {
        details: { template: name },
      },
    );
  }
  const claimedPatient = await optionalString(t.patientId, ctx, b, t, 'patientIdExpression');
  if (
    claimedPatient !== undefined &&
    boundPatientId !== undefined &&
    claimedPatient !== boundPatientId
  ) {
    throw new PipelineError(
      'DeviceSpoofing',
      `template "${name}": the payload names a patient the device is not bound to`,
      {
        details: { template: name },
      },
    );
  }

  const values: Record<string, MeasurementValue> = {};
  for (const v of t.values) {
    const value = scalar(await evaluate(v.expression, ctx, b, t, `value "${v.valueName}"`));
    if (value === undefined) {
      if (v.required) {
        throw new PipelineError(
          'RequiredValueMissing',
          `template "${name}": required value "${v.valueName}" is missing`,
          {
            details: { template: name, value: v.valueName },
          },
        );
      }
      continue;
    }
    values[v.valueName] = value;
  }

  const encounterId = await optionalString(t.encounterId, ctx, b, t, 'encounterIdExpression');
  const correlationId = await optionalString(t.correlationId, ctx, b, t, 'correlationIdExpression');
  return {
    type: name,
    deviceId: b.meta.deviceId,
    ...(boundPatientId !== undefined ? { patientId: boundPatientId } : {}),
    ...(encounterId !== undefined ? { encounterId } : {}),
    ...(correlationId !== undefined ? { correlationId } : {}),
    occurrenceTime,
    values,
  };
}

/**
 * Maps one message body. Throws a PipelineError (TemplateExpression,
 * InvalidTimestamp, RequiredValueMissing, DeviceSpoofing); returns no
 * measurements when no template matched — the caller decides what that means.
 */
export async function mapMessage(
  mappings: MappingSet,
  body: unknown,
  meta: MessageMeta,
  boundPatientId?: string,
): Promise<DeviceMappingResult> {
  const b: Bindings = { msg: body, meta };
  const measurements: Measurement[] = [];
  const matchedTemplates: string[] = [];
  for (const t of mappings.deviceTemplates) {
    const selected = contexts(await evaluate(t.match, body, b, t, 'typeMatchExpression'), body);
    if (selected.length === 0) continue;
    matchedTemplates.push(t.spec.typeName);
    for (const ctx of selected) measurements.push(await mapContext(t, ctx, b, boundPatientId));
  }
  return { measurements, matchedTemplates };
}
