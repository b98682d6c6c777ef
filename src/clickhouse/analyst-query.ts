/**
 * Analysts' SQL, second line of defence: a check on the engine's own parse of
 * exactly the text it will run. PURE: the store asks the engine for two views of
 * the analyst's text, unchanged — its canonical one-line rendering
 * (`formatQuerySingleLine`, the text passed as a bound parameter, so nothing of
 * it runs; more than one statement is a syntax error there) and its syntax tree
 * (`EXPLAIN AST <text>`, which executes nothing) — and passes them here. The
 * same text then runs as the analyst. Nothing is stripped from it and nothing
 * appended: limits are the engine's, set outside the text (security.md
 * "Analyst SQL").
 *
 * The first line is the engine's access control: a read-only connection or user
 * with limits a query cannot raise and no source grants. This check adds what the
 * engine does not enforce everywhere (each checked on chdb 26.7, see
 * test/integration/analyst-sandbox.test.ts):
 *  - SETTINGS anywhere: a subquery's SETTINGS lifts `readonly` even on a
 *    read-only connection or under a settings profile;
 *  - INTO OUTFILE: the embedded engine's client side writes the file, read-only or not;
 *  - FORMAT: the API sets the format;
 *  - tables outside the pipeline's database (system.*, INFORMATION_SCHEMA): the
 *    embedded engine has one user for every connection, so no grant scopes it;
 *  - table functions other than row generators, and the functions that read
 *    host files (the scalar `file()` ignores the FILE grant on the embedded
 *    engine), dictionaries, other tables or the server's configuration.
 */
import { PipelineError } from '../errors.js';

export interface AnalystQueryLimits {
  /** max_execution_time, seconds; past it the query is stopped (QueryTimeout). */
  readonly timeoutSeconds: number;
  /** max_result_rows: a larger result is refused, not truncated. */
  readonly maxResultRows: number;
  /** max_result_bytes (uncompressed): a larger result is refused. */
  readonly maxResultBytes: number;
  /** max_memory_usage of one query, bytes. */
  readonly maxMemoryBytes: number;
}

export interface AstNode {
  /** First word of the node line, e.g. "SelectWithUnionQuery", "Function", "Set". */
  readonly kind: string;
  /** The rest of the line (a function's name comes first), without "(children n)". */
  readonly detail: string;
  readonly children: AstNode[];
}

/** What the engine made of the analyst's text. */
export interface AnalystStatementViews {
  /** formatQuerySingleLine of the text: the engine's canonical rendering. */
  readonly formatted: string;
  /** EXPLAIN AST of the text, parsed (parseExplainAst). */
  readonly tree: AstNode;
  /** The pipeline's database: the only one analysts may name. */
  readonly database: string;
}

/** Table functions that only generate rows and that a read-only connection runs. */
const GENERATOR_TABLE_FUNCTIONS = new Set([
  'numbers',
  'numbers_mt',
  'generateseries',
  'generate_series',
  'values',
]);

/**
 * Functions refused wherever they appear (compared in lower case): they read host
 * files, dictionaries or other tables, write the server log, or describe the
 * server (system.functions descriptions, ClickHouse 26.7).
 */
const FORBIDDEN_FUNCTIONS = new Set([
  'file',
  'joinget',
  'joingetornull',
  'hascolumnintable',
  'catboostevaluate',
  'getserversetting',
  'getmergetreesetting',
  'getmacro',
  'showcertificate',
  'logtrace',
  'filesystemavailable',
  'filesystemcapacity',
  'filesystemunreserved',
  'addresstoline',
  'addresstolinewithinlines',
  'addresstosymbol',
  'demangle',
]);
/** Families: dictGet*, dictHas, dictIsIn, …; naiveBayesClassifier*; ai* (calls out to model providers). */
const FORBIDDEN_FUNCTION_PREFIXES = ['dict', 'naivebayes'];
const AI_FUNCTION = /^ai[A-Z]/;

/** The right-hand side of these names a table when it is an identifier. */
const IN_FUNCTIONS = new Set([
  'in',
  'notin',
  'globalin',
  'globalnotin',
  'nullin',
  'notnullin',
  'globalnullin',
  'globalnotnullin',
]);

const EXPLAIN_KINDS = new Set([
  'EXPLAIN',
  'EXPLAIN AST',
  'EXPLAIN SYNTAX',
  'EXPLAIN QUERY TREE',
  'EXPLAIN PLAN',
  'EXPLAIN PIPELINE',
  'EXPLAIN ESTIMATE',
]);

/** A plain name; analysts' tables and CTEs need nothing else, and a plain name is never ambiguous. */
const PLAIN = '[A-Za-z_][A-Za-z0-9_]*';
/** A string literal as formatQuery renders it. */
const LITERAL = String.raw`'(?:[^'\\]|\\.)*'`;

function refuse(message: string): PipelineError {
  return new PipelineError('QueryRefused', message, { stage: 'admin' });
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
  return node.detail.split(/\s+/)[0] ?? '';
}

function forbiddenFunction(name: string): boolean {
  const lower = name.toLowerCase();
  return (
    FORBIDDEN_FUNCTIONS.has(lower) ||
    FORBIDDEN_FUNCTION_PREFIXES.some((p) => lower.startsWith(p)) ||
    AI_FUNCTION.test(name)
  );
}

