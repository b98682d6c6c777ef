/**
 * The subjects the FHIR writer knows exist: Patients it found or created, and
 * Devices it wrote from their association history (Create mode). Knowing saves
 * a read (Patient) or a sync (Device) per job, but the FHIR server is the truth:
 * someone may delete a resource there. So an entry is kept for a bounded time
 * (FHIR_SUBJECT_CACHE_TTL_S), and forgotten at once when the server refuses an
 * Observation because a subject it references is missing or deleted
 * (missingSubjects) — then the writer ensures the subject again, creating it only
 * where it may (workers/fhir-subjects.ts), and writes the Observation again.
 *
 * Keys: a Patient by its FHIR id, a Device by its MQTT device id (the writer's
 * unit of work; deviceResourceId maps it to the FHIR id).
 */
import { boundedCache } from '../bounded-cache.js';
import type { PipelineError } from '../errors.js';

export type SubjectType = 'Patient' | 'Device';

export interface SubjectCache {
  has(type: SubjectType, id: string): boolean;
  remember(type: SubjectType, id: string): void;
  forget(type: SubjectType, id: string): void;
}

export interface SubjectCacheOptions {
  /** How long a subject is known, ms; 0 remembers nothing (every job checks). */
  readonly ttlMs: number;
  /** Most subjects remembered (default 100 000). */
  readonly max?: number;
}

export function createSubjectCache(options: SubjectCacheOptions): SubjectCache {
  const { ttlMs } = options;
  if (!Number.isInteger(ttlMs) || ttlMs < 0)
    throw new RangeError(`subject cache ttlMs must be an integer >= 0, got ${ttlMs}`);
  const cache = ttlMs === 0 ? undefined : boundedCache<string, true>(options.max ?? 100_000, ttlMs);
  const key = (type: SubjectType, id: string) => `${type}/${id}`;
  return {
    has: (type, id) => cache?.has(key(type, id)) ?? false,
    remember: (type, id) => void cache?.set(key(type, id), true),
    forget: (type, id) => void cache?.delete(key(type, id)),
  };
}

/** A referenced subject the server says is not there: its FHIR type and id. */
export interface MissingSubject {
  readonly type: SubjectType;
  readonly id: string;
}

/**
 * What HAPI answers for an Observation whose reference is missing or deleted
 * (400, OperationOutcome diagnostics "HAPI-1094: Resource Device/x not found,
 * specified in path: Observation.device", "HAPI-1096: Resource Patient/x is
 * deleted, …"); other servers answer 404, 410 or 422 with like words.
 * statusError (errors.ts) keeps the diagnostics in the message.
 */
const MISSING =
  /\bResource (Patient|Device)\/([A-Za-z0-9\-.]{1,64}) (?:not found|is deleted|has been deleted|is gone)\b/g;
const REFUSALS = new Set([400, 404, 410, 422]);

/** The subjects an entry's refusal names as missing or deleted; [] for any other error. */
export function missingSubjects(error: PipelineError): MissingSubject[] {
  const status = (error.details as { status?: unknown } | undefined)?.status;
  if (typeof status !== 'number' || !REFUSALS.has(status)) return [];
  const found = new Map<string, MissingSubject>();
  for (const m of error.message.matchAll(MISSING)) {
    const type = m[1] as SubjectType;
    const id = m[2]!;
    found.set(`${type}/${id}`, { type, id });
  }
  return [...found.values()];
}
