/**
 * The FHIR writer's subject cache (src/fhir/subject-cache.ts): entries expire
 * after their time to live, 0 remembers nothing, and the server's refusals that
 * name a missing or deleted subject are recognised — HAPI's own answers, as
 * recorded from HAPI 8.8 (400 with HAPI-1094 / HAPI-1096) — and nothing else is.
 */
import { describe, expect, it } from 'vitest';
import { statusError } from '../../src/fhir/errors.js';
import { createSubjectCache, missingSubjects } from '../../src/fhir/subject-cache.js';

const outcome = (diagnostics: string) => ({
  resourceType: 'OperationOutcome',
  issue: [{ severity: 'error', code: 'exception', diagnostics }],
});

describe('subject cache', () => {
  it('forgets an entry after its time to live, and on request', async () => {
    const cache = createSubjectCache({ ttlMs: 50 });
    cache.remember('Device', 'd1');
    cache.remember('Patient', 'p1');
    expect(cache.has('Device', 'd1')).toBe(true);
    expect(cache.has('Patient', 'd1')).toBe(false); // types are apart
    cache.forget('Patient', 'p1');
    expect(cache.has('Patient', 'p1')).toBe(false);
    // Expiry: polled, bounded (lru-cache measures with performance.now()).
    const deadline = Date.now() + 5000;
    while (cache.has('Device', 'd1') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    expect(cache.has('Device', 'd1')).toBe(false);
  });

  it('remembers nothing with a time to live of 0', () => {
    const cache = createSubjectCache({ ttlMs: 0 });
    cache.remember('Patient', 'p1');
    expect(cache.has('Patient', 'p1')).toBe(false);
    expect(() => createSubjectCache({ ttlMs: -1 })).toThrow(RangeError);
  });

  it("reads HAPI's refusals of a missing or deleted subject, and only those", () => {
    const missing = statusError(
      400,
      'Observation/o1',
      outcome('HAPI-1094: Resource Device/dev-m1 not found, specified in path: Observation.device'),
    );
    expect(missingSubjects(missing)).toEqual([{ type: 'Device', id: 'dev-m1' }]);
    const deleted = statusError(
      400,
      'Observation/o1',
      outcome(
        'HAPI-1096: Resource Patient/pat-7 is deleted, specified in path: Observation.subject',
      ),
    );
    expect(missingSubjects(deleted)).toEqual([{ type: 'Patient', id: 'pat-7' }]);
    // Another refusal, another resource type, or a transient answer: nothing to restore.
    expect(
      missingSubjects(statusError(422, 'Observation/o1', outcome('Observation.status: required'))),
    ).toEqual([]);
    expect(
      missingSubjects(
        statusError(400, 'Observation/o1', outcome('HAPI-1094: Resource Encounter/e1 not found')),
      ),
    ).toEqual([]);
    expect(
      missingSubjects(
        statusError(503, 'Observation/o1', outcome('HAPI-1094: Resource Device/d not found')),
      ),
    ).toEqual([]);
  });
});
