/**
 * The whole pure path for one message: payload text → JSON → measurements →
 * Observations. The normalize worker, the CLI debugger and (later) the web
 * console run exactly this function on the same input.
 */
import type { Observation } from 'fhir/r4.js';
import { PipelineError } from '../errors.js';
import type { MappingSet } from './compile.js';
import { mapMessage } from './device-mapping.js';
import { buildObservation } from './fhir-mapping.js';
import type { Measurement, MessageMeta } from './types.js';

export interface NormalizeInput {
  readonly payload: string;
  readonly meta: MessageMeta;
  /** The authenticated device's patient binding (from the registry). */
  readonly patientId: string | undefined;
  readonly identifierSystem: string;
}

export interface NormalizedObservation {
  readonly observation: Observation;
  readonly templateName: string;
}

export interface NormalizeResult {
  readonly matchedTemplates: readonly string[];
  readonly measurements: readonly Measurement[];
  readonly observations: readonly NormalizedObservation[];
}

export function parsePayload(payload: string): unknown {
  let body: unknown;
  try {
    body = JSON.parse(payload);
  } catch (err) {
    throw new PipelineError(
      'InvalidPayload',
      `the payload is not valid JSON: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (typeof body !== 'object' || body === null) {
    throw new PipelineError('InvalidPayload', 'the payload must be a JSON object or array');
  }
  return body;
}

export async function normalizeMessage(
  mappings: MappingSet,
  input: NormalizeInput,
): Promise<NormalizeResult> {
  const body = parsePayload(input.payload);
  const { measurements, matchedTemplates } = await mapMessage(
    mappings,
    body,
    input.meta,
    input.patientId,
  );
  if (matchedTemplates.length === 0) {
    throw new PipelineError('TemplateNotMatched', 'no device template matched the message');
  }
  const observations = measurements.map((m) => {
    const t = mappings.fhirTemplates.get(m.type);
    if (!t) throw new PipelineError('FhirTemplateMissing', `no FHIR template for type "${m.type}"`);
    return {
      templateName: m.type,
      observation: buildObservation(m, t, {
        identifierSystem: input.identifierSystem,
        templateName: m.type,
        templateVersion: mappings.version,
      }),
    };
  });
  return { matchedTemplates, measurements, observations };
}
