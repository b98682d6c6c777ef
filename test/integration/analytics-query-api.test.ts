/**
 * Embedded mode's analyst access: the process that owns the engine answers
 * read-only SQL over the admin API (the admin token, or ANALYST_TOKEN, which
 * opens nothing else), and `iomt query` prints it as a table, CSV or JSON.
 * Writes, file access and setting changes are refused with QueryRefused; a query
 * past its time limit is 504 QueryTimeout, and /readyz answers meanwhile; a body
 * over ADMIN_MAX_BODY_BYTES is 413; /readyz shows no URL credentials; a process
 * without the store says so.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { buildDataset } from '../support/analytics-dataset.js';
import { HARNESS_ADMIN_TOKEN, startHarness, waitFor, type Harness } from '../support/harness.js';

const run = promisify(execFile);
const fhirUrl = inject('fhirUrl');
let h: Harness;
let adminOnly: Harness;
const dataset = buildDataset(Date.now() - 5 * 60_000);
const ANALYST_TOKEN = 'analyst-token-0123456789abcdef';
/** FHIR_URL of the admin-only process, with credentials that must never be shown. */
const fhirWithCredentials = fhirUrl.replace('://', '://iomt-user:s3cret-pass@');
/** Seconds an analyst query may run here. */
const QUERY_TIMEOUT_S = 2;

/** `token` null: no Authorization header. */
function post(harness: Harness, body: unknown, token: string | null = HARNESS_ADMIN_TOKEN) {
  return fetch(`http://127.0.0.1:${harness.pipeline.admin!.port}/api/analytics/query`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(body),
  });
}

function iomtQuery(
  args: string[],
  env: Record<string, string> = { ADMIN_TOKEN: HARNESS_ADMIN_TOKEN },
) {
  return run(
    process.execPath,
    ['bin/iomt.mjs', 'query', ...args, '--admin-url', `http://127.0.0.1:${h.pipeline.admin!.port}`],
    { env: { ...process.env, ADMIN_TOKEN: '', ...env }, timeout: 60_000 },
  );
}

