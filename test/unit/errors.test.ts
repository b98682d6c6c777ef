import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  ERROR_CODES,
  PipelineError,
  foreignErrorKind,
  httpAnswer,
  queueDecision,
  toPipelineError,
} from '../../src/errors.js';

describe('the error taxonomy', () => {
  it('documents every code in docs/errors.md', () => {
    const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const missing = Object.keys(ERROR_CODES).filter((code) => !doc.includes(`\`${code}\``));
    expect(missing).toEqual([]);
  });

  it('retries transient errors, honouring the server-given delay', () => {
    expect(queueDecision(new PipelineError('FhirUnavailable'))).toEqual({ action: 'retry' });
    expect(
      queueDecision(new PipelineError('FhirUnavailable', 'busy', { retryAfterMs: 3000 })),
    ).toEqual({ action: 'retry', delayMs: 3000 });
  });

  it('dead-letters permanent errors with their code', () => {
    expect(queueDecision(new PipelineError('RequiredValueMissing'))).toEqual({
      action: 'dead-letter',
      code: 'RequiredValueMissing',
    });
  });

  it('wraps foreign errors, keeping them as cause', () => {
    const cause = new TypeError('boom');
    const e = toPipelineError(cause);
    expect(e.code).toBe('Internal');
    expect(e.cause).toBe(cause);
  });

  it('takes a dropped Redis or socket connection for the infrastructure, retried, not a bug', () => {
    const closed = toPipelineError(new Error('Connection is closed.'));
    expect(closed.code).toBe('QueueUnavailable');
    expect(queueDecision(closed)).toEqual({ action: 'retry' });
    const refused = Object.assign(new Error('connect failed'), { code: 'ECONNREFUSED' });
    expect(toPipelineError(refused).code).toBe('QueueUnavailable');
    expect(toPipelineError(new TypeError('x is undefined')).code).toBe('Internal');
    expect(queueDecision(new TypeError('x is undefined'))).toEqual({
      action: 'dead-letter',
      code: 'Internal',
    });
  });

  it('names a library error by its code and position, never by its message', () => {
    const jsonata = {
      code: 'D3030',
      position: 8,
      token: 'number',
      value: 'MRN-99812',
      message: 'Unable to cast value to a number: "MRN-99812"',
    };
    expect(foreignErrorKind(jsonata)).toBe('JSONata error D3030 at character 8');
    expect(foreignErrorKind(new TypeError('Cannot read "MRN-99812"'))).toBe(
      'the expression failed (TypeError)',
    );
  });

  it('answers HTTP errors in one shape', () => {
    expect(httpAnswer(new PipelineError('NotAuthorized', 'token required'))).toEqual({
      status: 401,
      body: { error: { code: 'NotAuthorized', message: 'token required' } },
    });
  });
});
