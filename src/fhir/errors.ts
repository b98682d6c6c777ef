/**
 * FHIR HTTP failures → the taxonomy. Transient (network, timeout, 429, 5xx,
 * 409/412 conflicts) → FhirUnavailable, retried with Retry-After honoured;
 * everything else a server says no to → FhirRejected (dead letter).
 */
import type { OperationOutcome } from 'fhir/r4.js';
import { PipelineError } from '../errors.js';

export function isTransientStatus(status: number): boolean {
  return status === 408 || status === 409 || status === 412 || status === 429 || status >= 500;
}

/** Retry-After: delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(
  value: string | null | undefined,
  now = Date.now(),
): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** The first diagnostics of an OperationOutcome: server text about our resource, no PHI of ours. */
export function outcomeText(outcome: unknown): string | undefined {
  const o = outcome as OperationOutcome | undefined;
  if (o?.resourceType !== 'OperationOutcome') return undefined;
  return o.issue
    ?.map((i) => i.diagnostics ?? i.details?.text)
    .filter(Boolean)
    .join('; ');
}

export function statusError(
  status: number,
  what: string,
  body?: unknown,
  retryAfter?: string | null,
): PipelineError {
  const text = outcomeText(typeof body === 'string' ? safeJson(body) : body);
  const message = `${what}: HTTP ${status}${text ? ` — ${text}` : ''}`;
  if (isTransientStatus(status)) {
    const retryAfterMs = parseRetryAfter(retryAfter);
    return new PipelineError('FhirUnavailable', message, {
      details: { status },
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    });
  }
  return new PipelineError('FhirRejected', message, { details: { status } });
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

/**
 * Wraps what a request threw before any answer: a network failure or a timeout
 * (transient). The message names the operation and the cause's code, never the
 * URL (it may carry credentials).
 */
export function fhirError(err: unknown, what: string): PipelineError {
  if (err instanceof PipelineError) return err;
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  const why =
    e.name === 'TimeoutError'
      ? 'timed out (FHIR_TIMEOUT_MS)'
      : (e.cause?.code ?? e.cause?.message ?? e.message ?? String(err));
  return new PipelineError('FhirUnavailable', `${what}: ${why}`, { cause: err });
}
