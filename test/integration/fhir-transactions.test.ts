/**
 * Observations are written as transaction Bundles (all or nothing) against the
 * real HAPI server, and a refused transaction is split so that only the bad
 * entries are dead-lettered (issue: ingest at the FHIR server's own ceiling):
 *  - a job whose Bundle holds one Observation referencing a Patient the server
 *    does not have: the other Observations commit, the bad one is a dead letter
 *    with FhirRejected and the server's status;
 *  - one that does not parse (a string where a decimal goes): the same;
 *  - concurrent transactions PUTting the same new ids: every write succeeds
 *    (conflicts between them are retried), one resource per id;
 *  - concurrent jobs share Bundles (group commit, src/group-commit.ts): ten
 *    small jobs take fewer transactions than ten, and a bad entry in one job
 *    refuses only that entry, not the other jobs' entries it shared a Bundle with.
 */
import type { Observation } from 'fhir/r4.js';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createAdaptiveLimit } from '../../src/fhir/adaptive-limit.js';
import { createFhirGateway } from '../../src/fhir/gateway.js';
import { createFhirStore } from '../../src/fhir/store.js';
import { createLogger } from '../../src/logger.js';
import type { AnalyticsJobData, FhirJobData, ObservationEnvelope } from '../../src/queues.js';
import { createFhirWriterStage } from '../../workers/fhir-writer.js';
import { uniqueId } from '../support/harness.js';

const fhirUrl = inject('fhirUrl');
const gateway = createFhirGateway({ baseUrl: fhirUrl, timeoutMs: 60_000 });
const store = createFhirStore(gateway, { limit: createAdaptiveLimit({ max: 4 }) });
const patient = uniqueId('p-tx');

