/** Logs never carry patient data or secrets, even when a caller passes them by mistake. */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  clip,
  createLogger,
  LOG_NETWORK_STRING_MAX,
  withoutCredentials,
} from '../../src/logger.js';

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

describe('strings from the network', () => {
  it('cuts device ids, client ids, usernames and topics to LOG_NETWORK_STRING_MAX, in bindings too', () => {
    const { lines, log } = capture();
    const long = 'u'.repeat(65_000);
    log
      .child({ clientId: long })
      .warn({ deviceId: long, username: long, topic: `devices/${long}/telemetry` }, 'refused');
    expect(lines[0]!.length).toBeLessThan(2000);
    const entry = JSON.parse(lines[0]!) as Record<string, string>;
    for (const key of ['deviceId', 'username', 'clientId']) {
      expect(entry[key]).toBe(`${'u'.repeat(LOG_NETWORK_STRING_MAX)}…[65000 chars]`);
    }
    expect(entry.topic).toMatch(/^devices\/u{120}…\[65018 chars\]$/);
  });

  it('keeps a device id of the longest registrable length whole', () => {
    expect(clip('d'.repeat(128))).toBe('d'.repeat(128));
  });
});

describe('URLs', () => {
  it('lose user and password in every string field and in error messages', () => {
    const { lines, log } = capture();
    log.error(
      {
        url: 'https://admin:hunter2@fhir.example.org/fhir',
        reason: 'cannot reach redis://default:r3dis-pw@10.0.0.5:6379/0',
        err: new Error('connect ECONNREFUSED http://svc:tok3n@127.0.0.1:8091/fhir'),
      },
      'down',
    );
    const text = lines.join('');
    for (const leaked of ['hunter2', 'r3dis-pw', 'tok3n', 'admin:', 'svc:']) {
      expect(text).not.toContain(leaked);
    }
    const entry = JSON.parse(text) as { url: string; reason: string; err: { message: string } };
    expect(entry.url).toBe('https://[redacted]@fhir.example.org/fhir');
    expect(entry.reason).toBe('cannot reach redis://[redacted]@10.0.0.5:6379/0');
    expect(entry.err.message).toBe('connect ECONNREFUSED http://[redacted]@127.0.0.1:8091/fhir');
  });

  it('leaves e-mail addresses and URLs without credentials alone', () => {
    expect(withoutCredentials('ops@example.org, see http://127.0.0.1:8091/fhir?a=b@c')).toBe(
      'ops@example.org, see http://127.0.0.1:8091/fhir?a=b@c',
    );
  });
});
