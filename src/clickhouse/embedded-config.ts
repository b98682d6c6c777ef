/**
 * What the embedded engine enforces, as chdb lets it be configured (chdb 3.4,
 * engine 26.7; each fact checked in test/integration/analyst-sandbox.test.ts):
 *
 *  - Users and grants come from a users file named by the engine's config file
 *    (`--config-file` at the first connection). Every connection is the user
 *    `default` (`--user` is ignored; CREATE USER / SETTINGS PROFILE have no
 *    writable storage; EXECUTE AS is off and cannot be enabled locally). So grants
 *    are per process, not per analyst: `default` gets everything but the source
 *    grants (FILE, URL, REMOTE, S3, MYSQL, … — `REVOKE SOURCES`), and
 *    no connection in this process, the mirror's included, reads a host file or
 *    fetches a URL through a table function. The scalar `file()` ignores that
 *    grant: the analyst guard refuses it.
 *  - The config is the engine's, read once: a later connection's `--config-file`
 *    is ignored. openEmbeddedDriver checks that the grants took effect.
 *  - Settings passed at connect are that connection's own (each Session has its
 *    own native connection on the shared engine): the analysts' connection is
 *    read-only, and a read-only connection cannot change a setting by SET or by a
 *    top-level SETTINGS clause. A subquery's SETTINGS still can (the guard
 *    refuses SETTINGS); the memory, result and time limits of the outer query
 *    hold regardless.
 *
 * Contract: in — the data directory and the analyst limits; out — connectionArgs
 * for chdb Sessions. Writes `<dataPath>/iomt-engine/{config,users}.xml`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { AnalystQueryLimits } from './analyst-query.js';

/** Folder inside the data directory holding the engine configuration we write. */
export const ENGINE_CONFIG_DIR = 'iomt-engine';

function xmlText(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * The one user of the embedded engine: all grants but the sources (ClickHouse
 * access rights: SOURCES covers FILE, URL, REMOTE, MONGO, REDIS, MYSQL, POSTGRES,
 * SQLITE, ODBC, JDBC, HDFS, S3, HIVE, AZURE, KAFKA, NATS, RABBITMQ, …) and
 * introspection. Users-file grants take GRANT and REVOKE queries.
 */
const USERS_XML = `<?xml version="1.0"?>
<!-- Written by the IoMT pipeline (src/clickhouse/embedded-config.ts) at every start. -->
<clickhouse>
  <profiles><default/></profiles>
  <quotas><default/></quotas>
  <users>
    <default>
      <password></password>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <grants>
        <query>GRANT ALL ON *.*</query>
        <query>REVOKE SOURCES ON *.*</query>
        <query>REVOKE INTROSPECTION ON *.*</query>
      </grants>
    </default>
  </users>
</clickhouse>
`;

/** Writes the engine's config files; returns the connect argument naming them. */
export function writeEngineConfig(dataPath: string): string {
  const dir = join(resolve(dataPath), ENGINE_CONFIG_DIR);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const users = join(dir, 'users.xml');
  const config = join(dir, 'config.xml');
  writeFileSync(users, USERS_XML, { mode: 0o600 });
  writeFileSync(
    config,
    `<?xml version="1.0"?>\n<clickhouse>\n  <users_config>${xmlText(users)}</users_config>\n</clickhouse>\n`,
    { mode: 0o600 },
  );
  return `--config-file=${config}`;
}

/** A path that must not exist: reading it through file() shows whether FILE is granted. */
export function accessProbePath(dataPath: string): string {
  return join(resolve(dataPath), ENGINE_CONFIG_DIR, 'absent-access-probe');
}

/** Both engines answer alike: 64-bit integers as JSON strings (a server's default). */
export const OUTPUT_ARGS = ['--output_format_json_quote_64bit_integers=1'];

/**
 * The analysts' connection: read-only, with its limits as connection settings —
 * out of band, never text appended to a query. `readonly = 1` also refuses every
 * SET and top-level SETTINGS, so none of these can be raised from a query.
 */
export function analystConnectionArgs(limits: AnalystQueryLimits): string[] {
  const int = (n: number, min: number) => Math.max(min, Math.trunc(n));
  return [
    ...OUTPUT_ARGS,
    '--readonly=1',
    `--max_execution_time=${int(limits.timeoutSeconds, 1)}`,
    '--timeout_overflow_mode=throw',
    `--max_result_rows=${int(limits.maxResultRows, 1)}`,
    `--max_result_bytes=${int(limits.maxResultBytes, 1)}`,
    '--result_overflow_mode=throw',
    `--max_memory_usage=${int(limits.maxMemoryBytes, 1)}`,
  ];
}
