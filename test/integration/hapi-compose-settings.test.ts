/**
 * The FHIR server docker-compose.yml runs is the one the tests run: this starts
 * our HAPI launcher jar (services/hapi-fhir, built by scripts/hapi.sh exactly as
 * its Dockerfile builds it) with the environment compose gives the `hapi`
 * container — the Dockerfile's ENV, then the service's `environment`, read from
 * the files so they cannot drift — on a FRESH PostgreSQL database, and checks:
 *   1. the dialect: the schema is created on the empty database, and resources
 *      are written, read and searched there (not in H2);
 *   2. the health endpoint compose probes answers, with compose's own command,
 *      and turns to 503 while the database refuses connections.
 * Only what must differ outside a container is replaced: the database address
 * and credentials (the machine's PostgreSQL, trust auth), the bind address and
 * the port. PostgreSQL: PGHOST/PGPORT/PGUSER, default 127.0.0.1:5432, postgres.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildOf,
  dockerfile,
  dockerfileEnv,
  env,
  execForm,
  finalStage,
  loadCompose,
  ROOT,
  tokens,
} from '../support/compose.js';
import { waitFor } from '../support/harness.js';
import { freePort } from '../support/free-port.js';
import { createDatabase, dropDatabase, jdbcUrl, PG, psql } from '../support/postgres.js';

const run = promisify(execFile);

const database = `iomt_hapi_compose_${randomBytes(4).toString('hex')}`;

// ---- what compose runs, read from the files ------------------------------------

const { compose } = loadCompose();
const hapiService = compose.services['hapi']!;
const build = buildOf(hapiService)!;
const image = finalStage(dockerfile(build.dockerfile));
/** The container's environment: the image's ENV, then compose's `environment`. */
const containerEnv = { ...dockerfileEnv(image), ...env(hapiService) };
const entrypoint = execForm(image, 'ENTRYPOINT');
const healthcheck = tokens(hapiService.healthcheck?.test);
/** What a process outside the container must set differently, and nothing else. */
const REPLACED = [
  'HAPI_JDBC_URL',
  'HAPI_JDBC_USER',
  'HAPI_JDBC_PASSWORD',
  'HAPI_BIND',
  'HAPI_PORT',
];
const JAR = path.join(ROOT, 'services/hapi-fhir/target/hapi-fhir-launcher.jar');

let port: number;
let base: string;
let server: ChildProcess | undefined;
let exited: string | undefined;
let logFile: string;
const workDir = mkdtempSync(path.join(tmpdir(), 'iomt-hapi-compose-'));

function logTail(): string {
  try {
    return readFileSync(logFile, 'utf8').split('\n').slice(-40).join('\n');
  } catch {
    return '(no log)';
  }
}

