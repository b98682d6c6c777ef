/**
 * Embedded mode's analyst access: the process that owns the engine answers
 * read-only SQL over the admin API (bearer token required), and `iomt query`
 * prints it as a table, CSV or JSON. Writes, file access and setting changes
 * are refused with QueryRefused; a process without the store says so.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { buildDataset } from '../support/analytics-dataset.js';
import { HARNESS_ADMIN_TOKEN, startHarness, type Harness } from '../support/harness.js';

const run = promisify(execFile);
const fhirUrl = inject('fhirUrl');
let h: Harness;
let adminOnly: Harness;
const dataset = buildDataset(Date.now() - 5 * 60_000);

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

function iomtQuery(args: string[]) {
  return run(
    process.execPath,
    ['bin/iomt.mjs', 'query', ...args, '--admin-url', `http://127.0.0.1:${h.pipeline.admin!.port}`],
    { env: { ...process.env, ADMIN_TOKEN: HARNESS_ADMIN_TOKEN }, timeout: 60_000 },
  );
}

beforeAll(async () => {
  h = await startHarness({ fhirUrl });
  // Two hours of the simulated ward, straight into the mirror.
  for (const batch of dataset.batches.slice(-120)) {
    await h.pipeline.analyticsStore!.insertObservations(batch, Date.now());
  }
  adminOnly = await startHarness({ fhirUrl, roles: ['admin'] });
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
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(
      /does not own the analytics store/,
    );
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

  it('exits 1 with the refusal on one line', async () => {
    const err = await iomtQuery(['DROP TABLE observations']).then(
      () => undefined,
      (e: unknown) => e as { code: number; stderr: string },
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr.trim()).toMatch(/^iomt: QueryRefused: only reading statements/);
  });
});
