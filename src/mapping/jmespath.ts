/**
 * JMESPath for MedTech CalculatedContent templates, with MedTech's custom
 * functions (add, divide, multiply, pow, subtract, insertString,
 * fromUnixTimestamp, fromUnixTimestampMs) as its documentation defines them.
 *
 * The JMESPath library keeps custom functions in one registry per process;
 * registering is idempotent, so importing this module is enough.
 */
import * as jmespath from '@jmespath-community/jmespath';
import type { JSONValue } from '@jmespath-community/jmespath';

type Fn = (args: unknown[]) => JSONValue;

function num(v: unknown, fn: string, arg: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new Error(`${fn}(): ${arg} must be a number`);
  }
  return v;
}

function finite(result: number, fn: string): number {
  // MedTech: "the end result must fit within a C# long", else a mathematical error.
  if (!Number.isFinite(result)) throw new Error(`${fn}(): mathematical error (overflow)`);
  return result;
}

/** "2021-07-07T17:00:00+0" — the form MedTech's documentation shows. */
function medtechIso(ms: number, fn: string): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) throw new Error(`${fn}(): timestamp out of range`);
  const iso = d.toISOString();
  const fraction = d.getUTCMilliseconds() === 0 ? '' : iso.slice(19, 23);
  return `${iso.slice(0, 19)}${fraction}+0`;
}

const NUMBER = [{ types: [jmespath.TYPE_NUMBER] }, { types: [jmespath.TYPE_NUMBER] }];

const FUNCTIONS: readonly [string, Fn, typeof NUMBER][] = [
  ['add', ([l, r]) => finite(num(l, 'add', 'left') + num(r, 'add', 'right'), 'add'), NUMBER],
  [
    'subtract',
    ([l, r]) => finite(num(l, 'subtract', 'left') - num(r, 'subtract', 'right'), 'subtract'),
    NUMBER,
  ],
  [
    'multiply',
    ([l, r]) => finite(num(l, 'multiply', 'left') * num(r, 'multiply', 'right'), 'multiply'),
    NUMBER,
  ],
  [
    'divide',
    ([l, r]) => {
      const right = num(r, 'divide', 'right');
      if (right === 0) throw new Error('divide(): mathematical error (divide by zero)');
      return finite(num(l, 'divide', 'left') / right, 'divide');
    },
    NUMBER,
  ],
  ['pow', ([l, r]) => finite(num(l, 'pow', 'left') ** num(r, 'pow', 'right'), 'pow'), NUMBER],
  [
    'insertString',
    ([original, toInsert, pos]) => {
      const s = String(original);
      const p = num(pos, 'insertString', 'pos');
      if (!Number.isInteger(p) || p < 0 || p > s.length) {
        throw new Error('insertString(): position out of range');
      }
      return s.slice(0, p) + String(toInsert) + s.slice(p);
    },
    [
      { types: [jmespath.TYPE_STRING] },
      { types: [jmespath.TYPE_STRING] },
      { types: [jmespath.TYPE_NUMBER] },
    ],
  ],
  [
    'fromUnixTimestamp',
    ([s]) => medtechIso(num(s, 'fromUnixTimestamp', 'seconds') * 1000, 'fromUnixTimestamp'),
    [{ types: [jmespath.TYPE_NUMBER] }],
  ],
  [
    'fromUnixTimestampMs',
    ([ms]) => medtechIso(num(ms, 'fromUnixTimestampMs', 'milliseconds'), 'fromUnixTimestampMs'),
    [{ types: [jmespath.TYPE_NUMBER] }],
  ],
];

for (const [name, fn, signature] of FUNCTIONS) {
  jmespath.register(name, fn, signature, { override: true });
}

/** The custom functions a MedTech JMESPath expression may call. */
export const MEDTECH_FUNCTIONS: readonly string[] = FUNCTIONS.map(([name]) => name);

/**
 * JmesPath.Net (MedTech's engine) reads an invalid JSON literal between
 * backticks as a string (`` `heartRate` ``), as early JMESPath did; the
 * specification needs `` `"heartRate"` ``. Rewrites such literals.
 */
export function rewriteLegacyLiterals(source: string): string {
  return source.replace(/`((?:[^`\\]|\\.)*)`/g, (whole, body: string) => {
    try {
      JSON.parse(body);
      return whole;
    } catch {
      return '`' + JSON.stringify(body.trim()) + '`';
    }
  });
}

export interface JmesPathQuery {
  evaluate(input: unknown): unknown;
}

function unknownFunctions(node: unknown, out: Set<string>): void {
  if (Array.isArray(node)) {
    for (const n of node) unknownFunctions(n, out);
    return;
  }
  if (typeof node !== 'object' || node === null) return;
  const n = node as { type?: unknown; name?: unknown };
  if (n.type === 'Function' && typeof n.name === 'string' && !jmespath.isRegistered(n.name)) {
    out.add(n.name);
  }
  for (const v of Object.values(node)) unknownFunctions(v, out);
}

export function compileJmesPath(
  source: string,
): { ok: true; query: JmesPathQuery } | { ok: false; error: { message: string } } {
  let ast: ReturnType<typeof jmespath.compile>;
  try {
    ast = jmespath.compile(rewriteLegacyLiterals(source));
  } catch (err) {
    return { ok: false, error: { message: (err as Error).message } };
  }
  const unknown = new Set<string>();
  unknownFunctions(ast, unknown);
  if (unknown.size > 0) {
    return {
      ok: false,
      error: { message: `unknown function(s): ${[...unknown].map((f) => `${f}()`).join(', ')}` },
    };
  }
  return {
    ok: true,
    query: {
      evaluate: (input) => {
        const result = jmespath.TreeInterpreter.search(ast, input as JSONValue);
        return result === null ? undefined : result;
      },
    },
  };
}
