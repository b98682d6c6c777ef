/**
 * The expression languages: JSONata (with direct reads for plain paths),
 * JSONPath with MedTech's Json.NET habits, JMESPath with MedTech's custom
 * functions (every example of the documentation's tables), and time parsing.
 */
import { describe, expect, it } from 'vitest';
import { compileExpression, type Bindings } from '../../src/mapping/expressions.js';
import { parseTimestamp } from '../../src/mapping/index.js';

const b: Bindings = {
  msg: {},
  meta: { deviceId: 'd-1', topic: 'devices/d-1/telemetry', receivedAt: 0 },
};

function compile(value: string, language: 'jsonata' | 'jsonpath' | 'jmespath' = 'jsonata') {
  const r = compileExpression({ value, language });
  if (!r.ok) throw new Error(`${value}: ${r.error.message}`);
  return r.expression;
}

describe('JSONata', () => {
  const body = { a: { b: 7 }, list: [{ v: 1 }, { v: 2 }], flag: false };

  it('reads plain paths directly, with the same answers as the interpreter', async () => {
    for (const [src, want] of [
      ['a.b', 7],
      ['a.missing', undefined],
      ['$exists(a.b)', true],
      ['$exists(nothing)', false],
      ['flag', false],
    ] as const) {
      const e = compile(src);
      expect(e.fast, src).toBe(true);
      expect(await e.evaluate(body, b), src).toEqual(want);
      // The same expression written so that the fast path cannot apply:
      expect(await compile(`(${src})`).evaluate(body, b), src).toEqual(want);
    }
  });

  it('decides discriminators directly, agreeing with the interpreter on every input', async () => {
    const expressions = [
      'kind = "bp-cuff" and $exists(systolic)',
      'kind = "pulse-oximeter" ? readings[$exists(spo2)]',
      'kind != "x" or flag',
      'kind = "a" ? "yes" : "no"',
      'a.b = 7',
      'flag and kind = "a"',
    ];
    const inputs: unknown[] = [
      {},
      { kind: 'bp-cuff', systolic: 120 },
      { kind: 'bp-cuff' },
      { kind: 'pulse-oximeter', readings: [{ spo2: 97 }, { pulse: 60 }] },
      { kind: 'a', flag: true, a: { b: 7 } },
      { kind: 'a', flag: 'text' },
      { kind: ['a'], a: [{ b: 7 }] },
      [{ kind: 'a' }],
      { kind: null, flag: false },
    ];
    for (const src of expressions) {
      const direct = compile(src);
      const interpreted = compile(`(${src})`);
      expect(interpreted.fast).toBe(false);
      for (const input of inputs) {
        const want = await interpreted.evaluate(input, b);
        const got = await direct.evaluate(input, b);
        expect(JSON.stringify(got), `${src} on ${JSON.stringify(input)}`).toBe(
          JSON.stringify(want),
        );
      }
    }
    expect(compile('kind = "bp-cuff" and $exists(systolic)').fast).toBe(true);
    // The branch needs the interpreter; a false condition does not.
    expect(compile('kind = "pulse-oximeter" ? readings[$exists(spo2)]').fast).toBe(false);
  });

  it('falls back to the interpreter when a path crosses an array (JSONata maps over it)', async () => {
    const e = compile('list.v');
    expect(e.fast).toBe(true);
    expect(Array.from((await e.evaluate(body, b)) as number[])).toEqual([1, 2]);
  });

  it('selects: true → the input, an array → each element, nothing → no match', async () => {
    expect(await compile('$exists(a)').select(body, b)).toEqual([body]);
    expect(await compile('list').select(body, b)).toEqual(body.list);
    expect(await compile('list[v > 1]').select(body, b)).toEqual([{ v: 2 }]);
    expect(await compile('nothing').select(body, b)).toEqual([]);
  });

  it('binds $meta and $msg', async () => {
    expect(await compile('$meta.deviceId').evaluate({}, b)).toBe('d-1');
  });

  it('reports a syntax error with its position inside the expression', () => {
    const r = compileExpression({ value: 'a ++ b', language: 'jsonata' });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.position).toBe(3);
  });
});

describe('JSONPath (MedTech / Json.NET semantics)', () => {
  const envelope = {
    Body: { heartRate: '78', deviceId: 'x' },
    SystemProperties: { 'iothub-connection-device-id': 'd-1' },
  };

  it('reads `@heartRate` as `@.heartRate`, and `$..[?()]` tests the root too', () => {
    expect(compile('$..[?(@heartRate)]', 'jsonpath').select(envelope, b)).toEqual([envelope.Body]);
    expect(compile('$..[?(@Body.heartRate)]', 'jsonpath').select(envelope, b)).toEqual([envelope]);
  });

  it('reads hyphenated members with dot notation, directly', () => {
    const e = compile('$.SystemProperties.iothub-connection-device-id', 'jsonpath');
    expect(e.fast).toBe(true);
    expect(e.evaluate(envelope, b)).toBe('d-1');
  });

  it('a filter on a missing member is no match, not an error', () => {
    expect(compile('$..[?(@.a.b.c)]', 'jsonpath').select(envelope, b)).toEqual([]);
  });

  it('refuses several values where one is expected (as SelectToken does)', () => {
    const e = compile('$..heartRate', 'jsonpath');
    expect(() => e.evaluate({ a: { heartRate: 1 }, b: { heartRate: 2 } }, b)).toThrow(/2 values/);
  });

  it('reports unbalanced brackets and filter syntax errors with positions', () => {
    const r1 = compileExpression({ value: '$..[?(@.a', language: 'jsonpath' });
    expect(r1.ok).toBe(false);
    if (!r1.ok) expect(r1.error.position).toBe(5); // the "(" never closed
    const r2 = compileExpression({ value: '$..[?(@.a ==)]', language: 'jsonpath' });
    expect(r2.ok).toBe(false);
    if (!r2.ok) expect(r2.error.message).toMatch(/Expected expression after ==/);
  });
});

