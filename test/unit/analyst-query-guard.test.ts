/**
 * The analyst guard (src/clickhouse/analyst-query.ts) on syntax trees in the
 * engine's EXPLAIN AST form and on the engine's one-line rendering of SHOW
 * statements. The engine producing both, and the whole path, are exercised in
 * test/integration/analyst-sandbox.test.ts.
 */
import { describe, expect, it } from 'vitest';
import {
  checkAnalystStatement,
  parseExplainAst,
  type AstNode,
} from '../../src/clickhouse/analyst-query.js';

const DB = 'iomt';

const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return err as { code: string; message: string };
  }
  throw new Error('not refused');
};

/** EXPLAIN AST lines as the engine prints them. */
const ast = (...lines: string[]) => parseExplainAst(lines);
const check = (tree: AstNode, formatted = '') =>
  checkAnalystStatement({ tree, formatted, database: DB });

/** SELECT * FROM <the table expression's child lines, indented 6>. */
const selectFrom = (...tableLines: string[]) =>
  ast(
    'SelectWithUnionQuery (children 1)',
    ' ExpressionList (children 1)',
    '  SelectQuery (children 2)',
    '   ExpressionList (children 1)',
    '    Asterisk',
    '   TablesInSelectQuery (children 1)',
    '    TablesInSelectQueryElement (children 1)',
    '     TableExpression (children 1)',
    ...tableLines,
  );
/** SELECT <one expression, indented 4>. */
const selectExpr = (...exprLines: string[]) =>
  ast(
    'SelectWithUnionQuery (children 1)',
    ' ExpressionList (children 1)',
    '  SelectQuery (children 1)',
    '   ExpressionList (children 1)',
    ...exprLines,
  );

describe('parseExplainAst', () => {
  it('builds the tree by indentation and refuses more than one root', () => {
    const tree = selectFrom('      TableIdentifier iomt.observations (alias o)');
    expect(tree.kind).toBe('SelectWithUnionQuery');
    const table = tree.children[0]!.children[0]!.children[1]!.children[0]!.children[0]!;
    expect(table).toMatchObject({ kind: 'TableExpression' });
    expect(table.children[0]).toMatchObject({
      kind: 'TableIdentifier',
      detail: 'iomt.observations (alias o)',
    });
    expect(
      refusal(() => parseExplainAst(['SelectWithUnionQuery', 'SelectWithUnionQuery'])).message,
    ).toMatch(/one statement/);
  });
});

describe('checkAnalystStatement: tables', () => {
  it("accepts the pipeline's tables, by plain or qualified name, and row generators", () => {
    for (const line of ['TableIdentifier observations', 'TableIdentifier iomt.vitals_1h (alias v)'])
      expect(() => check(selectFrom(`      ${line}`)), line).not.toThrow();
    for (const fn of ['numbers', 'numbers_mt', 'generateSeries', 'generate_series', 'values'])
      expect(() => check(selectFrom(`      Function ${fn} (children 1)`)), fn).not.toThrow();
  });

  it('refuses other databases, system tables and names that are not plain', () => {
    for (const line of [
      'TableIdentifier system.processes',
      'TableIdentifier INFORMATION_SCHEMA.tables',
      'TableIdentifier information_schema.columns (alias c)',
      'TableIdentifier other.observations',
      'TableIdentifier iomt.sys.x', // iomt.`sys.x` or `iomt.sys`.x: ambiguous
      'TableIdentifier my table',
      'TableIdentifier ѕystem.one', // Cyrillic ѕ
      'TableIdentifier foo (alias x.y)',
      'TableIdentifier t (alias */ SELECT -- )',
    ])
      expect(refusal(() => check(selectFrom(`      ${line}`))).message, line).toMatch(
        /table .* is not allowed/,
      );
  });

  it('refuses every other table function, whatever the case', () => {
    for (const fn of [
      'file',
      'url',
      's3',
      'remote',
      'remoteSecure',
      'mysql',
      'postgresql',
      'executable',
      'input',
      'jdbc',
      'odbc',
      'hdfs',
      'azureBlobStorage',
      'view',
      'merge',
      'cluster',
      'clusterAllReplicas',
      'loop',
      'dictionary',
      'zeros',
      'generateRandom',
      'format',
      'FILE',
      'Numbers2',
    ])
      expect(
        refusal(() => check(selectFrom(`      Function ${fn} (children 1)`))).message,
        fn,
      ).toMatch(new RegExp(`table function ${fn}\\(\\)`));
  });

  it('applies the table rule to the identifier on the right of IN', () => {
    const inTable = (name: string) =>
      selectExpr(
        '    Function in (children 1)',
        '     ExpressionList (children 2)',
        '      Literal UInt64_1',
        `      Identifier ${name}`,
      );
    expect(() => check(inTable('iomt.reference_ranges'))).not.toThrow();
    expect(refusal(() => check(inTable('system.one'))).message).toMatch(/table system.one/);
  });
});