/**
 * A table reference as EXPLAIN AST prints it ("t", "db.t", then " (alias x)"):
 * a plain name (the connection's database is the pipeline's) or one qualified
 * with the pipeline's database, with a plain alias. Anything else — system.*,
 * another database, a quoted name or alias with dots, spaces or brackets — is
 * refused: EXPLAIN AST prints names unquoted, so only plain ones are unambiguous
 * (`foo (alias x.y)` could be table foo, or table `y)` of database `foo (alias x`).
 */
function checkTableName(detail: string, database: string): void {
  const m = new RegExp(`^(?:(${PLAIN})\\.)?(${PLAIN})(?: \\(alias ${PLAIN}\\))?$`).exec(detail);
  if (!m || (m[1] !== undefined && m[1] !== database)) {
    const shown = detail.replace(/ \(alias .*\)$/, '');
    throw refuse(
      `table ${shown} is not allowed: read the tables of the pipeline's database (${database}) by plain name`,
    );
  }
}

function checkNode(node: AstNode, parent: AstNode | undefined, database: string): void {
  switch (node.kind) {
    case 'Set':
      throw refuse('SETTINGS are not allowed: the engine sets the limits');
    case 'SelectWithUnionQuery':
      // Beside the list of selects sit only the query's own extras: INTO OUTFILE 'path', FORMAT x.
      if (node.children.some((c) => c.kind !== 'ExpressionList'))
        throw refuse('INTO OUTFILE, FORMAT and SETTINGS are not allowed: the API sets the format');
      break;
    case 'TableIdentifier':
      checkTableName(node.detail, database);
      break;
    case 'Function': {
      const name = functionName(node);
      if (parent?.kind === 'TableExpression' && !GENERATOR_TABLE_FUNCTIONS.has(name.toLowerCase()))
        throw refuse(
          `table function ${name}() is not allowed: read the pipeline's tables (or numbers(), values())`,
        );
      if (forbiddenFunction(name)) throw refuse(`function ${name}() is not allowed`);
      if (IN_FUNCTIONS.has(name.toLowerCase())) {
        // `x IN db.t` reads a table: the same rule as FROM.
        const rhs = node.children[0]?.children[1];
        if (rhs?.kind === 'Identifier') checkTableName(rhs.detail, database);
      }
      break;
    }
    default:
      break;
  }
  for (const child of node.children) checkNode(child, node, database);
}

/** The patterns a SHOW / EXISTS statement may have, on the engine's canonical rendering. */
function showPatterns(database: string): RegExp[] {
  const db = database;
  const like = `(?: (?:NOT )?I?LIKE ${LITERAL})?`;
  return [
    new RegExp(`^SHOW TABLES(?: FROM ${db})?${like}$`),
    new RegExp(`^SHOW DATABASES${like}$`),
    new RegExp(`^SHOW COLUMNS FROM ${PLAIN}(?: FROM ${db})?$`),
    new RegExp(`^SHOW CREATE (?:TABLE|VIEW) (?:${db}\\.)?${PLAIN}$`),
    new RegExp(`^EXISTS (?:TABLE|VIEW) (?:${db}\\.)?${PLAIN}$`),
  ];
}

const SHOW_KINDS = new Set([
  'ShowTables',
  'ShowColumns',
  'ShowCreateTableQuery',
  'ExistsTableQuery',
]);

/**
 * Throws QueryRefused unless the statement only reads the pipeline's database:
 * a SELECT (or WITH, UNION), EXPLAIN of one, DESCRIBE, or a plain SHOW TABLES,
 * SHOW DATABASES, SHOW COLUMNS, SHOW CREATE or EXISTS (see the header).
 */
export function checkAnalystStatement(views: AnalystStatementViews): void {
  const { tree, database } = views;
  const formatted = views.formatted.trim();
  if (tree.kind === 'SelectWithUnionQuery') return checkNode(tree, undefined, database);
  if (tree.kind === 'Explain') {
    const [query, ...extra] = tree.children;
    if (!EXPLAIN_KINDS.has(tree.detail) || query?.kind !== 'SelectWithUnionQuery' || extra.length)
      throw refuse('only EXPLAIN [AST|SYNTAX|QUERY TREE|PLAN|PIPELINE|ESTIMATE] of a SELECT');
    return checkNode(query, tree, database);
  }
  if (tree.kind === 'DescribeQuery') {
    if (tree.children.length !== 1 || tree.children[0]!.kind !== 'TableExpression')
      throw refuse('DESCRIBE takes one table');
    return checkNode(tree, undefined, database);
  }
  if (SHOW_KINDS.has(tree.kind)) {
    if (showPatterns(database).some((re) => re.test(formatted))) return;
    throw refuse(
      `only plain SHOW TABLES, SHOW DATABASES, SHOW COLUMNS, SHOW CREATE and EXISTS of the pipeline's database (${database})`,
    );
  }
  throw refuse(
    'only reading statements are allowed: SELECT / WITH, EXPLAIN of a SELECT, DESCRIBE, SHOW TABLES, SHOW CREATE, EXISTS',
  );
}
