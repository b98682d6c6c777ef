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

/**
 * MedTech's number semantics (Microsoft.Health.Expressions): when both
 * arguments are JSON integers the arithmetic is C# `long` — a result outside a
 * long is a mathematical error (MedTech's documentation), pow is rounded to a
 * long (pow(40, 50) overflows) — and otherwise `double`. JSON.parse keeps no
 * "40.0" / "40" distinction, so an integer here is a number without a
 * fraction (docs/mappings.md lists the differences).
 */
/** ±2^63: a C# long's range as a double (long.MaxValue reads as 2^63 in JSON here). */
const LONG_LIMIT = 2 ** 63;

function isLong(v: number): boolean {
  return Number.isInteger(v) && Math.abs(v) <= LONG_LIMIT;
}

function long(result: number, fn: string): number {
  // C# would wrap silently (unchecked long); a wrapped reading is a wrong one, so
  // here it is MedTech's documented "mathematical error" instead.
  if (!Number.isFinite(result) || Math.abs(result) > LONG_LIMIT)
    throw new Error(`${fn}(): mathematical error (overflow)`);
  return result === 0 ? 0 : result; // a long has no -0
}

/** Convert.ToInt64(double): to the nearest long, halves to even; out of range is OverflowException. */
function toLong(x: number, fn: string): number {
  if (!Number.isFinite(x) || Math.abs(x) > LONG_LIMIT)
    throw new Error(`${fn}(): mathematical error (overflow)`);
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

function arithmetic(fn: string, op: (l: number, r: number) => number): Fn {
  return ([a, b]) => {
    const l = num(a, fn, 'left');
    const r = num(b, fn, 'right');
    return isLong(l) && isLong(r) ? long(op(l, r), fn) : finite(op(l, r), fn);
  };
}

/** "2021-07-07T17:00:00+0" — the form MedTech's documentation shows. */
function medtechIso(ms: number, fn: string): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) throw new Error(`${fn}(): timestamp out of range`);
  const iso = d.toISOString();
  const fraction = d.getUTCMilliseconds() === 0 ? '' : iso.slice(19, 23);
  return `${iso.slice(0, 19)}${fraction}+0`;
}

function integer(v: unknown, fn: string, arg: string): number {
  const n = num(v, fn, arg);
  if (!Number.isInteger(n)) throw new Error(`${fn}(): ${arg} must be an integer`);
  return n;
}

const NUMBER = [{ types: [jmespath.TYPE_NUMBER] }, { types: [jmespath.TYPE_NUMBER] }];

const FUNCTIONS: readonly [string, Fn, typeof NUMBER][] = [
  ['add', arithmetic('add', (l, r) => l + r), NUMBER],
  ['subtract', arithmetic('subtract', (l, r) => l - r), NUMBER],
  ['multiply', arithmetic('multiply', (l, r) => l * r), NUMBER],
  [
    'divide',
    ([a, b]) => {
      const l = num(a, 'divide', 'left');
      const r = num(b, 'divide', 'right');
      // C#: a long divided by 0 is DivideByZeroException; a double by 0.0 is
      // Infinity, which MedTech then failed to write. Both are errors here.
      if (r === 0) throw new Error('divide(): mathematical error (divide by zero)');
      // MedTech's code divides two JSON integers as longs (40 / 50 → 0); its
      // documentation shows 0.8. JSON here keeps no 40.0 apart from 40, so a
      // template could not ask for exact division: divide is exact, as
      // documented (docs/mappings.md; the import report flags each use).
      return isLong(l) && isLong(r) ? long(l / r, 'divide') : finite(l / r, 'divide');
    },
    NUMBER,
  ],
  [
    'pow',
    ([a, b]) => {
      const l = num(a, 'pow', 'left');
      const r = num(b, 'pow', 'right');
      // C#: Convert.ToInt64(Math.Pow(long, long)) — pow(40, 50) is OverflowException.
      if (isLong(l) && isLong(r)) return toLong(l ** r, 'pow');
      return finite(l ** r, 'pow');
    },
    NUMBER,
  ],
  [
    'insertString',
    ([original, toInsert, pos]) => {
      const s = String(original);
      const p = integer(pos, 'insertString', 'pos');
      if (p < 0 || p > s.length) {
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
    ([s]) => medtechIso(integer(s, 'fromUnixTimestamp', 'seconds') * 1000, 'fromUnixTimestamp'),
    [{ types: [jmespath.TYPE_NUMBER] }],
  ],
  [
    'fromUnixTimestampMs',
    ([ms]) => medtechIso(integer(ms, 'fromUnixTimestampMs', 'milliseconds'), 'fromUnixTimestampMs'),
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
