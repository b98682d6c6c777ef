import { describe, expect, it } from 'vitest';
import { PipelineError } from '../../src/errors.js';
import { RETRY, backoffDelay } from '../../src/queue-runtime.js';
import { parseRetryAfter, statusError } from '../../src/fhir/errors.js';

describe('retry policy', () => {
  it('grows exponentially with jitter and stays under the cap', () => {
    const lo = () => 0;
    const hi = () => 0.999999;
    expect(backoffDelay(1, new Error('x'), lo)).toBe(RETRY.baseMs / 2);
    expect(backoffDelay(3, new Error('x'), hi)).toBeLessThanOrEqual(RETRY.baseMs * 4);
    expect(backoffDelay(3, new Error('x'), lo)).toBe(RETRY.baseMs * 2);
    expect(backoffDelay(50, new Error('x'), hi)).toBeLessThanOrEqual(RETRY.capMs);
  });

  it('waits as long as Retry-After asks', () => {
    expect(
      backoffDelay(1, new PipelineError('FhirUnavailable', 'busy', { retryAfterMs: 7000 })),
    ).toBe(7000);
  });

  it('parses Retry-After seconds and HTTP dates (RFC 9110)', () => {
    expect(parseRetryAfter('5')).toBe(5000);
    const now = Date.parse('2026-11-26T00:00:00Z');
    expect(parseRetryAfter('Thu, 26 Nov 2026 00:00:10 GMT', now)).toBe(10_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
  });

  it('splits FHIR statuses into transient and permanent', () => {
    for (const s of [408, 409, 412, 429, 500, 503])
      expect(statusError(s, 'x').code).toBe('FhirUnavailable');
    for (const s of [400, 404, 422]) expect(statusError(s, 'x').code).toBe('FhirRejected');
    expect(statusError(503, 'x', undefined, '2').retryAfterMs).toBe(2000);
  });
});
