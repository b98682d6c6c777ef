/**
 * The normalize stage's input policy (workers/input-policy.ts) and the
 * dead-letter filters and times of `iomt dlq`.
 */
import type { Observation } from 'fhir/r4.js';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { matches, parseTime } from '../../src/dlq/index.js';
import type { PipelineError } from '../../src/errors.js';
import type { DeadLetterJobData } from '../../src/queues.js';
import {
  checkJsonShape,
  checkObservationValues,
  hasRefusedReading,
  checkOccurrenceTimes,
} from '../../workers/input-policy.js';

const limits = loadConfig({}).input;

function codeOf(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return (err as PipelineError).code;
  }
}

describe('checkJsonShape', () => {
  it('accepts ordinary payloads, brackets inside strings included', () => {
    expect(codeOf(() => checkJsonShape('{"a":[1,2,{"b":"[[[[["}],"c":"\\"]"}', limits))).toBe(
      undefined,
    );
    expect(codeOf(() => checkJsonShape(`[${'1,'.repeat(9999)}1]`, limits))).toBe(undefined);
    expect(codeOf(() => checkJsonShape('[]', limits))).toBe(undefined);
  });

  it('refuses nesting deeper than INPUT_MAX_JSON_DEPTH', () => {
    expect(codeOf(() => checkJsonShape('['.repeat(32) + ']'.repeat(32), limits))).toBe(undefined);
    expect(codeOf(() => checkJsonShape('['.repeat(33) + ']'.repeat(33), limits))).toBe(
      'InvalidPayload',
    );
  });

  it('refuses an array longer than INPUT_MAX_ARRAY_LENGTH', () => {
    expect(codeOf(() => checkJsonShape(`[${'1,'.repeat(10000)}1]`, limits))).toBe('InvalidPayload');
  });

  it('refuses an object that names a member twice (JSON.parse would keep the last)', () => {
    expect(codeOf(() => checkJsonShape('{"heartRate":70,"heartRate":71}', limits))).toBe(
      'InvalidPayload',
    );
    expect(() => checkJsonShape('{"heartRate":70,"heartRate":71}', limits)).toThrow(
      'the payload names the same object member twice (the second at line 1, column 17)',
    );
  });

  it('refuses text JSON.parse would refuse, naming the position', () => {
    expect(() => checkJsonShape('{"mrn": MRN-99812}', limits)).toThrow(
      'the payload is not valid JSON: an unexpected character at line 1, column 9',
    );
  });
});

describe('checkOccurrenceTimes', () => {
  const now = Date.parse('2026-11-26T08:00:00Z');
  it('accepts times within the window around receipt', () => {
    expect(
      codeOf(() =>
        checkOccurrenceTimes(['2026-11-26T08:04:59Z', '2026-10-28T08:00:01Z'], now, limits),
      ),
    ).toBe(undefined);
  });
  it('refuses times too far ahead or behind', () => {
    expect(codeOf(() => checkOccurrenceTimes(['2026-11-26T08:05:01Z'], now, limits))).toBe(
      'TimestampOutOfRange',
    );
    expect(codeOf(() => checkOccurrenceTimes(['2026-10-27T07:59:59Z'], now, limits))).toBe(
      'TimestampOutOfRange',
    );
  });

  it('says how far off a time is and the rule, never the time itself', () => {
    const reasonOf = (times: string[]) => {
      try {
        checkOccurrenceTimes(times, now, limits);
      } catch (err) {
        return (err as PipelineError).message;
      }
      return undefined;
    };
    const future = reasonOf(['2100-01-01T00:00:00Z']);
    expect(future).toMatch(/after receipt.*INPUT_MAX_FUTURE_MS/);
    const past = reasonOf(['2026-11-26T07:00:00Z', '1990-01-01T00:00:00Z']);
    expect(past).toMatch(/before receipt.*INPUT_MAX_AGE_MS/);
    for (const reason of [future, past]) expect(reason).not.toMatch(/2100|1990|T00:00/);
  });
});

describe('checkObservationValues', () => {
  const obs = (extra: Partial<Observation>): Observation => ({
    resourceType: 'Observation',
    status: 'final',
    code: { text: 'x' },
    ...extra,
  });
  it('passes quantities and readings that are simply absent', () => {
    expect(
      codeOf(() =>
        checkObservationValues([
          obs({ valueQuantity: { value: 72 } }),
          obs({
            dataAbsentReason: {
              coding: [
                {
                  system: 'http://terminology.hl7.org/CodeSystem/data-absent-reason',
                  code: 'unknown',
                },
              ],
            },
          }),
        ]),
      ),
    ).toBe(undefined);
  });
  it('records a value the mapping marked as an error instead of refusing it', () => {
    const error = {
      coding: [
        { system: 'http://terminology.hl7.org/CodeSystem/data-absent-reason', code: 'error' },
      ],
      text: 'value "hr" is not a finite number',
    };
    const marked = obs({ component: [{ code: { text: 'c' }, dataAbsentReason: error }] });
    expect(codeOf(() => checkObservationValues([obs({ dataAbsentReason: error }), marked]))).toBe(
      undefined,
    );
    expect(hasRefusedReading(marked)).toBe(true);
    expect(hasRefusedReading(obs({ valueQuantity: { value: 72 } }))).toBe(false);
  });
  it('refuses a quantity that holds a non-finite number, in a component too', () => {
    expect(
      codeOf(() => checkObservationValues([obs({ valueQuantity: { value: Infinity } })])),
    ).toBe('InvalidValue');
    expect(
      codeOf(() =>
        checkObservationValues([
          obs({ component: [{ code: { text: 'c' }, valueQuantity: { value: NaN } }] }),
        ]),
      ),
    ).toBe('InvalidValue');
  });
});

describe('dead-letter filters and times', () => {
  const letter: DeadLetterJobData = {
    traceId: 't',
    stage: 'normalize',
    code: 'InvalidPayload',
    reason: 'r',
    deviceId: 'd1',
    failedAt: Date.parse('2026-11-26T08:00:00Z'),
  };
  it('matches on every criterion given', () => {
    expect(matches(letter, 'x', {})).toBe(true);
    expect(
      matches(letter, 'x', { code: 'InvalidPayload', deviceId: 'd1', stage: 'normalize' }),
    ).toBe(true);
    expect(matches(letter, 'x', { code: 'FhirRejected' })).toBe(false);
    expect(matches(letter, 'x', { since: letter.failedAt, until: letter.failedAt + 1 })).toBe(true);
    expect(matches(letter, 'x', { until: letter.failedAt })).toBe(false);
    expect(matches(letter, 'x', { ids: ['y'] })).toBe(false);
  });
  it('parses ISO times and spans back from now', () => {
    const now = Date.parse('2026-11-26T08:00:00Z');
    expect(parseTime('15m', '--since', now)).toBe(now - 15 * 60_000);
    expect(parseTime('2d', '--since', now)).toBe(now - 2 * 86_400_000);
    expect(parseTime('2026-11-25T00:00:00Z', '--since', now)).toBe(
      Date.parse('2026-11-25T00:00:00Z'),
    );
    expect(() => parseTime('last tuesday', '--since', now)).toThrow(/--since: expected/);
  });
});
