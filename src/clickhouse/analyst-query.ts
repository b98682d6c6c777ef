/**
 * Analysts' SQL through the admin API, made read-only by the engine's own parser.
 * PURE (the store runs `EXPLAIN AST` and passes the lines in).
 *
 * In embedded mode the engine lives in the pipeline process with its files, so
 * "read-only" must mean more than "starts with SELECT". The engine setting
 * `readonly = 1` refuses writes and table functions — but a SETTINGS clause in a
 * subquery can switch it off again, and `INTO OUTFILE` writes files regardless
 * (both checked on chdb 26.7). So a statement runs only when its syntax tree, as
 * the engine parses it (EXPLAIN AST, which executes nothing):
 *  - is one statement of a reading kind (SELECT, SHOW, DESCRIBE, EXISTS, EXPLAIN);
 *  - has no SETTINGS anywhere, no INTO OUTFILE and no FORMAT (the API sets those);
 *  - reads no table function but the generators below, calls no `file()`;
 * and then it runs with `readonly = 1`, a time limit and a row limit appended.
 */
import { PipelineError } from '../errors.js';

export interface AnalystQueryLimits {
  /** max_execution_time, seconds: in embedded mode a query holds the engine's one session. */
  readonly timeoutSeconds: number;
  /** max_result_rows: larger results are refused, not truncated. */
  readonly maxResultRows: number;
}

export interface AstNode {
  /** First word of the node line, e.g. "SelectWithUnionQuery", "Function", "Set". */
  readonly kind: string;
  /** The rest of the line (a function's name comes first), without "(children n)". */
  readonly detail: string;
  readonly children: AstNode[];
}