/** compose's health check command, aimed at this process instead of the container. */
async function composeHealthcheck(): Promise<number> {
  expect(healthcheck[0]).toBe('CMD');
  const [cmd, ...args] = healthcheck.slice(1);
  const target = args.map((a) =>
    a.replace(/^http:\/\/127\.0\.0\.1:\d+\//, `http://127.0.0.1:${port}/`),
  );
  try {
    await run(cmd!, target, { timeout: 60_000 });
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? 1;
  }
}

async function health(which: '' | '/readiness' | '/liveness') {
  const res = await fetch(`http://127.0.0.1:${port}/actuator/health${which}`, {
    signal: AbortSignal.timeout(60_000),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function fhir(method: string, url: string, body?: unknown) {
  const res = await fetch(`${base}/${url}`, {
    method,
    headers: {
      'content-type': 'application/fhir+json',
      accept: 'application/fhir+json',
      'cache-control': 'no-cache',
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  // 1. The jar the Dockerfile builds (same Maven command; up to date: no-op).
  await run('bash', [path.join(ROOT, 'scripts/hapi.sh'), 'build'], {
    cwd: ROOT,
    maxBuffer: 16 * 1024 * 1024,
  });
  // 2. A fresh, uniquely named database.
  await createDatabase(database);
  // 3. The container's settings, with only the location-specific ones replaced.
  port = await freePort();
  base = `http://127.0.0.1:${port}/fhir`;
  const settings: Record<string, string> = {
    ...containerEnv,
    HAPI_JDBC_URL: jdbcUrl(database),
    HAPI_JDBC_USER: PG.user,
    HAPI_JDBC_PASSWORD: '',
    HAPI_BIND: '127.0.0.1',
    HAPI_PORT: String(port),
  };
  // 4. The image's entrypoint, with the jar this checkout built.
  expect(entrypoint.slice(0, 2)).toEqual(['java', '-jar']);
  logFile = path.join(workDir, 'hapi.log');
  const out = openSync(logFile, 'a');
  server = spawn('java', ['-jar', JAR], {
    // A clean environment: nothing from the developer's shell but where java is.
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: workDir, ...settings },
    stdio: ['ignore', out, out],
  });
  server.once('exit', (code, signal) => {
    exited = `exited with ${code ?? signal}`;
  });
  // 5. Ready when compose's health check says so (first boot creates the schema).
  await waitFor(
    () => (exited ? Promise.resolve(-1) : composeHealthcheck()),
    (code) => code === 0 || exited !== undefined,
    280_000,
    `HAPI (compose settings) ready on port ${port}`,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n---- ${logFile} ----\n${logTail()}`);
  });
  if (exited) throw new Error(`HAPI ${exited}:\n${logTail()}`);
}, 300_000);

afterAll(async () => {
  if (server && !exited) {
    const gone = new Promise((resolve) => server!.once('exit', resolve));
    server.kill('SIGTERM');
    const timer = setTimeout(() => server?.kill('SIGKILL'), 30_000);
    await gone;
    clearTimeout(timer);
  }
  await dropDatabase(database);
  rmSync(workDir, { recursive: true, force: true });
}, 60_000);

describe('the HAPI FHIR server docker-compose.yml runs, started with its settings', () => {
  it('is started with the environment compose gives the container, only the location replaced', () => {
    // The settings that make it this stack's server come from compose untouched.
    expect(containerEnv['HAPI_DB']).toBe('postgres');
    expect(containerEnv['JAVA_TOOL_OPTIONS']).toMatch(/-Xmx\d+/);
    for (const key of REPLACED) expect(Object.keys(containerEnv), key).toContain(key);
    // Nothing else is unresolved or replaced.
    for (const [key, value] of Object.entries(containerEnv))
      if (!REPLACED.includes(key)) expect(value, key).not.toContain('${');
  });

  it('creates its schema on the empty PostgreSQL database (the dialect works)', async () => {
    const tables = (
      await psql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
        database,
      )
    ).split('\n');
    expect(tables).toEqual(
      expect.arrayContaining(['hfj_resource', 'hfj_res_ver', 'hfj_spidx_token', 'hfj_res_link']),
    );
    expect(tables.filter((t) => t.startsWith('hfj_')).length).toBeGreaterThan(20);
    // Hibernate reports a DDL statement the database refused as a WARN; none here.
    expect(readFileSync(logFile, 'utf8')).not.toMatch(/GenerationTarget encountered exception/);
  });

  it('writes, reads and searches resources, stored in that PostgreSQL database', async () => {
    const id = `pat-${randomBytes(4).toString('hex')}`;
    // 1. A Patient with a client-assigned id (PUT creates it).
    const patient = await fhir('PUT', `Patient/${id}`, {
      resourceType: 'Patient',
      id,
      identifier: [{ system: 'urn:iomt:test', value: id }],
      name: [{ family: 'Compose', given: ['Settings'] }],
    });
    expect(patient.status).toBe(201);
    // 2. Observations in a transaction Bundle (the pipeline's write path).
    const bundle = await fhir('POST', '', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [72, 75].map((value, i) => ({
        resource: {
          resourceType: 'Observation',
          id: `obs-${id}-${i}`,
          status: 'final',
          code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
          subject: { reference: `Patient/${id}` },
          effectiveDateTime: `2026-01-01T00:0${i}:00Z`,
          valueQuantity: { value, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
        },
        request: { method: 'PUT', url: `Observation/obs-${id}-${i}` },
      })),
    });
    expect(bundle.status).toBe(200);
    const statuses = (bundle.body.entry as { response: { status: string } }[]).map(
      (e) => e.response.status,
    );
    expect(statuses).toEqual(['201 Created', '201 Created']);
    // 3. Read back, and searched (token, reference and sort: SQL the dialect writes).
    const read = await fhir('GET', `Patient/${id}`);
    expect(read.status).toBe(200);
    expect(read.body.name).toEqual([{ family: 'Compose', given: ['Settings'] }]);
    const byIdentifier = await fhir('GET', `Patient?identifier=urn:iomt:test|${id}`);
    expect(byIdentifier.body.total).toBe(1);
    const observations = await fhir(
      'GET',
      `Observation?subject=Patient/${id}&code=http://loinc.org|8867-4&_sort=-date`,
    );
    expect(observations.body.total).toBe(2);
    const values = (
      observations.body.entry as { resource: { valueQuantity: { value: number } } }[]
    ).map((e) => e.resource.valueQuantity.value);
    expect(values).toEqual([75, 72]);
    // 4. The rows are in this fresh PostgreSQL database, not in an in-memory H2.
    const rows = await psql(
      'SELECT res_type, count(*) FROM hfj_resource GROUP BY res_type ORDER BY res_type',
      database,
    );
    expect(rows.split('\n')).toEqual(['Observation|2', 'Patient|1']);
  });

  it('answers compose health check on the readiness endpoint, and exposes nothing else', async () => {
    expect(await composeHealthcheck()).toBe(0);
    expect(await health('/readiness')).toEqual({ status: 200, body: { status: 'UP' } });
    expect(await health('/liveness')).toEqual({ status: 200, body: { status: 'UP' } });
    // No details (components, database), no other actuator endpoint.
    const all = (await health('')).body;
    expect(all.status).toBe('UP');
    expect(Object.keys(all).sort()).toEqual(['groups', 'status']);
    for (const p of ['env', 'beans', 'configprops', 'heapdump'])
      expect((await fetch(`http://127.0.0.1:${port}/actuator/${p}`)).status, p).toBe(404);
  });

  it('reports not ready while the database refuses connections, and ready again after', async () => {
    // 1. The database stops accepting connections; existing ones are closed.
    await psql(`ALTER DATABASE "${database}" WITH ALLOW_CONNECTIONS false`);
    await psql(
      `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '${database}'`,
    );
    try {
      // 2. Readiness turns to 503 (after the pool's connection timeout), liveness stays up.
      const down = await waitFor(
        () => health('/readiness'),
        (h) => h.status === 503,
        120_000,
        'readiness 503 while the database refuses connections',
      );
      expect(down.body).toEqual({ status: 'DOWN' });
      expect(await composeHealthcheck()).not.toBe(0);
      expect((await health('/liveness')).status).toBe(200);
    } finally {
      // 3. The database accepts connections again: ready again.
      await psql(`ALTER DATABASE "${database}" WITH ALLOW_CONNECTIONS true`);
    }
    await waitFor(
      () => composeHealthcheck(),
      (code) => code === 0,
      120_000,
      'ready again',
    );
    expect((await fhir('GET', 'Patient?_summary=count')).body.total).toBe(1);
  }, 300_000);
});
