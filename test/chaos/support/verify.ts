/**
 * The end-state checks every fault test makes: each acknowledged message is in
 * HAPI exactly once (counted by identifier), in ClickHouse exactly once
 * (counted with FINAL), nothing valid reached the dead-letter queue, and no
 * job is left waiting or failed.
 */
import { Queue } from 'bullmq';
import { expect } from 'vitest';
import { createAnalyticsStore } from '../../../src/clickhouse/index.js';
import { QUEUE } from '../../../src/queues.js';
import { connect, queuePrefix } from '../../../src/redis.js';
import type { Device, Sent } from './fleet.js';
import { IDENTIFIER_SYSTEM } from './fleet.js';
import { sleep } from './processes.js';

interface BundleJson {
  entry?: { resource: { id: string; identifier?: { system?: string; value?: string }[] } }[];
  link?: { relation: string; url: string }[];
}

/** identifier value → how many Observations carry it, over the fleet's patients. */
export async function fhirIdentifierCounts(
  fhirUrl: string,
  devices: readonly Device[],
): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const d of devices) {
    let next: string | undefined =
      `${fhirUrl}/Observation?subject=Patient/${d.patientId}&_count=1000&_elements=identifier`;
    while (next) {
      const res = await fetch(next, {
        headers: { accept: 'application/fhir+json', 'cache-control': 'no-cache' },
        signal: AbortSignal.timeout(30_000),
      });
      if (!res.ok) throw new Error(`FHIR search failed: HTTP ${res.status}`);
      const bundle = (await res.json()) as BundleJson;
      for (const e of bundle.entry ?? []) {
        for (const i of e.resource.identifier ?? []) {
          if (i.system === IDENTIFIER_SYSTEM && i.value)
            counts.set(i.value, (counts.get(i.value) ?? 0) + 1);
        }
      }
      next = bundle.link?.find((l) => l.relation === 'next')?.url;
    }
  }
  return counts;
}

/**
 * Problems with the HAPI end state, empty when every acknowledged message is
 * there exactly once, nothing is there twice, and nothing unknown is there.
 * (An unacknowledged message may or may not have been stored: at most once.)
 */
export function fhirProblems(
  counts: Map<string, number>,
  acked: readonly Sent[],
  sent: readonly Sent[] = acked,
): string[] {
  const problems: string[] = [];
  for (const s of acked) {
    const n = counts.get(s.identifier) ?? 0;
    if (n !== 1) problems.push(`${s.identifier}: ${n} in HAPI`);
  }
  const known = new Set(sent.map((s) => s.identifier));
  for (const [k, n] of counts) {
    if (!known.has(k)) problems.push(`${k}: in HAPI but never sent`);
    else if (n > 1) problems.push(`${k}: ${n} in HAPI`);
  }
  return problems;
}

export async function waitForFhir(
  fhirUrl: string,
  devices: readonly Device[],
  acked: () => readonly Sent[],
  timeoutMs: number,
): Promise<Map<string, number>> {
  const deadline = Date.now() + timeoutMs;
  let problems: string[] = ['not checked'];
  while (Date.now() < deadline) {
    try {
      const counts = await fhirIdentifierCounts(fhirUrl, devices);
      problems = fhirProblems(counts, acked());
      if (problems.length === 0) return counts;
    } catch (err) {
      problems = [(err as Error).message];
    }
    await sleep(1000);
  }
  throw new Error(
    `HAPI end state wrong after ${timeoutMs} ms: ${problems.length} problems, e.g. ${problems.slice(0, 5).join('; ')}`,
  );
}

export interface QueueState {
  readonly pending: number;
  readonly failed: number;
  readonly deadLetters: number;
}

/** Jobs still to do (waiting, active, delayed) and failed, over the pipeline's queues. */
export async function queueState(redisUrl: string, prefix: string): Promise<QueueState> {
  const connection = connect(redisUrl, { maxRetriesPerRequest: 1 });
  connection.on('error', () => undefined); // Redis restarting: the caller tries again
  const queues = [QUEUE.ingest, QUEUE.fhir, QUEUE.analytics, QUEUE.deadLetter].map(
    (name) => new Queue(name, { connection, prefix: queuePrefix(redisUrl, prefix) }),
  );
  try {
    const counts = await Promise.all(
      queues.map((q) => q.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'failed')),
    );
    let pending = 0;
    let failed = 0;
    for (const c of counts.slice(0, 3)) {
      pending += (c.waiting ?? 0) + (c.active ?? 0) + (c.delayed ?? 0) + (c.prioritized ?? 0);
      failed += c.failed ?? 0;
    }
    const dl = counts[3] ?? {};
    const deadLetters = Object.values(dl).reduce((a, b) => a + b, 0);
    return { pending, failed, deadLetters };
  } finally {
    await Promise.all(queues.map((q) => q.close()));
    connection.disconnect();
  }
}