function request(
  harness: Harness,
  method: string,
  path: string,
  token: string | null,
  body?: string,
) {
  return fetch(`http://127.0.0.1:${harness.pipeline.admin!.port}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    ...(body === undefined ? {} : { body }),
  });
}

beforeAll(async () => {
  h = await startHarness({
    fhirUrl,
    overrides: {
      admin: { analystToken: ANALYST_TOKEN },
      clickhouse: { queryTimeoutS: QUERY_TIMEOUT_S },
    },
  });
  // Two hours of the simulated ward, straight into the mirror.
  for (const batch of dataset.batches.slice(-120)) {
    await h.pipeline.analyticsStore!.insertObservations(batch, Date.now());
  }
  adminOnly = await startHarness({ fhirUrl: fhirWithCredentials, roles: ['admin'] });
});

afterAll(async () => {
  await adminOnly?.close();
  await h?.close();
});

describe('POST /api/analytics/query', () => {
  const sql = `SELECT patient_id, count() AS n FROM observations FINAL
               WHERE code = '8867-4' GROUP BY patient_id ORDER BY patient_id LIMIT 2`;

  it('needs the bearer token', async () => {
    const res = await post(h, { sql }, null);
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('NotAuthorized');
    expect((await post(h, { sql }, 'wrong-token-wrong-token-wrong')).status).toBe(401);
  });

  it('answers one reading statement in the requested format', async () => {
    const json = await post(h, { sql });
    expect(json.status).toBe(200);
    expect(json.headers.get('content-type')).toContain('application/json');
    const rows = (await json.text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { patient_id: string; n: string });
    expect(rows.map((r) => r.patient_id)).toEqual(['pat-a', 'pat-b']);
    expect(Number(rows[0]!.n)).toBeGreaterThan(50);
    const csv = await post(h, { sql, format: 'CSV' });
    expect((await csv.text()).trim().split('\n')[0]).toMatch(/^"pat-a",\d+$/);
  });

  it('refuses writes, file and network access, settings and several statements', async () => {
    for (const [bad, why] of [
      ["INSERT INTO device_units (device_id) VALUES ('x')", /reading statements/],
      ['ALTER TABLE observations DELETE WHERE 1', /reading statements/],
      ["SELECT * FROM file('/etc/passwd', 'LineAsString')", /table function file/],
      ["SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')", /table function url/],
      ['SELECT * FROM (SELECT 1 SETTINGS readonly = 0)', /SETTINGS/],
      ["SELECT 1 INTO OUTFILE '/tmp/iomt-api-outfile'", /OUTFILE/],
      ['SELECT 1; DROP TABLE observations', /one statement/],
    ] as const) {
      const res = await post(h, { sql: bad });
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(res.status, bad).toBe(400);
      expect(body.error.code, bad).toBe('QueryRefused');
      expect(body.error.message, bad).toMatch(why);
    }
    // Nothing was written.
    const units = await post(h, { sql: 'SELECT count() AS n FROM device_units', format: 'CSV' });
    expect((await units.text()).trim()).toBe('0');
    expect((await post(h, { sql: 'SELECT 1', format: 'XML' })).status).toBe(400);
  });

  it('tells a process without the analytics store apart', async () => {
    const res = await post(adminOnly, { sql: 'SELECT 1' });
    expect(res.status).toBe(404);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('NotServedHere');
    expect(body.error.message).toMatch(/does not own the analytics store/);
  });
});

describe('the analyst token', () => {
  it('runs analyst SQL, and so does the admin token', async () => {
    const sql = 'SELECT count() AS n FROM observations FINAL';
    const byAnalyst = await post(h, { sql, format: 'CSV' }, ANALYST_TOKEN);
    expect(byAnalyst.status).toBe(200);
    expect(Number((await byAnalyst.text()).trim())).toBeGreaterThan(0);
    expect((await post(h, { sql, format: 'CSV' })).status).toBe(200);
    // Logged with who asked, never with the SQL.
    const logged = h.logs.filter((l) => l.event === 'analyst-query');
    expect(logged.map((l) => l.principal)).toEqual(expect.arrayContaining(['analyst', 'admin']));
    expect(JSON.stringify(logged)).not.toContain('observations FINAL');
  });

  it('opens nothing else: readiness, metrics and backfill answer 401', async () => {
    for (const [method, path, body] of [
      ['GET', '/readyz', undefined],
      ['GET', '/metrics', undefined],
      ['POST', '/api/analytics/backfill', '{"all":true}'],
      ['GET', '/api/analytics/backfill/x', undefined],
    ] as const) {
      const res = await request(h, method, path, ANALYST_TOKEN, body);
      expect(res.status, path).toBe(401);
      expect(((await res.json()) as { error: { message: string } }).error.message, path).toMatch(
        /analyst token opens POST \/api\/analytics\/query only/,
      );
    }
  });
});

describe('answers of the admin API', () => {
  it('answers 413 PayloadTooLarge for a body over ADMIN_MAX_BODY_BYTES, 400 for one that is not JSON', async () => {
    const big = JSON.stringify({ sql: `SELECT '${'x'.repeat(2 * 1024 * 1024)}'` });
    for (const path of ['/api/analytics/query', '/api/analytics/backfill']) {
      const res = await request(h, 'POST', path, HARNESS_ADMIN_TOKEN, big);
      expect(res.status, path).toBe(413);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(
        'PayloadTooLarge',
      );
    }
    const broken = await request(h, 'POST', '/api/analytics/query', HARNESS_ADMIN_TOKEN, '{"sql":');
    expect(broken.status).toBe(400);
    expect(((await broken.json()) as { error: { code: string } }).error.code).toBe(
      'InvalidArgument',
    );
  });

  it('answers 504 QueryTimeout past the time limit, and /readyz answers meanwhile', async () => {
    const slow = 'SELECT count() FROM numbers(1000000000000) WHERE cityHash64(number) % 7 = 3';
    const started = Date.now();
    let queryAnswered = false;
    const answer = post(h, { sql: slow, format: 'CSV' }, ANALYST_TOKEN).finally(() => {
      queryAnswered = true;
    });
    // 1. the analyst's query is running on the engine
    await waitFor(
      () =>
        h.pipeline.analyticsStore!.queryRows<{ n: string }>(
          "SELECT count() AS n FROM system.processes WHERE query LIKE '%cityHash64(number) \\% 7 = 3%' AND query NOT LIKE '%system.processes%'",
        ),
      (r) => Number(r[0]?.n) > 0,
      10_000,
      'the slow analyst query to run',
    );
    // 2. readiness does not wait for it: it answers while the query still runs
    const readyz = await request(h, 'GET', '/readyz', HARNESS_ADMIN_TOKEN);
    const answeredFirst = !queryAnswered;
    expect(readyz.status).toBe(200);
    expect(((await readyz.json()) as { checks: { clickhouse: string } }).checks.clickhouse).toBe(
      'ok',
    );
    // 3. the query ends at its limit: 504 QueryTimeout
    const res = await answer;
    expect(res.status).toBe(504);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('QueryTimeout');
    expect(answeredFirst).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(QUERY_TIMEOUT_S * 1000 - 100);
  });

  it('/readyz shows no URL credentials', async () => {
    const res = await request(adminOnly, 'GET', '/readyz', HARNESS_ADMIN_TOKEN);
    const text = await res.text();
    expect(text).toContain('fhir');
    expect(text).not.toContain('s3cret-pass');
    expect(text).not.toContain('iomt-user');
  });
});

describe('iomt query', () => {
  const sql = `SELECT patient_id, max(value) AS top FROM vital_points WHERE code = '8867-4'
               AND patient_id IN ('pat-a', 'pat-b') GROUP BY patient_id ORDER BY patient_id`;

  it('prints a table, CSV or JSON', async () => {
    const table = (await iomtQuery([sql])).stdout;
    expect(table).toMatch(/patient_id/);
    expect(table).toMatch(/pat-a/);
    expect(table).toMatch(/[┌│]/); // PrettyCompact borders
    const csv = (await iomtQuery([sql, '--format', 'csv'])).stdout.trim().split('\n');
    expect(csv).toHaveLength(2);
    expect(csv[0]).toMatch(/^"pat-a",\d+(\.\d+)?$/);
    const json = (await iomtQuery([sql, '--format', 'json'])).stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { patient_id: string; top: number });
    expect(json.map((r) => r.patient_id)).toEqual(['pat-a', 'pat-b']);
    expect(Number(csv[0]!.split(',')[1])).toBe(json[0]!.top);
  });

  it('sends ANALYST_TOKEN when it is set', async () => {
    const { stdout } = await iomtQuery(['SELECT 42 AS answer', '--format', 'csv'], {
      ANALYST_TOKEN,
    });
    expect(stdout.trim()).toBe('42');
  });

  it('exits 2 (invalid input, docs/cli.md) with the refusal on one line', async () => {
    const err = await iomtQuery(['DROP TABLE observations']).then(
      () => undefined,
      (e: unknown) => e as { code: number; stderr: string },
    );
    expect(err?.code).toBe(2);
    expect(err?.stderr.trim()).toMatch(/^iomt: QueryRefused: only reading statements/);
  });
});