function observation(id: string, subject = patient, value: unknown = 70): Observation {
  return {
    resourceType: 'Observation',
    id,
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject: { reference: `Patient/${subject}` },
    effectiveDateTime: new Date(Date.now() - 60_000).toISOString(),
    valueQuantity: { value, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
  } as Observation;
}

function envelope(o: Observation): ObservationEnvelope {
  return {
    observation: o,
    provenance: {
      messageId: `m-${o.id ?? ''}`,
      deviceId: 'd-tx',
      receivedAt: Date.now(),
      templateName: 'heartrate',
      templateVersion: 'v1',
    },
  };
}

const stage = createFhirWriterStage({
  config: loadConfig({}, { fhir: { url: fhirUrl, batchSize: 50 } }),
  store,
  fhir: gateway,
  associationSync: { sync: () => Promise.resolve() },
  log: createLogger('silent'),
});

async function runJob(observations: Observation[]) {
  const data: FhirJobData = {
    traceId: uniqueId('tr'),
    patients: [],
    devices: [],
    observations: observations.map(envelope),
    messages: [],
  };
  return stage.run({ id: uniqueId('job'), data });
}

beforeAll(async () => {
  await store.ensurePatients([
    { id: patient, identifier: { system: 'urn:iomt:patient', value: patient }, create: true },
  ]);
});

describe('transaction Bundles with a refused entry', () => {
  it.each([
    [
      'a reference to a Patient the server does not have',
      (id: string) => observation(id, uniqueId('p-missing')),
    ],
    ['a value that does not parse', (id: string) => observation(id, patient, 'seventy')],
  ])('%s: the good entries commit, the bad one is dead-lettered with its code', async (_, bad) => {
    // 1. Twenty Observations in one 50-entry transaction, the 13th refused.
    const ids = Array.from({ length: 20 }, () => uniqueId('o-tx'));
    const obs = ids.map((id, i) => (i === 12 ? bad(id) : observation(id)));
    const r = await runJob(obs);

    // 2. The bad one alone is a dead letter, FhirRejected with a 4xx status.
    expect(r.retry).toBeUndefined();
    expect(r.deadLetters).toHaveLength(1);
    const dead = r.deadLetters[0]!;
    expect(dead.error.code).toBe('FhirRejected');
    expect(dead.error.details.status).toBeGreaterThanOrEqual(400);
    expect(dead.error.details.status).toBeLessThan(500);
    expect(JSON.stringify(dead)).toContain(ids[12]);

    // 3. The other nineteen went on to the mirror, and the server has exactly them.
    const mirrored = (r.next[0]!.data as AnalyticsJobData).observations.map(
      (e) => e.observation.id,
    );
    const good = ids.filter((_, i) => i !== 12);
    expect(mirrored.sort()).toEqual([...good].sort());
    const stored = await store.readObservations(ids);
    expect(stored.map((o) => o.id).sort()).toEqual([...good].sort());
  });
});

describe('concurrent transactions on the same ids', () => {
  it('all succeed; one resource per id', async () => {
    const ids = Array.from({ length: 30 }, () => uniqueId('o-race'));
    // 1. Four writers PUT the same 30 new Observations at the same moment.
    const results = await Promise.all(
      [70, 71, 72, 73].map((v) =>
        store.writeObservations(ids.map((id) => observation(id, patient, v))),
      ),
    );
    // 2. Every entry of every writer is accepted (conflicts retried inside the store).
    for (const outcomes of results) expect(outcomes.every((o) => o.ok)).toBe(true);
    // 3. The server holds one Observation per id.
    const stored = await store.readObservations(ids);
    expect(stored.map((o) => o.id).sort()).toEqual([...ids].sort());
  });

  it('an id twice in one call is written once and both entries get its outcome', async () => {
    const id = uniqueId('o-twice');
    const outcomes = await store.writeObservations([
      observation(id, patient, 60),
      observation(id, patient, 61),
    ]);
    expect(outcomes).toHaveLength(2);
    expect(outcomes.every((o) => o.ok)).toBe(true);
    const [stored] = await store.readObservations([id]);
    expect(stored?.valueQuantity?.value).toBe(61);
  });
});

describe('concurrent jobs sharing Bundles (group commit)', () => {
  it('ten small jobs share transactions; one bad entry fails only itself', async () => {
    // 1. One Bundle slot, so the jobs that wait for it share the next Bundle.
    const bundles: number[] = [];
    const shared = createFhirStore(gateway, {
      limit: createAdaptiveLimit({ max: 1, initial: 1 }),
      maxEntries: 50,
      onBundle: (parts) => bundles.push(parts),
    });
    const sharedStage = createFhirWriterStage({
      config: loadConfig({}, { fhir: { url: fhirUrl, batchSize: 50 } }),
      store: shared,
      fhir: gateway,
      associationSync: { sync: () => Promise.resolve() },
      log: createLogger('silent'),
    });
    const jobs = Array.from({ length: 10 }, () => [0, 1, 2].map(() => uniqueId('o-gc')));
    const badId = jobs[6]![1]!;
    const results = await Promise.all(
      jobs.map((ids) =>
        sharedStage.run({
          id: uniqueId('job'),
          data: {
            traceId: uniqueId('tr'),
            patients: [],
            devices: [],
            observations: ids
              .map((id) => (id === badId ? observation(id, patient, 'seventy') : observation(id)))
              .map(envelope),
            messages: [],
          },
        }),
      ),
    );

    // 2. Fewer transactions than jobs, and at least one Bundle held several jobs.
    expect(Math.max(...bundles)).toBeGreaterThan(1);
    // 3. Only the bad entry is a dead letter; every other entry of every job committed.
    const dead = results.flatMap((r) => r.deadLetters);
    expect(dead).toHaveLength(1);
    expect(dead[0]!.error.code).toBe('FhirRejected');
    expect(JSON.stringify(dead[0])).toContain(badId);
    for (const r of results) expect(r.retry).toBeUndefined();
    const good = jobs.flat().filter((id) => id !== badId);
    const stored = await store.readObservations(good);
    expect(stored.map((o) => o.id).sort()).toEqual([...good].sort());
  });
});
