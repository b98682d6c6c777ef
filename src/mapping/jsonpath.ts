/**
 * JSONPath for MedTech templates (JsonPathContent, IotJsonPathContent,
 * IotCentralJsonPathContent, CalculatedContent). MedTech resolved JSONPath with
 * Json.NET; we use JSONPath-Plus and close the gaps that MedTech's published
 * templates rely on:
 *  - `@heartRate` in a filter (Json.NET reads it as `@.heartRate`) is rewritten;
 *  - `$..[?(…)]` tests the root itself too (Json.NET's scan filter walks
 *    DescendantsAndSelf), so the document is wrapped in an array first;
 *  - a filter reading a missing member is "no match", not an error.
 * Plain member paths (`$.Body.heartRate`) are read directly, without the
 * JSONPath engine.
 */
import { JSONPath } from 'jsonpath-plus';

export interface JsonPathQuery {
  /** The expression as JSONPath-Plus reads it (after MedTech rewriting). */
  readonly path: string;
  /** Every match, in document order. */
  select(input: unknown): unknown[];
  /** True when the expression is a plain member path read without the engine. */
  readonly fast: boolean;
}

export interface JsonPathError {
  readonly message: string;
  /** 0-based offset inside the original expression, when known. */
  readonly position?: number;
}

/** Rewrites `@name` → `@.name` outside quoted strings (Json.NET accepts both). */
export function rewriteMedTechJsonPath(source: string): string {
  let out = '';
  let quote: string | undefined;
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (quote) {
      if (c === quote && source[i - 1] !== '\\') quote = undefined;
      out += c;
      continue;
    }
    if (c === "'" || c === '"') quote = c;
    out += c;
    if (c === '@' && /[A-Za-z_$]/.test(source[i + 1] ?? '')) out += '.';
  }
  return out;
}

/** `$.a.b`, `$['a-b'].c`, `$.a-b` (Json.NET accepts hyphens in dot notation). */
const PLAIN_PATH = /^\$((\.[A-Za-z_][\w-]*)|(\['[^'\\]*'\]))+$/;
const STEP = /\.([A-Za-z_][\w-]*)|\['([^'\\]*)'\]/g;

function plainSteps(path: string): string[] | undefined {
  if (!PLAIN_PATH.test(path)) return undefined;
  return [...path.slice(1).matchAll(STEP)].map((m) => m[1] ?? m[2] ?? '');
}

function readPlain(input: unknown, steps: readonly string[]): unknown[] {
  let cur: unknown = input;
  for (const key of steps) {
    if (typeof cur !== 'object' || cur === null || Array.isArray(cur)) return [];
    if (!Object.hasOwn(cur, key)) return [];
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur === undefined ? [] : [cur];
}

function balanced(source: string): JsonPathError | undefined {
  const stack: { c: string; at: number }[] = [];
  const pairs: Record<string, string> = { ']': '[', ')': '(' };
  let quote: string | undefined;
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (quote) {
      if (c === quote && source[i - 1] !== '\\') quote = undefined;
      continue;
    }
    if (c === "'" || c === '"') quote = c;
    else if (c === '[' || c === '(') stack.push({ c, at: i });
    else if (c === ']' || c === ')') {
      const open = stack.pop();
      if (open?.c !== pairs[c]) return { message: `unexpected "${c}"`, position: i };
    }
  }
  if (quote) return { message: 'unterminated string', position: source.length - 1 };
  const open = stack.pop();
  if (open) return { message: `"${open.c}" is never closed`, position: open.at };
  return undefined;
}

function run(path: string, json: unknown): unknown[] {
  return JSONPath<unknown[]>({
    path,
    json: json as object,
    wrap: true,
    // The engine's own safe evaluator: no JavaScript `eval` of template text.
    eval: 'safe',
    ignoreEvalErrors: true,
  });
}

/** Compiles (checks) a JSONPath expression once; every problem with its position. */
export function compileJsonPath(
  source: string,
): { ok: true; query: JsonPathQuery } | { ok: false; error: JsonPathError } {
  const trimmed = source.trim();
  if (!trimmed.startsWith('$') && !trimmed.startsWith('@')) {
    return { ok: false, error: { message: 'a JSONPath expression starts with "$"', position: 0 } };
  }
  const unbalanced = balanced(trimmed);
  if (unbalanced) return { ok: false, error: unbalanced };
  const path = rewriteMedTechJsonPath(trimmed).replace(/^@/, '$');
  const steps = plainSteps(path);
  if (steps) return { ok: true, query: { path, fast: true, select: (i) => readPlain(i, steps) } };
  // Json.NET's `$..[?(…)]` walks DescendantsAndSelf: wrapping lets the root match too.
  const wrapRoot = path.startsWith('$..[');
  const select = (input: unknown) => run(path, wrapRoot ? [input] : input);
  // Filter scripts are parsed when first applied: apply once to a probe to
  // surface syntax errors now, at load time, not on the first message.
  try {
    select({ probe: [{}] });
  } catch (err) {
    const message = (err as Error).message.replace(/^jsonPath: /, '');
    const at = /at character (\d+)/.exec(message);
    const scriptStart = trimmed.indexOf('?(');
    const position = at && scriptStart >= 0 ? scriptStart + 2 + Number(at[1]) : undefined;
    return {
      ok: false,
      error: { message, ...(position !== undefined ? { position } : {}) },
    };
  }
  return { ok: true, query: { path, fast: false, select } };
}
