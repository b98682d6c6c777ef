/**
 * One interface over the three expression languages, compiled once per
 * template version. JSONata is the default; JSONPath and JMESPath serve
 * MedTech's templates. Plain member paths (`heartRate`, `bloodPressure.systolic`,
 * `$exists(spo2)`, `$.Body.heartRate`) and simple discriminators
 * (`kind = "bp-cuff" and …`) are read directly (jsonata-fast.ts, jsonpath.ts):
 * the interpreter's cost is paid only by expressions, and inputs, that need it.
 */
import jsonata from 'jsonata';
import { compileJmesPath } from './jmespath.js';
import { FALLBACK, planFastRead } from './jsonata-fast.js';
import { compileJsonPath } from './jsonpath.js';
import type { ExpressionLanguage, ExpressionSpec, MessageMeta } from './types.js';

/** Bound in JSONata as `$msg` (the whole body) and `$meta`. */
export interface Bindings {
  readonly msg: unknown;
  readonly meta: MessageMeta;
}

export interface CompiledExpression {
  readonly language: ExpressionLanguage;
  readonly source: string;
  /** Read without the language's interpreter (a plain member path). */
  readonly fast: boolean;
  /**
   * The expression's value. JSONata: its result (a sequence is an array);
   * JSONPath: the single match (several matches are an error); JMESPath: its
   * result (null is "nothing").
   */
  evaluate(input: unknown, bindings: Bindings): unknown;
  /**
   * What a match expression selects, as contexts to map. JSONata: `true` is the
   * input itself, an array is each element; JSONPath: every match; JMESPath:
   * an array result is each element.
   */
  select(input: unknown, bindings: Bindings): unknown;
}

export interface ExpressionError {
  readonly message: string;
  /** 0-based offset inside the expression, when the language reports one. */
  readonly position?: number;
}

export type ExpressionResult =
  | { readonly ok: true; readonly expression: CompiledExpression }
  | { readonly ok: false; readonly error: ExpressionError };

function jsonataSelect(value: unknown, input: unknown): unknown[] {
  if (value === undefined || value === null || value === false) return [];
  if (value === true) return [input];
  if (Array.isArray(value)) return value.filter((s) => s !== undefined && s !== null);
  return [value];
}

function compileJsonata(source: string): ExpressionResult {
  let expr: ReturnType<typeof jsonata>;
  try {
    expr = jsonata(source);
  } catch (err) {
    const e = err as { message?: string; position?: number };
    return {
      ok: false,
      error: {
        message: e.message ?? String(err),
        // JSONata reports the 1-based end of the offending token.
        ...(typeof e.position === 'number'
          ? { position: Math.max(0, Math.min(e.position - 1, source.length - 1)) }
          : {}),
      },
    };
  }
  const interpret = (input: unknown, b: Bindings): Promise<unknown> =>
    expr.evaluate(input, { msg: b.msg, meta: b.meta }) as Promise<unknown>;

  const plan = planFastRead(expr.ast());
  if (!plan) {
    return {
      ok: true,
      expression: {
        language: 'jsonata',
        source,
        fast: false,
        evaluate: interpret,
        select: async (input, b) => jsonataSelect(await interpret(input, b), input),
      },
    };
  }
  const read = plan.read;
  const evaluate = (input: unknown, b: Bindings): unknown => {
    const v = read(input);
    return v === FALLBACK ? interpret(input, b) : v;
  };
  return {
    ok: true,
    expression: {
      language: 'jsonata',
      source,
      fast: plan.complete,
      evaluate,
      select: (input, b) => {
        const v = read(input);
        return v === FALLBACK
          ? interpret(input, b).then((r) => jsonataSelect(r, input))
          : jsonataSelect(v, input);
      },
    },
  };
}

export function compileExpression(spec: ExpressionSpec): ExpressionResult {
  const source = spec.value;
  if (spec.language === 'jsonata') return compileJsonata(source);
  if (spec.language === 'jsonpath') {
    const r = compileJsonPath(source);
    if (!r.ok) return r;
    const q = r.query;
    return {
      ok: true,
      expression: {
        language: 'jsonpath',
        source,
        fast: q.fast,
        evaluate: (input) => {
          const matches = q.select(input);
          if (matches.length > 1) {
            // Json.NET's SelectToken refuses several matches for one value, as we do.
            throw new Error(
              `JSONPath ${source} selected ${matches.length} values; one is expected`,
            );
          }
          return matches[0];
        },
        select: (input) => q.select(input).filter((m) => m !== undefined && m !== null),
      },
    };
  }
  const r = compileJmesPath(source);
  if (!r.ok) return r;
  const q = r.query;
  return {
    ok: true,
    expression: {
      language: 'jmespath',
      source,
      fast: false,
      evaluate: (input) => q.evaluate(input),
      select: (input): unknown[] => {
        const v = q.evaluate(input);
        if (v === undefined || v === null || v === false) return [];
        return Array.isArray(v)
          ? (v as unknown[]).filter((x) => x !== null && x !== undefined)
          : [v];
      },
    },
  };
}