/** A table name: identifiers, optionally quoted, optionally db-qualified. */
const NAME = String.raw`(?:\w+|\x60[^\x60]+\x60|"[^"]+")(?:\.(?:\w+|\x60[^\x60]+\x60|"[^"]+"))?`;
/** Reading statements other than SELECT, as plain as they come. */
const SIMPLE_STATEMENTS = [
  new RegExp(
    String.raw`^SHOW\s+(?:TABLES|DATABASES)(?:\s+(?:FROM|IN)\s+${NAME})?(?:\s+(?:NOT\s+)?I?LIKE\s+'[^'\\]*')?$`,
    'i',
  ),
  new RegExp(String.raw`^SHOW\s+CREATE\s+(?:TABLE|VIEW)\s+${NAME}$`, 'i'),
  new RegExp(String.raw`^SHOW\s+COLUMNS\s+(?:FROM|IN)\s+${NAME}$`, 'i'),
  new RegExp(String.raw`^(?:DESCRIBE|DESC)(?:\s+TABLE)?\s+${NAME}$`, 'i'),
  new RegExp(String.raw`^EXISTS(?:\s+(?:TABLE|VIEW))?\s+${NAME}$`, 'i'),
];
const EXPLAIN_PREFIX =
  /^EXPLAIN(?:\s+(?:AST|SYNTAX|PLAN|PIPELINE|ESTIMATE|QUERY\s+TREE))?\s+(?=SELECT\b|WITH\b|\()/i;
const SELECT_START = /^(?:SELECT|WITH)\b|^\(/i;
const LEADING_COMMENTS = /^(?:\s+|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*/;

/** How a statement is checked: its SELECT part by syntax tree, or by pattern alone. */
export type AnalystStatement =
  | { readonly kind: 'select'; readonly body: string; readonly select: string }
  | { readonly kind: 'simple'; readonly body: string };

/** Table functions that only generate rows. Everything else (file, url, s3, remote, …) reads outside the database. */
const GENERATOR_TABLE_FUNCTIONS = new Set([
  'numbers',
  'numbers_mt',
  'zeros',
  'zeros_mt',
  'generate_series',
  'generateseries',
  'values',
]);

/** Scalar functions that read the host's files. */
const FORBIDDEN_FUNCTIONS = new Set(['file']);

function refuse(message: string): PipelineError {
  return new PipelineError('QueryRefused', message, { stage: 'admin' });
}

/** The statement (trailing semicolons dropped) and what must be checked of it. */
export function analystStatement(sql: string): AnalystStatement {
  const body = sql.trim().replace(/(\s*;)+\s*$/, '');
  if (body === '') throw refuse('the query is empty');
  // Conservative: a ';' inside a string literal is refused too (the engine runs several statements).
  if (body.includes(';')) throw refuse('only one statement is allowed (found ";")');
  // Leading comments (a label such as `-- query: …`) do not change what the statement is.
  const text = body.replace(LEADING_COMMENTS, '');
  if (SIMPLE_STATEMENTS.some((re) => re.test(text))) return { kind: 'simple', body };
  const select = text.replace(EXPLAIN_PREFIX, '');
  if (!SELECT_START.test(select)) {
    throw refuse(
      'only reading statements are allowed: SELECT / WITH, EXPLAIN of a SELECT, SHOW TABLES, SHOW CREATE, DESCRIBE, EXISTS',
    );
  }
  return { kind: 'select', body, select };
}

/** EXPLAIN AST output (one node per line, indented by depth) → tree. */
export function parseExplainAst(lines: readonly string[]): AstNode {
  const root: AstNode = { kind: '', detail: '', children: [] };
  const stack: { depth: number; node: AstNode }[] = [{ depth: -1, node: root }];
  for (const line of lines) {
    if (line.trim() === '') continue;
    const depth = line.length - line.trimStart().length;
    const text = line.trim().replace(/\s*\(children \d+\)$/, '');
    const [kind = '', ...rest] = text.split(/\s+/);
    const node: AstNode = { kind, detail: rest.join(' '), children: [] };
    while (stack.length > 1 && stack[stack.length - 1]!.depth >= depth) stack.pop();
    stack[stack.length - 1]!.node.children.push(node);
    stack.push({ depth, node });
  }
  if (root.children.length !== 1) throw refuse('only one statement is allowed');
  return root.children[0]!;
}

function functionName(node: AstNode): string {
  return (node.detail.split(/\s+/)[0] ?? '').toLowerCase();
}

function checkNode(node: AstNode, parent: AstNode | undefined): void {
  if (node.kind === 'Set') throw refuse('SETTINGS are not allowed: the API sets them');
  if (node.kind === 'Function') {
    const name = functionName(node);
    if (parent?.kind === 'TableExpression' && !GENERATOR_TABLE_FUNCTIONS.has(name)) {
      throw refuse(
        `table function ${name}() is not allowed: read the pipeline's tables (or numbers(), values())`,
      );
    }
    if (FORBIDDEN_FUNCTIONS.has(name)) throw refuse(`function ${name}() is not allowed`);
  }
  for (const child of node.children) checkNode(child, node);
}

/** Throws QueryRefused unless the tree is one SELECT within the rules (see the header). */
export function checkAnalystAst(root: AstNode): void {
  if (root.kind !== 'SelectWithUnionQuery')
    throw refuse(`only SELECT is allowed here, not ${root.kind}`);
  for (const child of root.children) {
    // Top-level extras (INTO OUTFILE 'path', FORMAT x, SETTINGS) sit beside the select list.
    if (child.kind !== 'ExpressionList')
      throw refuse('INTO OUTFILE, FORMAT and SETTINGS are not allowed: the API sets them');
  }
  checkNode(root, undefined);
}

/** The SETTINGS clause appended to every analyst statement; readonly last, so nothing follows it. */
export function analystSettings(limits: AnalystQueryLimits): string {
  return (
    `SETTINGS max_execution_time = ${Math.max(1, Math.trunc(limits.timeoutSeconds))}, ` +
    `max_result_rows = ${Math.max(1, Math.trunc(limits.maxResultRows))}, ` +
    `result_overflow_mode = 'throw', readonly = 1`
  );
}
