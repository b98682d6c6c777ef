/**
 * The JSON text scanner (src/json-text.ts): it refuses exactly what JSON.parse
 * refuses (checked against JSON.parse on a corpus and on thousands of mutated
 * payloads), plus what we refuse on top (duplicate names, depth, array length),
 * and its words name a kind and a position, never the payload.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { PipelineError } from '../../src/errors.js';
import { describeJsonProblem, scanJson } from '../../src/json-text.js';
import { parsePayload } from '../../src/mapping/index.js';
import { checkJsonShape } from '../../workers/input-policy.js';

const MARKER = 'MRN-99812';

function parses(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CORPUS = [
  '{}',
  '[]',
  '0',
  '-0.5e+10',
  '"a\\u00e9\\n"',
  'true',
  ' null ',
  '{"a":[1,2,{"b":"[[[[["}],"c":"\\"]"}',
  '{"timestamp":"2026-01-01T00:00:00Z","heartRate":72,"x":[1.5,-2,3e-2,{"y":null}]}',
  '',
  ' ',
  '{',
  '{"a"',
  '{"a":',
  '{"a":1,}',
  '[1,]',
  '[,1]',
  '{"a" 1}',
  '{a:1}',
  "{'a':1}",
  '01',
  '1.',
  '.5',
  '-',
  '1e',
  '+1',
  'NaN',
  'Infinity',
  'tru',
  'nul',
  'truex',
  '"abc',
  '"a\\x"',
  '"a\\u12"',
  '"tab\there"',
  '{"heartRate": 72,,}',
  '[1] 2',
  '\ufeff{}',
  '{"a":1}}',
];

const SEEDS = [
  '{"timestamp":"2026-01-01T00:00:00Z","heartRate":72,"bp":{"systolic":120,"diastolic":80}}',
  '[{"t":1,"v":[1,2,3]},{"t":2,"v":[-1.5e3,0,"x\\"y"]},null,true,false]',
  '{"a":{"b":{"c":[[],{}]}},"s":"\\u0041\\\\\\/"}',
];
const ALPHABET = '{}[]:,"\\-+.0123456789eEtrufalsn \t\nxu';

describe('scanJson agrees with JSON.parse', () => {
  it('on a corpus of valid and invalid texts', () => {
    for (const text of CORPUS) {
      expect(scanJson(text, { uniqueNames: false }) === undefined, JSON.stringify(text)).toBe(
        parses(text),
      );
    }
  });

  it('on 20 000 mutations of valid payloads (insert, delete, replace, truncate)', () => {
    const next = random(20260601);
    let invalid = 0;
    for (let k = 0; k < 20_000; k++) {
      let text = SEEDS[k % SEEDS.length]!;
      for (let m = 0; m <= Math.floor(next() * 3); m++) {
        const at = Math.floor(next() * (text.length + 1));
        const ch = ALPHABET[Math.floor(next() * ALPHABET.length)]!;
        const op = Math.floor(next() * 4);
        text =
          op === 0
            ? text.slice(0, at) + ch + text.slice(at)
            : op === 1
              ? text.slice(0, at) + text.slice(at + 1)
              : op === 2
                ? text.slice(0, at) + ch + text.slice(at + 1)
                : text.slice(0, at);
      }
      const ok = parses(text);
      if (!ok) invalid++;
      expect(scanJson(text, { uniqueNames: false }) === undefined, JSON.stringify(text)).toBe(ok);
    }
    expect(invalid).toBeGreaterThan(5000); // the mutations really produce broken texts
  });
});

describe('scanJson positions and kinds', () => {
  it('points at the first offending character, with line and column', () => {
    expect(scanJson('{"a": MRN-99812}')).toMatchObject({
      kind: 'unexpected-character',
      offset: 6,
      line: 1,
      column: 7,
    });
    expect(scanJson('{\n  "a": 1,\n  "b": x\n}')).toMatchObject({ line: 3, column: 8 });
    expect(scanJson('{"a": "MRN')).toMatchObject({ kind: 'unexpected-end', offset: 10 });
    expect(scanJson('\ufeff{}')).toMatchObject({ kind: 'byte-order-mark', offset: 0 });
    expect(scanJson('[1] 2')).toMatchObject({ kind: 'trailing-characters', offset: 4 });
    expect(scanJson('"a\\qb"')).toMatchObject({ kind: 'invalid-escape', offset: 2 });
    expect(scanJson('01')).toMatchObject({ kind: 'trailing-characters', offset: 1 }); // "0", then "1"
    expect(scanJson('[01]')).toMatchObject({ kind: 'unexpected-character', offset: 2 });
    expect(scanJson('[1.]')).toMatchObject({ kind: 'invalid-number', offset: 1 });
  });

  it('finds a member named twice, escaped names included, but not the same name in two objects', () => {
    expect(scanJson('{"hr":70,"hr":71}')).toMatchObject({ kind: 'duplicate-name', offset: 9 });
    expect(scanJson('{"hr":70,"\\u0068r":71}')).toMatchObject({ kind: 'duplicate-name' });
    expect(scanJson('{"a":{"hr":1},"b":{"hr":2},"c":[{"hr":3},{"hr":4}]}')).toBeUndefined();
    expect(scanJson('{"__proto__":1,"__proto__":2}')).toMatchObject({ kind: 'duplicate-name' });
    expect(scanJson('{"hr":70,"hr":71}', { uniqueNames: false })).toBeUndefined();
  });

  it('stops at the depth and array limits, without recursion', () => {
    const deep = '['.repeat(200_000) + ']'.repeat(200_000);
    expect(scanJson(deep, { maxDepth: 32 })).toMatchObject({ kind: 'too-deep', offset: 32 });
    expect(scanJson(deep)).toBeUndefined(); // 200 000 levels: no stack overflow
    expect(scanJson('[1,2,3]', { maxArrayLength: 3 })).toBeUndefined();
    expect(scanJson('[1,2,3,4]', { maxArrayLength: 3 })).toMatchObject({
      kind: 'array-too-long',
      offset: 6,
    });
  });
});

describe('reasons never quote the payload', () => {
  const limits = loadConfig({}).input;
  const bad = [
    `{"mrn": ${MARKER}}`,
    `{"mrn": "${MARKER}`,
    `{"${MARKER}": 1, "${MARKER}": 2}`,
    `{"mrn": "${MARKER}"} ${MARKER}`,
    `{"mrn": "${MARKER}\\q"}`,
    `{"mrn": "${MARKER}\u0001"}`,
    `${'['.repeat(40)}"${MARKER}"${']'.repeat(40)}`,
    `[${'"MRN-99812",'.repeat(10_001)}1]`,
  ];

  it('in checkJsonShape (InvalidPayload, with line and column)', () => {
    for (const text of bad) {
      let error: PipelineError | undefined;
      try {
        checkJsonShape(text, limits);
      } catch (err) {
        error = err as PipelineError;
      }
      expect(error?.code, text.slice(0, 40)).toBe('InvalidPayload');
      expect(error?.message).toMatch(/line \d+, column \d+/);
      expect(error?.message).not.toContain(MARKER);
    }
  });

  it('in parsePayload, whose JSON.parse message would have quoted it', () => {
    for (const text of bad.slice(0, 2)) {
      let error: PipelineError | undefined;
      try {
        parsePayload(text);
      } catch (err) {
        error = err as PipelineError;
      }
      expect(error?.code).toBe('InvalidPayload');
      expect(error?.message).toMatch(/^the payload is not valid JSON: /);
      expect(error?.message).not.toContain(MARKER);
      expect(error?.cause).toBeUndefined();
    }
  });

  it('describes every kind in our own words', () => {
    expect(
      describeJsonProblem({ kind: 'unexpected-character', offset: 8, line: 1, column: 9 }),
    ).toBe('the payload is not valid JSON: an unexpected character at line 1, column 9');
  });
});