describe('checkAnalystStatement: anywhere in the tree', () => {
  it('refuses SETTINGS, FORMAT and INTO OUTFILE at any depth', () => {
    const nested = (...lines: string[]) =>
      selectFrom(
        '      Subquery (children 1)',
        '       SelectWithUnionQuery (children 2)',
        '        ExpressionList (children 1)',
        '         SelectQuery (children 2)',
        '          ExpressionList (children 1)',
        '           Literal UInt64_1',
        ...lines,
      );
    expect(refusal(() => check(nested('          Set'))).message).toMatch(/SETTINGS/);
    expect(refusal(() => check(nested("        Literal '/tmp/x'"))).message).toMatch(/OUTFILE/);
    for (const extra of [" Literal 'out.csv'", ' Identifier JSON', ' Set'])
      expect(
        refusal(() =>
          check(
            ast(
              'SelectWithUnionQuery (children 2)',
              ' ExpressionList (children 1)',
              '  SelectQuery (children 1)',
              '   ExpressionList (children 1)',
              '    Literal UInt64_1',
              extra,
            ),
          ),
        ).message,
        extra,
      ).toMatch(/not allowed/);
  });

  it('refuses functions that read files, dictionaries, other tables or server facts', () => {
    for (const fn of [
      'file',
      'FILE',
      'dictGet',
      'dictGetStringOrDefault',
      'dictHas',
      'joinGet',
      'hasColumnInTable',
      'catboostEvaluate',
      'getServerSetting',
      'logTrace',
      'addressToSymbol',
      'naiveBayesClassifier',
      'aiGenerate',
    ])
      expect(
        refusal(() => check(selectExpr(`    Function ${fn} (alias x) (children 1)`))).message,
        fn,
      ).toMatch(new RegExp(`function ${fn}\\(\\) is not allowed`));
    for (const fn of ['sum', 'argMax', 'arrayJoin', 'toStartOfHour', 'dateDiff', 'air'])
      expect(() => check(selectExpr(`    Function ${fn} (children 1)`)), fn).not.toThrow();
  });
});

describe('checkAnalystStatement: statement kinds', () => {
  const select = selectFrom('      TableIdentifier observations');

  it('accepts EXPLAIN of a SELECT, and checks the SELECT', () => {
    const explain = (kind: string, inner: AstNode) => ({
      kind: 'Explain',
      detail: kind,
      children: [inner],
    });
    expect(() => check(explain('EXPLAIN PIPELINE', select))).not.toThrow();
    expect(
      refusal(() => check(explain('EXPLAIN', selectFrom('      Function url (children 1)'))))
        .message,
    ).toMatch(/table function url/);
    expect(refusal(() => check(explain('EXPLAIN TABLE OVERRIDE', select))).message).toMatch(
      /only EXPLAIN/,
    );
    expect(
      refusal(() =>
        check({ kind: 'Explain', detail: 'EXPLAIN', children: [select, { ...select }] }),
      ).message,
    ).toMatch(/only EXPLAIN/);
  });

  it('accepts DESCRIBE of a table of the pipeline, and checks it like FROM', () => {
    const describe = (line: string) =>
      ast('DescribeQuery (children 1)', ' TableExpression (children 1)', `  ${line}`);
    expect(() => check(describe('TableIdentifier iomt.samples'))).not.toThrow();
    expect(refusal(() => check(describe('TableIdentifier system.users'))).message).toMatch(
      /system.users/,
    );
    expect(refusal(() => check(describe('Function file (children 1)'))).message).toMatch(
      /table function file/,
    );
  });

  it("accepts plain SHOW and EXISTS of the pipeline's database, by the engine's rendering", () => {
    const ok: [string, string][] = [
      ['ShowTables', 'SHOW TABLES'],
      ['ShowTables', "SHOW TABLES FROM iomt LIKE 'vitals%'"],
      ['ShowTables', "SHOW TABLES NOT ILIKE '%\\'%'"],
      ['ShowTables', 'SHOW DATABASES'],
      ['ShowColumns', 'SHOW COLUMNS FROM samples FROM iomt'],
      ['ShowCreateTableQuery', 'SHOW CREATE TABLE iomt.observations'],
      ['ShowCreateTableQuery', 'SHOW CREATE VIEW vital_points'],
      ['ExistsTableQuery', 'EXISTS TABLE samples'],
    ];
    for (const [kind, formatted] of ok)
      expect(() => check({ kind, detail: '', children: [] }, formatted), formatted).not.toThrow();
    const refused: [string, string][] = [
      ['ShowTables', 'SHOW TABLES FROM system'],
      ['ShowTables', 'SHOW DICTIONARIES'],
      ['ShowTables', 'SHOW CLUSTERS'],
      ['ShowTables', "SHOW SETTINGS LIKE '%'"],
      ['ShowTables', "SHOW TABLES INTO OUTFILE 'x'"],
      ['ShowTables', 'SHOW DATABASES FORMAT JSON'],
      ['ShowTables', 'SHOW TABLES SETTINGS readonly = 0'],
      ['ShowColumns', 'SHOW COLUMNS FROM users FROM system'],
      ['ShowCreateTableQuery', 'SHOW CREATE TABLE system.users'],
      ['ExistsTableQuery', 'EXISTS TABLE INFORMATION_SCHEMA.tables'],
    ];
    for (const [kind, formatted] of refused)
      expect(
        refusal(() => check({ kind, detail: '', children: [] }, formatted)).message,
        formatted,
      ).toMatch(/only plain SHOW/);
  });

  it('refuses everything else', () => {
    for (const kind of [
      'InsertQuery',
      'AlterQuery',
      'DropQuery',
      'CreateQuery',
      'UseQuery',
      'SetQuery',
      'SYSTEM',
      'KillQueryQuery',
      'ShowProcesslistQuery',
      'ShowGrantsQuery',
      'OptimizeQuery',
      'BackupQuery',
    ])
      expect(refusal(() => check({ kind, detail: '', children: [] })).message, kind).toMatch(
        /only reading statements/,
      );
  });
});
