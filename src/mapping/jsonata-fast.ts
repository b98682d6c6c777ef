/**
 * Reads the simplest JSONata expressions without the interpreter. Every
 * template is evaluated against every message, so most evaluations are a
 * member read (`heartRate`), an existence test (`$exists(spo2)`) or a
 * discriminator that says "not mine" (`kind = "bp-cuff" and …`,
 * `kind = "pulse-oximeter" ? readings[…]`). JSONata's evaluator is
 * asynchronous and general; for these a few property reads give the same
 * answer.
 *
 * The subset, with JSONata's semantics: member paths over objects, string /
 * number / boolean / null literals, `=` and `!=` between scalars (a missing
 * side is false), `and` / `or` / `? :` on booleans (missing is false), and
 * `$exists(path)`. Anything else — or any value outside the subset at run time
 * (an array on a path, a non-boolean condition) — returns FALLBACK, and the
 * interpreter evaluates the whole expression. A condition whose branch is
 * outside the subset is still decided here when the condition is false.
 */

/** "Ask the interpreter": the expression, on this input, is outside the subset. */
export const FALLBACK: unique symbol = Symbol('fallback');

export type FastRead = (input: unknown) => unknown;

interface Node {
  readonly type: string;
  readonly value?: unknown;
  readonly steps?: readonly Node[];
  readonly lhs?: Node;
  readonly rhs?: Node;
  readonly condition?: Node;
  readonly then?: Node;
  readonly else?: Node;
  readonly procedure?: Node;
  readonly arguments?: readonly Node[];
}

/** Keys a plain `name` step may carry: anything more (stages, predicates, groups) is outside. */
const PLAIN_STEP = new Set(['type', 'value', 'position']);

function isScalar(v: unknown): boolean {
  return v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
}

function walk(input: unknown, names: readonly string[]): unknown {
  let cur = input;
  for (const key of names) {
    if (Array.isArray(cur)) return FALLBACK; // JSONata maps over arrays
    if (typeof cur !== 'object' || cur === null) return undefined;
    if (!Object.hasOwn(cur, key)) return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return Array.isArray(cur) ? FALLBACK : cur;
}

function pathNames(node: Node): string[] | undefined {
  const steps = node.type === 'path' ? node.steps : node.type === 'name' ? [node] : undefined;
  if (!steps || steps.length === 0) return undefined;
  const names: string[] = [];
  for (const s of steps) {
    if (s.type !== 'name' || typeof s.value !== 'string') return undefined;
    if (Object.keys(s).some((k) => !PLAIN_STEP.has(k))) return undefined;
    names.push(s.value);
  }
  return names;
}

/** A boolean in JSONata's sense, or FALLBACK for values whose truth needs $boolean's rules. */
function truth(v: unknown): boolean | typeof FALLBACK {
  if (v === FALLBACK) return FALLBACK;
  if (v === undefined) return false;
  return typeof v === 'boolean' ? v : FALLBACK;
}

/** Compiles `node` into a reader, or undefined when it is outside the subset. */
function compile(node: Node): FastRead | undefined {
  switch (node.type) {
    case 'string':
    case 'number':
    case 'value': {
      const v = node.value;
      return isScalar(v) ? () => v : undefined;
    }
    case 'path':
    case 'name': {
      const names = pathNames(node);
      return names ? (input) => walk(input, names) : undefined;
    }
    case 'function': {
      const args = node.arguments ?? [];
      if (node.procedure?.type !== 'variable' || node.procedure.value !== 'exists')
        return undefined;
      const names = args.length === 1 ? pathNames(args[0]!) : undefined;
      if (!names) return undefined;
      return (input) => {
        const v = walk(input, names);
        return v === FALLBACK ? FALLBACK : v !== undefined;
      };
    }
    case 'binary': {
      const lhs = node.lhs && compile(node.lhs);
      const rhs = node.rhs && compile(node.rhs);
      if (!lhs || !rhs) return undefined;
      if (node.value === '=' || node.value === '!=') {
        const equal = node.value === '=';
        return (input) => {
          const a = lhs(input);
          const b = rhs(input);
          if (a === FALLBACK || b === FALLBACK) return FALLBACK;
          if (a === undefined || b === undefined) return false;
          if (!isScalar(a) || !isScalar(b)) return FALLBACK;
          return (a === b) === equal;
        };
      }
      if (node.value === 'and' || node.value === 'or') {
        const and = node.value === 'and';
        return (input) => {
          const a = truth(lhs(input));
          if (a === FALLBACK) return FALLBACK;
          if (and ? !a : a) return a;
          return truth(rhs(input));
        };
      }
      return undefined;
    }
    case 'condition': {
      const cond = node.condition && compile(node.condition);
      if (!cond) return undefined;
      // A branch outside the subset still lets a false condition be decided here.
      const then = (node.then && compile(node.then)) ?? (() => FALLBACK);
      const otherwise = node.else ? (compile(node.else) ?? (() => FALLBACK)) : () => undefined;
      return (input) => {
        const c = truth(cond(input));
        if (c === FALLBACK) return FALLBACK;
        return c ? then(input) : otherwise(input);
      };
    }
    default:
      return undefined;
  }
}

/** Whether every node is in the subset (a fully direct read, barring arrays at run time). */
function complete(node: Node): boolean {
  if (node.type === 'condition') {
    return [node.condition, node.then, node.else].every((n) => n === undefined || complete(n));
  }
  if (node.type === 'binary') return complete(node.lhs!) && complete(node.rhs!);
  return compile(node) !== undefined;
}

export interface FastPlan {
  readonly read: FastRead;
  /** Every part is read directly (else: only some inputs, e.g. a false discriminator). */
  readonly complete: boolean;
}

/** A direct reader for a JSONata AST (jsonata(src).ast()), or undefined. */
export function planFastRead(ast: unknown): FastPlan | undefined {
  const node = ast as Node;
  const read = compile(node);
  return read ? { read, complete: complete(node) } : undefined;
}
