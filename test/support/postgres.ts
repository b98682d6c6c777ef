/**
 * The machine's PostgreSQL for tests that run a HAPI on it: PGHOST, PGPORT,
 * PGUSER (default 127.0.0.1:5432, postgres; trust auth), reached with psql.
 * A test makes a database of its own and drops it afterwards.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const PG = {
  host: process.env.PGHOST ?? '127.0.0.1',
  port: process.env.PGPORT ?? '5432',
  user: process.env.PGUSER ?? 'postgres',
} as const;

/** One statement through psql (stop on error), its output trimmed. */
export async function psql(sql: string, db = 'postgres'): Promise<string> {
  const { stdout } = await run('psql', [
    ...['-h', PG.host, '-p', PG.port, '-U', PG.user, '-d', db],
    ...['-v', 'ON_ERROR_STOP=1', '-tAc', sql],
  ]);
  return stdout.trim();
}

/** HAPI's HAPI_JDBC_URL for a database here. */
export function jdbcUrl(database: string): string {
  return `jdbc:postgresql://${PG.host}:${PG.port}/${database}`;
}

/** Creates `database`; says plainly when PostgreSQL does not answer. */
export async function createDatabase(database: string): Promise<void> {
  await psql('SELECT 1').catch((err: Error) => {
    throw new Error(
      `PostgreSQL does not answer at ${PG.host}:${PG.port} as ${PG.user} (trust auth expected; set PGHOST/PGPORT/PGUSER): ${err.message}`,
    );
  });
  await psql(`CREATE DATABASE "${database}"`);
}

/** Drops `database`, closing its connections; nothing happens when it is not there. */
export async function dropDatabase(database: string): Promise<void> {
  await psql(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`).catch(() => undefined);
}
