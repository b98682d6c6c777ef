/**
 * `iomt mappings debug --json`: the debugger's stages as one JSON object, for
 * scripts and the console — every template (matched or not) with its
 * expressions' values, the identities, the measurements and Observations, or
 * the code the message is refused with. Runs the worker's path
 * (normalizeMessage) with the same bindings as the text debugger.
 */
import { toPipelineError } from '../errors.js';
import type { MappingSet } from './compile.js';
import { traceMessage, type DebugInput } from './debug.js';
import type { TraceEvent } from './device-mapping.js';
import type { IdentityClaim, ResolvedIdentity } from './identity.js';

interface TemplateTrace {
  template: string;
  file: string;
  matched: number;
  expressions: { field: string; language: string; directRead: boolean; value: unknown }[];
  /** Unit conversions and device special values, per value (issue 10). */
  values: { valueName: string; unit?: string; outcome: unknown }[];
  readings: unknown[];
}

export interface DebugJson {
  readonly ok: boolean;
  readonly version: string;
  readonly message: { deviceId: string; topic: string; receivedAt: string; bytes: number };
  readonly templates: readonly TemplateTrace[];
  readonly identities: readonly unknown[];
  readonly measurements?: unknown;
  readonly implausible?: unknown;
  readonly observations?: unknown;
  readonly error?: { code: string; stage: string; message: string; details: unknown };
}

export async function debugJson(mappings: MappingSet, input: DebugInput): Promise<DebugJson> {
  const templates: TemplateTrace[] = [];
  const trace = (e: TraceEvent) => {
    if (e.kind === 'match') {
      templates.push({
        template: e.template,
        file: e.file,
        matched: e.contexts,
        expressions: [],
        values: [],
        readings: [],
      });
      return;
    }
    const last = templates[templates.length - 1];
    if (!last) return;
    if (e.kind === 'expression')
      last.expressions.push({
        field: e.field,
        language: e.language,
        directRead: e.fast,
        value: e.value,
      });
    else if (e.kind === 'value')
      last.values.push({
        valueName: e.valueName,
        ...(e.unit !== undefined ? { unit: e.unit } : {}),
        outcome: e.outcome,
      });
    else last.readings.push(e.reading);
  };
  const identities: (readonly [IdentityClaim, ResolvedIdentity])[] = [];
  const head = {
    version: mappings.version,
    message: {
      deviceId: input.meta.deviceId,
      topic: input.meta.topic,
      receivedAt: new Date(input.meta.receivedAt).toISOString(),
      bytes: Buffer.byteLength(input.payload),
    },
  };
  try {
    const r = await traceMessage(mappings, input, trace, identities);
    return {
      ok: true,
      ...head,
      templates,
      identities: identities.map(([claim, resolved]) => ({ claim, resolved })),
      measurements: r.measurements,
      implausible: r.implausible,
      observations: r.observations.map((o) => ({ ...o.observation })),
    };
  } catch (err) {
    const e = toPipelineError(err);
    return {
      ok: false,
      ...head,
      templates,
      identities: identities.map(([claim, resolved]) => ({ claim, resolved })),
      error: { code: e.code, stage: e.stage, message: e.message, details: e.details },
    };
  }
}
