/**
 * Backfills as jobs of the admin API: a job reports its id and progress, and
 * stops — with the FHIR request in flight aborted — when asked (DELETE), when
 * its client disconnects, or when `iomt mirror backfill` gets Ctrl-C.
 *
 * The FHIR server here is a stub (a FHIR server lies outside the system): it
 * answers the first page with one Observation and a `next` link, and holds the
 * second page open until the client gives up, so a job is reliably mid-way
 * when the test stops it. The pipeline (embedded ClickHouse, admin API, the
 * analytics worker stage) is real.
 */
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HARNESS_ADMIN_TOKEN,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';

interface StubFhir {
  readonly url: string;
  /** Query strings of the first-page searches, in order. */
  readonly searches: URLSearchParams[];
  /** Second-page requests: open until the client closes them. */
  readonly held: { closed: boolean }[];
  close(): Promise<void>;
}

async function stubFhir(): Promise<StubFhir> {
  const searches: URLSearchParams[] = [];
  const held: { closed: boolean }[] = [];
  const open = new Set<ServerResponse>();
  let base = '';
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', base);
    if (url.pathname === '/fhir/Observation') {
      searches.push(url.searchParams);
      const id = uniqueId('bf-obs');
      const observation = {
        resourceType: 'Observation',
        id,
        meta: { versionId: '1', lastUpdated: '2026-01-01T10:00:00.000Z' },
        identifier: [{ system: 'urn:iomt:observation', value: id }],
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
        subject: { reference: 'Patient/pat-backfill-job' },
        device: { reference: 'Device/dev-backfill-job' },
        effectiveDateTime: '2026-01-01T10:00:00.000Z',
        valueQuantity: { value: 72, system: 'http://unitsofmeasure.org', code: '/min' },
      };
      res.writeHead(200, { 'content-type': 'application/fhir+json' });
      res.end(
        JSON.stringify({
          resourceType: 'Bundle',
          type: 'searchset',
          link: [{ relation: 'next', url: `${base}/fhir/page-2` }],
          entry: [{ resource: observation }],
        }),
      );
      return;
    }
    if (url.pathname === '/fhir/page-2') {
      // Held open: the backfill waits here until it is cancelled.
      const entry = { closed: false };
      held.push(entry);
      open.add(res);
      res.on('close', () => {
        entry.closed = true;
        open.delete(res);
      });
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `${base}/fhir`,
    searches,
    held,
    async close() {
      for (const res of open) res.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let fhir: StubFhir;
let h: Harness;
let admin: string;

beforeAll(async () => {
  fhir = await stubFhir();
  h = await startHarness({
    fhirUrl: fhir.url,
    roles: ['worker', 'admin'],
    overrides: { worker: { stages: ['analytics'] } },
  });
  admin = `http://127.0.0.1:${h.pipeline.admin!.port}`;
});

afterAll(async () => {
  await h?.close();
  await fhir?.close();
});

const auth = { authorization: `Bearer ${HARNESS_ADMIN_TOKEN}` };

interface JobView {
  id: string;
  state: string;
  stopReason?: string;
  progress: { pages: number; observations: number; cancelled?: true };
}

async function job(id: string): Promise<{ status: number; job?: JobView; code?: string }> {
  const res = await fetch(`${admin}/api/analytics/backfill/${id}`, { headers: auth });
  const body = (await res.json()) as { job?: JobView; error?: { code: string } };
  return {
    status: res.status,
    ...(body.job ? { job: body.job } : {}),
    ...(body.error ? { code: body.error.code } : {}),
  };
}

/** Starts a backfill; reads its NDJSON lines as they come. */
function startBackfill(body: object, signal?: AbortSignal) {
  const lines: Record<string, unknown>[] = [];
  const done = (async () => {
    const res = await fetch(`${admin}/api/analytics/backfill`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      ...(signal ? { signal } : {}),
    });
    expect(res.status).toBe(200);
    let buffered = '';
    const decoder = new TextDecoder();
    for await (const chunk of res.body!) {
      buffered += decoder.decode(chunk as Uint8Array, { stream: true });
      const parts = buffered.split('\n');
      buffered = parts.pop() ?? '';
      for (const p of parts) if (p.trim()) lines.push(JSON.parse(p) as Record<string, unknown>);
    }
  })();
  return { lines, done };
}

const jobId = (lines: Record<string, unknown>[]) =>
  (lines[0]?.job as { id: string } | undefined)?.id;

describe('a backfill job', () => {
  it('stops when asked: DELETE ends the FHIR request in flight and answers once it stopped', async () => {
    const held = fhir.held.length;
    const run = startBackfill({ all: true, pageSize: 1 });
    // 1. page 1 written, page 2 requested and held
    await waitFor(
      () => Promise.resolve(run.lines),
      (l) => l.some((x) => x.progress !== undefined) && fhir.held.length > held,
      30_000,
      'the first page and the second request',
    );
    const id = jobId(run.lines)!;
    expect(fhir.searches.at(-1)?.getAll('_lastUpdated')).toEqual([]); // all: no range
    expect((await job(id)).job).toMatchObject({ state: 'running', progress: { pages: 1 } });
    // 2. cancelled: the answer comes once the job has stopped
    const res = await fetch(`${admin}/api/analytics/backfill/${id}`, {
      method: 'DELETE',
      headers: auth,
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { job: JobView }).job).toMatchObject({
      state: 'cancelled',
      stopReason: 'cancelled',
      progress: { pages: 1, observations: 1, cancelled: true },
    });
    await run.done;
    expect(run.lines.at(-1)).toMatchObject({ summary: { pages: 1, cancelled: true } });
    await waitFor(
      () => Promise.resolve(fhir.held[held]!.closed),
      (closed) => closed,
      10_000,
      'the held FHIR request to be closed',
    );
    // 3. the page it wrote is in the mirror
    const rows = await h.pipeline.analyticsStore!.queryRows<{ n: string }>(
      "SELECT count() AS n FROM observations FINAL WHERE patient_id = 'pat-backfill-job'",
    );
    expect(Number(rows[0]?.n)).toBeGreaterThanOrEqual(1);
  });

  it('stops when its client disconnects, reading the range it was given', async () => {
    const held = fhir.held.length;
    const client = new AbortController();
    const run = startBackfill(
      { since: '2020-01-01', until: '2030-01-01T00:00:00Z', pageSize: 1 },
      client.signal,
    );
    await waitFor(
      () => Promise.resolve(run.lines),
      (l) => l.some((x) => x.progress !== undefined) && fhir.held.length > held,
      30_000,
      'the first page and the second request',
    );
    const id = jobId(run.lines)!;
    expect(fhir.searches.at(-1)?.getAll('_lastUpdated')).toEqual([
      'ge2020-01-01',
      'lt2030-01-01T00:00:00Z',
    ]);
    client.abort();
    await run.done.catch(() => undefined);
    const stopped = await waitFor(
      () => job(id),
      (j) => j.job?.state === 'cancelled',
      10_000,
      'the job to stop',
    );
    expect(stopped.job).toMatchObject({
      stopReason: 'client disconnected',
      progress: { pages: 1 },
    });
    await waitFor(
      () => Promise.resolve(fhir.held[held]!.closed),
      (closed) => closed,
      10_000,
      'the held FHIR request to be closed',
    );
  });

  it('stops `iomt mirror backfill` on Ctrl-C: exit 130, the job cancelled', async () => {
    const held = fhir.held.length;
    const child = spawn(
      process.execPath,
      ['bin/iomt.mjs', 'mirror', 'backfill', '--all', '--page-size', '1', '--admin-url', admin],
      { env: { ...process.env, ADMIN_TOKEN: HARNESS_ADMIN_TOKEN } },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await waitFor(
      () => Promise.resolve(stderr),
      (e) => /^page 1: /m.test(e) && fhir.held.length > held,
      30_000,
      'the CLI to report page 1',
    );
    const id = /^job (\S+) /m.exec(stderr)?.[1];
    expect(id).toBeDefined();
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    const stopped = await waitFor(
      () => job(id!),
      (j) => j.job?.state === 'cancelled',
      10_000,
      'the job to stop',
    );
    expect(stopped.job?.stopReason).toBe('client disconnected');
  });

  it('answers 404 BackfillNotFound for an unknown job', async () => {
    expect(await job('no-such-job')).toEqual({ status: 404, code: 'BackfillNotFound' });
    const res = await fetch(`${admin}/api/analytics/backfill/no-such-job`, {
      method: 'DELETE',
      headers: auth,
    });
    expect(res.status).toBe(404);
  });
});