/** Each queue's counts by state, for a failure message that says where jobs stayed. */
async function queueBreakdown(
  redisUrl: string,
  prefix: string,
): Promise<Record<string, Record<string, number>> | string> {
  const connection = connect(redisUrl, { maxRetriesPerRequest: 1 });
  connection.on('error', () => undefined); // Redis restarting: the caller tries again
  const names = [QUEUE.ingest, QUEUE.fhir, QUEUE.analytics, QUEUE.deadLetter];
  const queues = names.map(
    (name) => new Queue(name, { connection, prefix: queuePrefix(redisUrl, prefix) }),
  );
  try {
    const counts = await Promise.all(queues.map((q) => q.getJobCounts()));
    return Object.fromEntries(names.map((n, i) => [n, counts[i] ?? {}]));
  } catch (err) {
    return `unavailable: ${(err as Error).message}`;
  } finally {
    await Promise.all(queues.map((q) => q.close()));
    connection.disconnect();
  }
}

export async function waitForDrained(
  redisUrl: string,
  prefix: string,
  timeoutMs: number,
): Promise<QueueState> {
  const deadline = Date.now() + timeoutMs;
  let last: QueueState | undefined;
  while (Date.now() < deadline) {
    try {
      last = await queueState(redisUrl, prefix);
      if (last.pending === 0) return last;
    } catch {
      // Redis restarting: try again.
    }
    await sleep(500);
  }
  throw new Error(
    `queues not drained after ${timeoutMs} ms: ${JSON.stringify(last)}; by queue: ${JSON.stringify(await queueBreakdown(redisUrl, prefix))}`,
  );
}

/**
 * Opens the embedded ClickHouse directory (its owner must have exited: one
 * process per directory) and counts rows per Observation id with FINAL.
 */
export async function clickhouseCounts(
  chdbPath: string,
  ids: readonly string[],
): Promise<{ final: Map<string, number>; raw: number }> {
  const store = createAnalyticsStore({
    url: undefined,
    user: 'default',
    password: '',
    database: 'iomt',
    dataPath: chdbPath,
  });
  try {
    const list = ids.map((id) => `'${id.replace(/[^A-Za-z0-9-]/g, '')}'`).join(',');
    const rows = await store.queryRows<{ id: string; n: string }>(
      `SELECT id, count() AS n FROM observations FINAL WHERE id IN (${list}) GROUP BY id`,
    );
    const raw = await store.queryRows<{ n: string }>(
      `SELECT count() AS n FROM observations WHERE id IN (${list})`,
    );
    return {
      final: new Map(rows.map((r) => [r.id, Number(r.n)])),
      raw: Number(raw[0]?.n ?? 0),
    };
  } finally {
    await store.close();
  }
}

export function clickhouseProblems(final: Map<string, number>, acked: readonly Sent[]): string[] {
  return acked
    .filter((s) => final.get(s.id) !== 1)
    .map((s) => `${s.id}: ${final.get(s.id) ?? 0} rows with FINAL`);
}

/**
 * The HAPI half of the end state: every acknowledged message is there exactly
 * once, and the pipeline's queues drained with nothing failed or dead-lettered.
 */
export async function expectOnceInFhirAndDrained(
  fhirUrl: string,
  redisUrl: string,
  prefix: string,
  fleet: { readonly devices: readonly Device[]; readonly acked: readonly Sent[] },
  drainMs = 180_000,
): Promise<void> {
  await waitForFhir(fhirUrl, fleet.devices, () => fleet.acked, 120_000);
  expect(await waitForDrained(redisUrl, prefix, drainMs)).toEqual({
    pending: 0,
    failed: 0,
    deadLetters: 0,
  });
}

/**
 * The ClickHouse half: every acknowledged message once with FINAL, and no
 * other row. Call it after the mirror process stopped (the embedded engine
 * has one owner).
 */
export async function expectOnceInClickHouse(
  chdbPath: string,
  acked: readonly Sent[],
  rows: number,
): Promise<void> {
  const ch = await clickhouseCounts(
    chdbPath,
    acked.map((s) => s.id),
  );
  expect(clickhouseProblems(ch.final, acked)).toEqual([]);
  expect(ch.final.size).toBe(rows);
}
