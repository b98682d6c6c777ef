/**
 * The template library (mappings/) through the pure path the worker, `iomt
 * mappings debug` and `iomt mappings test` share, for unit tests: one device,
 * one patient, a fixed reading and receipt time.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Observation, Quantity } from 'fhir/r4.js';
import { beforeAll, expect } from 'vitest';
import type { PipelineError } from '../../src/errors.js';
import {
  bindingResolver,
  loadMappings,
  normalizeMessage,
  type MappingSet,
  type NormalizeResult,
} from '../../src/mapping/index.js';

export const LIBRARY_DIR = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../mappings',
);
export const AT = '2026-11-26T09:00:00.000Z';
export const RECEIVED = Date.parse('2026-11-26T09:00:05Z');

export const quantity = (o: { valueQuantity?: Quantity }) => {
  const q = o.valueQuantity;
  return q ? [q.value, q.code] : undefined;
};

/** Loads the library before the file's tests; the helpers map one message with it. */
export function useLibraryMappings() {
  let mappings: MappingSet | undefined;
  beforeAll(async () => {
    const r = await loadMappings(LIBRARY_DIR);
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    mappings = r.mappings;
  });
  const loaded = (): MappingSet => {
    if (!mappings) throw new Error('the template library is not loaded yet');
    return mappings;
  };
  async function normalize(body: unknown, deviceId = 'dev-1'): Promise<NormalizeResult> {
    return normalizeMessage(loaded(), {
      payload: JSON.stringify(body),
      meta: { deviceId, topic: `devices/${deviceId}/telemetry`, receivedAt: RECEIVED },
      patientId: 'p-1',
      identifierSystem: 'urn:iomt:observation',
      resolveIdentity: bindingResolver({ patientId: 'p-1' }),
    });
  }
  async function refusal(body: unknown): Promise<PipelineError> {
    try {
      await normalize(body);
    } catch (err) {
      return err as PipelineError;
    }
    throw new Error('expected the message to be refused');
  }
  async function observations(body: unknown): Promise<Observation[]> {
    return (await normalize(body)).observations.map((o) => o.observation);
  }
  async function only(body: unknown, type?: string): Promise<Observation> {
    const out = await normalize(body);
    const picked = out.observations.filter((o) => type === undefined || o.templateName === type);
    expect(picked).toHaveLength(1);
    return picked[0]!.observation;
  }
  return { mappings: loaded, normalize, refusal, observations, only };
}
