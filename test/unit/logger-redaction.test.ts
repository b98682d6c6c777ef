/** Logs never carry patient data or secrets, even when a caller passes them by mistake. */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';

function capture() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString('utf8'));
      done();
    },
  });
  return { lines, log: createLogger('debug', { destination }) };
}

describe('logger redaction', () => {
  it('censors payloads, patient ids, values and secrets at the top level and one level down', () => {
    const { lines, log } = capture();
    log.info(
      {
        deviceId: 'monitor-1',
        payload: '{"heartRate":72}',
        patientId: 'p-4711',
        secret: 's3cr3t',
        job: { payload: 'x', values: { hr: 72 }, password: 'pw', token: 'tk' },
      },
      'something happened',
    );
    const text = lines.join('');
    for (const leaked of ['heartRate', 'p-4711', 's3cr3t', '"pw"', '"tk"', '"hr"'])
      expect(text).not.toContain(leaked);
    const entry = JSON.parse(text) as Record<string, unknown>;
    expect(entry.deviceId).toBe('monitor-1'); // device ids are not PHI: they stay for tracing
    expect(entry.payload).toBe('[redacted]');
    expect((entry.job as Record<string, unknown>).values).toBe('[redacted]');
  });
});
