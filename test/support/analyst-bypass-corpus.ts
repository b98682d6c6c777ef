/**
 * Shapes of analyst SQL that try to get past the guard (issue 9): each must be
 * refused, on every engine. Used by analyst-sandbox.test.ts (embedded engine) and
 * analyst-sandbox-server.test.ts (server driver as the deploy analyst account).
 */

export interface CorpusFiles {
  /** A file whose content must never reach an answer or an error. */
  readonly canary: string;
  /** A path INTO OUTFILE must never create. */
  readonly outfile: string;
  /** The pipeline's database. */
  readonly database: string;
}

/** [shape, SQL] pairs that must be refused. */
export function bypassCorpus({ canary, outfile, database: DB }: CorpusFiles) {
  const file = `file('${canary}', 'LineAsString')`;
  const url = `url('http://127.0.0.1:9/x', 'LineAsString')`;

  const corpus: readonly (readonly [string, string])[] = [
    // nested comments: the query, and variants
    ['issue 9 nested comment', `/* /* */ SELECT 1 AS "*/ SELECT * FROM ${file} -- "`],
    [
      'nested comment, subquery SETTINGS',
      `/* /* */ SELECT 1 AS "*/ SELECT * FROM (SELECT * FROM ${file} SETTINGS readonly = 0) -- "`,
    ],
    ['doubly nested comment', `/* /* /* */ */ SELECT 1 AS "*/ SELECT * FROM ${file} -- "`],
    ['unterminated comment', `SELECT * FROM ${file} /*`],
    ['trailing line comment', `SELECT * FROM ${file} --`],
    ['hash comment', `SELECT 1 # \nFROM ${file}`],
    // comments in every position
    ['comments between tokens', `SELECT/**/*/**/FROM/**/${file}/**/`],
    ['line comments between tokens', `SELECT -- a\n * -- b\nFROM -- c\n${file} -- d`],
    ['comment inside the call', `SELECT * FROM file(/* x */ '${canary}' /* y */, 'LineAsString')`],
    ['comment before the call paren', `SELECT * FROM file /* x */ ('${canary}', 'LineAsString')`],
    // quoting
    ['backticked table function', `SELECT * FROM \`file\`('${canary}', 'LineAsString')`],
    ['double-quoted table function', `SELECT * FROM "file"('${canary}', 'LineAsString')`],
    ['escaped quote in a string', `SELECT 'a\\'' FROM ${file}`],
    ['doubled quote in a string', `SELECT 'it''s' FROM ${file}`],
    ['heredoc string', `SELECT $x$;$x$ FROM ${file}`],
    ['semicolon in a string, then a statement', `SELECT ';'; SELECT * FROM ${file}`],
    ['quoted system table', 'SELECT * FROM `system`.`processes`'],
    ['double-quoted system table', 'SELECT * FROM "system"."users"'],
    // unicode
    [
      'homoglyph function name (Cyrillic і)',
      `SELECT * FROM f\u0456le('${canary}', 'LineAsString')`,
    ],
    ['zero-width space in the name', `SELECT * FROM fi\u200Ble('${canary}', 'LineAsString')`],
    ['fullwidth semicolon', `SELECT 1\uFF1BSELECT * FROM ${file}`],
    ['fullwidth parentheses', `SELECT * FROM file\uFF08'${canary}', 'LineAsString'\uFF09`],
    ['no-break space', `SELECT\u00A0*\u00A0FROM\u00A0${file}`],
    ['right-to-left override', `SELECT * FROM \u202E${file}`],
    ['homoglyph system database', 'SELECT * FROM \u0455ystem.one'],
    // table functions in every clause
    ['FROM', `SELECT * FROM ${file}`],
    ['JOIN', `SELECT * FROM numbers(1) AS n JOIN ${file} AS f ON 1`],
    ['GLOBAL JOIN', `SELECT * FROM numbers(1) AS n GLOBAL JOIN ${file} AS f ON 1`],
    ['subquery', `SELECT * FROM (SELECT * FROM ${file})`],
    ['IN (SELECT …)', `SELECT 1 WHERE 'x' IN (SELECT line FROM ${file})`],
    ['IN table function', `SELECT 'x' IN ${file}`],
    ['WITH / CTE', `WITH f AS (SELECT * FROM ${file}) SELECT * FROM f`],
    ['scalar subquery', `SELECT (SELECT any(line) FROM ${file})`],
    ['arrayJoin of a subquery', `SELECT arrayJoin((SELECT groupArray(line) FROM ${file}))`],
    ['EXISTS', `SELECT EXISTS (SELECT * FROM ${url})`],
    ['UNION ALL', `SELECT 'a' UNION ALL SELECT * FROM ${file}`],
    ['WHERE', `SELECT 1 WHERE (SELECT count() FROM ${file}) > 0`],
    ['HAVING', `SELECT count() FROM numbers(1) HAVING (SELECT count() FROM ${file}) > 0`],
    ['ORDER BY', `SELECT 1 ORDER BY (SELECT any(line) FROM ${file})`],
    ['LIMIT', `SELECT 1 LIMIT (SELECT count() FROM ${file})`],
    ['generator argument', `SELECT * FROM numbers((SELECT count() FROM ${file}))`],
    ['DESCRIBE', `DESCRIBE ${file}`],
    ['EXPLAIN', `EXPLAIN SELECT * FROM ${file}`],
    ['dictGet', `SELECT dictGet('d', 'a', toUInt64(1))`],
    ['joinGet', `SELECT joinGet('j', 'v', 1)`],
    // every source and table-reading function
    ['scalar file()', `SELECT file('${canary}')`],
    ['scalar FILE()', `SELECT FILE('${canary}')`],
    ['url', `SELECT * FROM ${url}`],
    ['s3', `SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv', 'CSV', 'x String')`],
    ['remote', "SELECT * FROM remote('127.0.0.1:9', system.one)"],
    ['remoteSecure', "SELECT * FROM remoteSecure('127.0.0.1:9', system.one)"],
    ['mysql', `SELECT * FROM mysql('127.0.0.1:9', 'd', 't', 'u', 'p')`],
    ['postgresql', `SELECT * FROM postgresql('127.0.0.1:9', 'd', 't', 'u', 'p')`],
    ['executable', `SELECT * FROM executable('cat ${canary}', 'TSV', 'x String')`],
    ['input', `SELECT * FROM input('x String')`],
    ['jdbc', `SELECT * FROM jdbc('x', 'y', 'z')`],
    ['odbc', `SELECT * FROM odbc('d', 't')`],
    ['hdfs', `SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'CSV', 'x String')`],
    ['azureBlobStorage', `SELECT * FROM azureBlobStorage('http://127.0.0.1:9', 'c', 'b', 'CSV')`],
    ['sqlite', `SELECT * FROM sqlite('${canary}', 't')`],
    ['mongodb', `SELECT * FROM mongodb('127.0.0.1:9', 'd', 'c', 'u', 'p', 'x String')`],
    ['view()', `SELECT * FROM view(SELECT * FROM ${file})`],
    ['merge() over system', "SELECT * FROM merge('system', '^processes$')"],
    ['cluster()', "SELECT * FROM cluster('default', system.one)"],
    ['clusterAllReplicas()', "SELECT * FROM clusterAllReplicas('default', system.one)"],
    ['loop()', `SELECT * FROM loop(${file}) LIMIT 1`],
    ['dictionary()', "SELECT * FROM dictionary('d')"],
    ['format()', `SELECT * FROM format(CSV, 'x String', 'a')`],
    ['generateRandom()', "SELECT * FROM generateRandom('x String') LIMIT 1"],
    ['fileCluster', `SELECT * FROM fileCluster('default', '${canary}')`],
    ['iceberg', "SELECT * FROM iceberg('http://127.0.0.1:9/bucket/t')"],
    ['deltaLake', "SELECT * FROM deltaLake('http://127.0.0.1:9/bucket/t')"],
    ['mergeTreeIndex', `SELECT * FROM mergeTreeIndex(${DB}, observations)`],
    ['getServerSetting', "SELECT getServerSetting('path')"],
    ['hasColumnInTable', "SELECT hasColumnInTable('system', 'users', 'name')"],
    // other databases
    ['system table', 'SELECT * FROM system.processes'],
    ['system table, upper case', 'SELECT * FROM SYSTEM.ONE'],
    ['INFORMATION_SCHEMA', 'SELECT * FROM INFORMATION_SCHEMA.tables'],
    ['information_schema', 'SELECT * FROM information_schema.columns'],
    ['IN a system table', 'SELECT 1 IN system.one'],
    ['SHOW PROCESSLIST', 'SHOW PROCESSLIST'],
    ['SHOW TABLES FROM system', 'SHOW TABLES FROM system'],
    ['SHOW GRANTS', 'SHOW GRANTS'],
    ['SHOW USERS', 'SHOW USERS'],
    ['SHOW SETTINGS', "SHOW SETTINGS LIKE '%'"],
    ['DESCRIBE a system table', 'DESCRIBE system.users'],
    ['SHOW CREATE of a system table', 'SHOW CREATE TABLE system.users'],
    ['EXISTS a system table', 'EXISTS system.one'],
    ['USE system', 'USE system'],
    // SETTINGS injection
    ['top-level SETTINGS', 'SELECT 1 SETTINGS readonly = 0'],
    ['subquery SETTINGS', 'SELECT * FROM (SELECT 1 SETTINGS readonly = 0)'],
    ['CTE SETTINGS', 'WITH c AS (SELECT 1 SETTINGS max_memory_usage = 0) SELECT * FROM c'],
    ['IN subquery SETTINGS', 'SELECT 1 WHERE 1 IN (SELECT 1 SETTINGS readonly = 0)'],
    ['scalar subquery SETTINGS', "SELECT (SELECT getSetting('readonly') SETTINGS readonly = 0)"],
    ['SETTINGS after FORMAT', 'SELECT 1 FORMAT CSV SETTINGS readonly = 0'],
    ['SET', 'SET readonly = 0'],
    ['SET max_memory_usage', 'SET max_memory_usage = 0'],
    ['EXPLAIN with settings', 'EXPLAIN PIPELINE graph = 1 SELECT 1'],
    ['SHOW with SETTINGS', 'SHOW TABLES SETTINGS readonly = 0'],
    // multiple statements
    ['two statements', `SELECT 1; SELECT * FROM ${file}`],
    ['two statements, no space', `SELECT 1;SELECT * FROM ${file};`],
    ['statement after a comment', `SELECT 1; -- x\nSELECT * FROM ${file}`],
    ['DROP after SELECT', `SELECT 1; DROP TABLE ${DB}.observations`],
    // INTO OUTFILE, FORMAT
    ['INTO OUTFILE', `SELECT 1 INTO OUTFILE '${outfile}'`],
    ['INTO OUTFILE AND STDOUT', `SELECT 1 INTO OUTFILE '${outfile}' AND STDOUT`],
    ['INTO OUTFILE TRUNCATE', `SELECT 1 INTO OUTFILE '${outfile}' TRUNCATE`],
    ['UNION INTO OUTFILE', `(SELECT 1) UNION ALL (SELECT 2) INTO OUTFILE '${outfile}'`],
    ['EXPLAIN INTO OUTFILE', `EXPLAIN SELECT 1 INTO OUTFILE '${outfile}'`],
    ['SHOW INTO OUTFILE', `SHOW TABLES INTO OUTFILE '${outfile}'`],
    ['FORMAT', 'SELECT 1 FORMAT JSON'],
    ['SHOW FORMAT', 'SHOW DATABASES FORMAT JSON'],
    // writes, DDL and the rest
    ['INSERT', `INSERT INTO ${DB}.device_units (device_id) VALUES ('x')`],
    [
      'INSERT INTO FUNCTION',
      `INSERT INTO FUNCTION file('${outfile}', 'CSV', 'x UInt8') VALUES (1)`,
    ],
    [
      'INSERT FROM INFILE',
      `INSERT INTO ${DB}.device_units FROM INFILE '${canary}' FORMAT LineAsString`,
    ],
    ['ALTER', `ALTER TABLE ${DB}.observations DELETE WHERE 1`],
    ['DROP', `DROP TABLE ${DB}.observations`],
    ['TRUNCATE', `TRUNCATE TABLE ${DB}.observations`],
    ['CREATE', 'CREATE TABLE t (x UInt8) ENGINE = Memory'],
    ['OPTIMIZE', `OPTIMIZE TABLE ${DB}.observations FINAL`],
    ['SYSTEM', 'SYSTEM FLUSH LOGS'],
    ['KILL', 'KILL QUERY ALL'],
    ['GRANT', 'GRANT ALL ON *.* TO default'],
    ['EXPLAIN INSERT', `EXPLAIN INSERT INTO ${DB}.device_units (device_id) VALUES ('x')`],
    ['BACKUP', `BACKUP TABLE ${DB}.observations TO File('${outfile}')`],
    ['empty', '  '],
  ];
  return corpus;
}

/**
 * [shape, SQL, first CSV line]: reading shapes that only look odd; the guard must
 * answer them. Expects a reference_ranges row with code 'x-1'.
 */
export function acceptedShapes(DB: string): readonly (readonly [string, string, string])[] {
  return [
    ['alias holding comment markers', 'SELECT 1 AS "*/ x -- "', '1'],
    ['string holding ; -- /*', "SELECT '; -- /* */' AS s", '"; -- /* */"'],
    ['leading comments', '-- query: x\n/* note */ SELECT 2', '2'],
    ['nested comment, closed', '/* a /* b */ c */ SELECT 3', '3'],
    ['trailing semicolons', 'SELECT 4;;', '4'],
    [
      'quoted table name',
      `SELECT code FROM \`${DB}\`."reference_ranges" FINAL WHERE code = 'x-1'`,
      '"x-1"',
    ],
    [
      'IN a subquery of our table',
      `SELECT 'x-1' IN (SELECT code FROM ${DB}.reference_ranges)`,
      '1',
    ],
    ['generator', 'SELECT count() FROM numbers(10)', '10'],
    ['unicode in a string', "SELECT 'fіle ；' AS u", '"fіle ；"'],
  ];
}
