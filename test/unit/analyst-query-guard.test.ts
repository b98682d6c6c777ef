/**
 * The read-only guard of analysts' SQL (src/clickhouse/analyst-query.ts), on
 * statements and on syntax trees in the engine's EXPLAIN AST form. The engines
 * themselves are exercised in test/integration/analytics-schema.test.ts.
 */
import { describe, expect, it } from 'vitest';
import {
  analystSettings,
  analystStatement,
  checkAnalystAst,
  parseExplainAst,
} from '../../src/clickhouse/analyst-query.js';

const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return err as { code: string; message: string };
  }
  throw new Error('not refused');
};

describe('analystStatement', () => {
  it('checks SELECT, WITH and EXPLAIN of a SELECT on their syntax tree', () => {
    expect(analystStatement(' SELECT 1 ;; ')).toEqual({
      kind: 'select',
      body: 'SELECT 1',
      select: 'SELECT 1',
    });
    expect(analystStatement('-- query: x\n/* note */ WITH 1 AS a SELECT a')).toMatchObject({
      kind: 'select',
      select: 'WITH 1 AS a SELECT a',
    });
    expect(analystStatement('EXPLAIN PIPELINE SELECT 1')).toMatchObject({
      kind: 'select',
      select: 'SELECT 1',
    });
    expect(analystStatement('(SELECT 1) UNION ALL (SELECT 2)').kind).toBe('select');
  });

  it('lets plain SHOW, DESCRIBE and EXISTS of a name through by pattern', () => {
    for (const sql of [
      'SHOW TABLES',
      "SHOW TABLES FROM iomt LIKE 'vitals%'",
      'SHOW DATABASES',
      'SHOW CREATE TABLE iomt.observations',
      'SHOW COLUMNS FROM `iomt`.`samples`',
      'DESCRIBE TABLE vitals_1h',
      'desc observations',
      'EXISTS TABLE iomt.samples',
    ])
      expect(analystStatement(sql).kind, sql).toBe('simple');
  });

  it('refuses everything else, several statements and nothing at all', () => {
    for (const sql of [
      'INSERT INTO t VALUES (1)',
      'ALTER TABLE t DELETE WHERE 1',
      "DESCRIBE TABLE file('/etc/passwd', 'CSVWithNames')",
      'DESCRIBE (SELECT 1)',
      "SHOW TABLES INTO OUTFILE 'x'",
      'SHOW TABLES SETTINGS readonly = 0',
      'EXPLAIN INSERT INTO t VALUES (1)',
      'SYSTEM FLUSH LOGS',
      'KILL QUERY ALL',
      'SET readonly = 0',
    ])
      expect(refusal(() => analystStatement(sql)).message, sql).toMatch(/only reading statements/);
    expect(refusal(() => analystStatement("SELECT ';'")).message).toMatch(/one statement/);
    expect(refusal(() => analystStatement('SELECT 1; DROP TABLE t')).code).toBe('QueryRefused');
    expect(refusal(() => analystStatement('  ;  ')).message).toMatch(/empty/);
  });
});

/** EXPLAIN AST lines as the engine prints them. */
const ast = (...lines: string[]) => parseExplainAst(lines);

describe('checkAnalystAst', () => {
  const select = (...tableLines: string[]) =>
    ast(
      'SelectWithUnionQuery (children 1)',
      ' ExpressionList (children 1)',
      '  SelectQuery (children 2)',
      '   ExpressionList (children 1)',
      '    Asterisk',
      '   TablesInSelectQuery (children 1)',
      '    TablesInSelectQueryElement (children 1)',
      ...tableLines,
    );

  it('accepts tables and row generators', () => {
    expect(() =>
      checkAnalystAst(
        select('     TableExpression (children 1)', '      TableIdentifier iomt.observations'),
      ),
    ).not.toThrow();
    expect(() =>
      checkAnalystAst(
        select(
          '     TableExpression (children 1)',
          '      Function numbers (children 1)',
          '       ExpressionList (children 1)',
          '        Literal UInt64_10',
        ),
      ),
    ).not.toThrow();
  });

  it('refuses table functions that read outside the database, file(), and SETTINGS anywhere', () => {
    for (const fn of ['file', 'url', 's3', 'remote', 'mysql', 'executable', 'input'])
      expect(
        refusal(() =>
          checkAnalystAst(
            select('     TableExpression (children 1)', `      Function ${fn} (children 1)`),
          ),
        ).message,
      ).toMatch(new RegExp(`table function ${fn}`));
    expect(
      refusal(() =>
        checkAnalystAst(
          ast(
            'SelectWithUnionQuery (children 1)',
            ' ExpressionList (children 1)',
            '  SelectQuery (children 1)',
            '   ExpressionList (children 1)',
            '    Function file (alias f) (children 1)',
          ),
        ),
      ).message,
    ).toMatch(/function file/);
    expect(
      refusal(() =>
        checkAnalystAst(
          ast(
            'SelectWithUnionQuery (children 1)',
            ' ExpressionList (children 1)',
            '  SelectQuery (children 2)',
            '   ExpressionList (children 1)',
            '    Literal UInt64_1',
            '   Set',
          ),
        ),
      ).message,
    ).toMatch(/SETTINGS/);
  });

  it('refuses FORMAT, INTO OUTFILE and SETTINGS beside the select list, and other roots', () => {
    for (const extra of [" Literal 'out.csv'", ' Identifier JSON', ' Set'])
      expect(
        refusal(() =>
          checkAnalystAst(
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
      ).toMatch(/not allowed/);
    expect(
      refusal(() => checkAnalystAst(ast('InsertQuery   (children 2)', ' Identifier t'))).message,
    ).toMatch(/only SELECT/);
    expect(
      refusal(() => parseExplainAst(['SelectWithUnionQuery', 'SelectWithUnionQuery'])).message,
    ).toMatch(/one statement/);
  });
});

describe('analystSettings', () => {
  it('limits time and rows, and ends with readonly', () => {
    expect(analystSettings({ timeoutSeconds: 30, maxResultRows: 1000 })).toBe(
      "SETTINGS max_execution_time = 30, max_result_rows = 1000, result_overflow_mode = 'throw', readonly = 1",
    );
  });
});