describe('JMESPath with MedTech custom functions', () => {
  // The examples of how-to-use-custom-functions.md, table by table.
  const cases: [unknown, string, unknown][] = [
    [null, 'add(`10`, `10`)', 20],
    [{ left: 40, right: 50 }, 'add(left, right)', 90],
    [{ left: 0, right: 50 }, 'add(left, right)', 50],
    [null, 'divide(`10`, `10`)', 1],
    [{ left: 40, right: 50 }, 'divide(left, right)', 0.8],
    [{ left: 0, right: 50 }, 'divide(left, right)', 0],
    [null, 'multiply(`10`, `10`)', 100],
    [{ left: 40, right: 50 }, 'multiply(left, right)', 2000],
    [{ left: 0, right: 50 }, 'multiply(left, right)', 0],
    [null, 'pow(`10`, `10`)', 10000000000],
    [{ left: 0, right: 50 }, 'pow(left, right)', 0],
    [{ left: 100, right: 0.5 }, 'pow(left, right)', 10],
    [null, 'subtract(`10`, `10`)', 0],
    [{ left: 40, right: 50 }, 'subtract(left, right)', -10],
    [{ left: 0, right: 50 }, 'subtract(left, right)', -50],
    [
      { original: 'mple', toInsert: 'sa', pos: 0 },
      'insertString(original, toInsert, pos)',
      'sample',
    ],
    [
      { original: 'suess', toInsert: 'cc', pos: 2 },
      'insertString(original, toInsert, pos)',
      'success',
    ],
    [
      { original: 'myString', toInsert: '!!', pos: 8 },
      'insertString(original, toInsert, pos)',
      'myString!!',
    ],
    [
      { original: 'myString', toInsert: '!!' },
      'insertString(original, toInsert, length(original))',
      'myString!!',
    ],
    [{ unix: 1625677200 }, 'fromUnixTimestamp(unix)', '2021-07-07T17:00:00+0'],
    [{ unix: 0 }, 'fromUnixTimestamp(unix)', '1970-01-01T00:00:00+0'],
    [{ unix: 1626799080000 }, 'fromUnixTimestampMs(unix)', '2021-07-20T16:38:00+0'],
    [{ unix: 0 }, 'fromUnixTimestampMs(unix)', '1970-01-01T00:00:00+0'],
  ];
  it.each(cases)('given %j, %s = %j', (given, expression, result) => {
    expect(compile(expression, 'jmespath').evaluate(given, b)).toEqual(result);
  });

  it.each([
    [{ left: 50, right: 0 }, 'divide(left, right)', /divide by zero/],
    [{ left: 40, right: 5000 }, 'pow(left, right)', /overflow/],
    [
      { original: 'myString', toInsert: '!!', pos: 100 },
      'insertString(original, toInsert, pos)',
      /out of range/,
    ],
    [
      { original: 'myString', toInsert: '!!', pos: -1 },
      'insertString(original, toInsert, pos)',
      /out of range/,
    ],
  ])('given %j, %s is an error', (given, expression, error) => {
    expect(() => compile(expression, 'jmespath').evaluate(given, b)).toThrow(error);
  });

  it('MedTech timestamps ("+0") read as times', () => {
    const t = compile('fromUnixTimestamp(unix)', 'jmespath').evaluate({ unix: 1625677200 }, b);
    expect(parseTimestamp(t, { zoneOptional: true })).toBe('2021-07-07T17:00:00.000Z');
  });

  it('refuses an unknown function at load time', () => {
    const r = compileExpression({ value: 'nosuch(`1`)', language: 'jmespath' });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toBe('unknown function(s): nosuch()');
  });
});

describe('device time', () => {
  it('ours: ISO 8601 with a zone, or epoch ms; a time without a zone is ambiguous', () => {
    expect(parseTimestamp('2026-11-26T10:00:00+01:00')).toBe('2026-11-26T09:00:00.000Z');
    expect(parseTimestamp(Date.UTC(2026, 10, 26, 9))).toBe('2026-11-26T09:00:00.000Z');
    expect(parseTimestamp('2026-11-26T09:00:00')).toBeUndefined();
    expect(parseTimestamp('2026-02-30T09:00:00Z')).toBeUndefined();
    expect(parseTimestamp('2026-11-26T24:00:00Z')).toBeUndefined();
    expect(parseTimestamp('yesterday')).toBeUndefined();
  });

  it('MedTech templates: no zone is UTC, 7-digit fractions are cut to ms', () => {
    expect(parseTimestamp('2023-03-13T22:46:01.8750000', { zoneOptional: true })).toBe(
      '2023-03-13T22:46:01.875Z',
    );
    expect(parseTimestamp('2021-07-07T17:00:00+0', { zoneOptional: true })).toBe(
      '2021-07-07T17:00:00.000Z',
    );
  });
});
