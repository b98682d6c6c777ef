/**
 * The stages' decisions (workers/stage.ts), with fakes for their ports — no
 * Redis, no HAPI, no ClickHouse: for each stage, a plain job, a partly
 * transient one, a bad entry, an unexpected error, and a whole-job failure.
 * The templates are the shipped library (the pure mapping core).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Observation } from 'fhir/r4.js';
import { beforeAll, describe, expect, it } from 'vitest';
import type { AnalyticsStore, FlattenedObservation } from '../../src/clickhouse/index.js';
import { loadConfig } from '../../src/config.js';
import { PipelineError } from '../../src/errors.js';
import type { FhirGateway } from '../../src/fhir/gateway.js';
import type { IdentityService } from '../../src/fhir/identity.js';
import type { EntryOutcome, FhirStore } from '../../src/fhir/store.js';
import { createLogger } from '../../src/logger.js';
import { bindingResolver, loadMappings, type MappingSet } from '../../src/mapping/index.js';
import type {
  AnalyticsJobData,
  FhirJobData,
  IngestJobData,
  MessageOutcome,
  ObservationEnvelope,
  TelemetryMessage,
} from '../../src/queues.js';
import { createAnalyticsStage } from '../../workers/analytics-mirror.js';
import { createFhirWriterStage } from '../../workers/fhir-writer.js';
import { createNormalizeStage } from '../../workers/normalize.js';

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../mappings');
const config = loadConfig({});
const log = createLogger('silent');
let mappings: MappingSet;

beforeAll(async () => {
  const r = await loadMappings(dir);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  mappings = r.mappings;
});

const now = Date.now();
function message(id: string, deviceId: string, body: unknown): TelemetryMessage {
  return {
    id,
    deviceId,
    topic: `devices/${deviceId}/telemetry`,
    qos: 1,
    receivedAt: now,
    payload: typeof body === 'string' ? body : JSON.stringify(body),
    encoding: 'utf8',
  };
}
const hr = (bpm: number, at = now - 60_000) => ({
  timestamp: new Date(at).toISOString(),
  heartRate: bpm,
});

/**
 * Identity with fixed patients: `p-<device>`. A device id listed in `fail`
 * makes its resolution throw that error.
 */
function identity(fail: Record<string, Error> = {}): IdentityService {
  return {
    forJob: () =>
      Promise.resolve({
        forMessage: (deviceId: string) => {
          const error = fail[deviceId];
          if (error) return Promise.reject(error);
          return Promise.resolve({
            resolve: bindingResolver({ patientId: `p-${deviceId}` }),
            patients: () => [
              {
                id: `p-${deviceId}`,
                identifier: { system: 'urn:iomt:patient', value: `p-${deviceId}` },
                create: true,
              },
            ],
            devices: () => [deviceId],
          });
        },
      }),
  };
}

const normalize = (fail: Record<string, Error> = {}) =>
  createNormalizeStage({ config, identity: identity(fail), mappings: () => mappings, log });

describe('the normalize stage', () => {
  it('a plain batch: one FHIR job with every Observation, outcomes pending', async () => {
    const data: IngestJobData = {
      traceId: 't1',
      messages: [message('m1', 'd1', hr(70)), message('m2', 'd2', hr(71))],
    };
    const r = await normalize().run({ id: 'j1', data });
    expect(r.deadLetters).toEqual([]);
    expect(r.outcomes).toEqual([]);
    expect(r.retry).toBeUndefined();
    expect(r.next).toHaveLength(1);
    const next = r.next[0]!;
    expect(next.queue).toBe('fhir');
    expect(next.jobId).toMatch(/^n-j1-[0-9a-f]+$/);
    const fhir = next.data as FhirJobData;
    expect(fhir.observations.map((o) => o.observation.subject?.reference)).toEqual([
      'Patient/p-d1',
      'Patient/p-d2',
    ]);
    expect(fhir.messages?.map((m) => [m.message.id, m.outcome, m.observationCount])).toEqual([
      ['m1', 'processed', 1],
      ['m2', 'processed', 1],
    ]);
    // The same job decided again names the same next job (a retried job adds it once).
    expect((await normalize().run({ id: 'j1', data })).next[0]!.jobId).toBe(next.jobId);
  });

  it('a bad message is dead-lettered alone, with its code and outcome; its neighbour goes on', async () => {
    const r = await normalize().run({
      id: 'j2',
      data: {
        traceId: 't2',
        messages: [message('m1', 'd1', '{"heartRate": 7'), message('m2', 'd2', hr(72))],
      },
    });
    expect(r.deadLetters.map((d) => [d.message?.id, d.error.code])).toEqual([
      ['m1', 'InvalidPayload'],
    ]);
    expect(r.outcomes.map((o) => [o.message.id, o.outcome, o.errorCode])).toEqual([
      ['m1', 'dead_lettered', 'InvalidPayload'],
    ]);
    expect((r.next[0]!.data as FhirJobData).messages?.map((m) => m.message.id)).toEqual(['m2']);
  });

  it('an unexpected error in one message dead-letters that message as Internal, not the batch', async () => {
    const r = await normalize({ d1: new TypeError('boom') }).run({
      id: 'j3',
      data: { traceId: 't3', messages: [message('m1', 'd1', hr(70)), message('m2', 'd2', hr(71))] },
    });
    expect(r.deadLetters.map((d) => [d.message?.id, d.error.code])).toEqual([['m1', 'Internal']]);
    expect(r.retry).toBeUndefined();
    expect((r.next[0]!.data as FhirJobData).observations).toHaveLength(1);
  });

  it('a transient failure of one message retries that message alone', async () => {
    const r = await normalize({ d1: new PipelineError('FhirUnavailable', 'lookup timed out') }).run(
      {
        id: 'j4',
        data: {
          traceId: 't4',
          messages: [message('m1', 'd1', hr(70)), message('m2', 'd2', hr(71))],
        },
      },
    );
    expect(r.retry?.error.code).toBe('FhirUnavailable');
    expect(r.retry?.data.messages.map((m) => m.id)).toEqual(['m1']);
    expect(r.deadLetters).toEqual([]);
    expect((r.next[0]!.data as FhirJobData).messages?.map((m) => m.message.id)).toEqual(['m2']);
  });

  it('a whole-job failure leaves every message dead-lettered with its outcome', () => {
    const data: IngestJobData = {
      traceId: 't5',
      messages: [message('m1', 'd1', hr(70)), message('m2', 'd2', hr(71))],
    };
    const r = normalize().wholeJobFailure({ id: 'j5', data }, new PipelineError('Internal', 'bug'));
    expect(r.deadLetters.map((d) => d.message?.id)).toEqual(['m1', 'm2']);
    expect(r.outcomes.map((o) => [o.message.id, o.outcome, o.errorCode])).toEqual([
      ['m1', 'dead_lettered', 'Internal'],
      ['m2', 'dead_lettered', 'Internal'],
    ]);
    expect(r.next).toEqual([]);
  });
});

// ---- the FHIR stage --------------------------------------------------------

function envelope(id: string, messageId: string): ObservationEnvelope {
  return {
    observation: {
      resourceType: 'Observation',
      id,
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
      subject: { reference: 'Patient/p1' },
      effectiveDateTime: new Date(now - 60_000).toISOString(),
      valueQuantity: { value: 70, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    },
    provenance: {
      messageId,
      deviceId: 'd1',
      receivedAt: now,
      templateName: 'heartrate',
      templateVersion: 'v1',
    },
  };
}

function pending(messageId: string, observationCount = 1): MessageOutcome {
  return {
    message: message(messageId, 'd1', hr(70)),
    patientId: 'p1',
    outcome: 'processed',
    observationCount,
    templateVersion: 'v1',
    decidedAt: now,
  };
}

/** A FHIR store whose batch answers per Observation id: ok, refused, transient, or throws. */
function fhirStore(
  answer: (o: Observation) => 'ok' | 'refused' | 'transient',
  whole?: PipelineError,
): FhirStore {
  return {
    ensurePatients: () => Promise.resolve(),
    patientExists: () => Promise.resolve(true),
    readObservations: () => Promise.resolve([]),
    writeObservations: (obs) => {
      if (whole) return Promise.reject(whole);
      return Promise.resolve(
        obs.map((o): EntryOutcome => {
          const a = answer(o);
          if (a === 'ok')
            return {
              ok: true,
              status: 201,
              created: true,
              versionId: '1',
              resource: { ...o, meta: { versionId: '1', lastUpdated: new Date().toISOString() } },
            };
          return {
            ok: false,
            error:
              a === 'refused'
                ? new PipelineError('FhirRejected', `Observation/${o.id}: HTTP 422`)
                : new PipelineError('FhirUnavailable', `Observation/${o.id}: HTTP 503`),
          };
        }),
      );
    },
  };
}

const fhirStage = (
  store: FhirStore,
  sync: (id: string) => Promise<void> = () => Promise.resolve(),
) =>
  createFhirWriterStage({
    config,
    store,
    fhir: {} as FhirGateway, // no grouped Observations here: never asked
    associationSync: { sync },
    log,
  });

const fhirJob = (envs: ObservationEnvelope[], messages: MessageOutcome[]): FhirJobData => ({
  traceId: 'tf',
  patients: [],
  devices: [],
  observations: envs,
  messages,
});

describe('the FHIR stage', () => {
  it('a plain batch: every Observation to the mirror with its message settled', async () => {
    const r = await fhirStage(fhirStore(() => 'ok')).run({
      id: 'f1',
      data: fhirJob([envelope('o1', 'm1'), envelope('o2', 'm2')], [pending('m1'), pending('m2')]),
    });
    expect(r.retry).toBeUndefined();
    expect(r.deadLetters).toEqual([]);
    const a = r.next[0]!.data as AnalyticsJobData;
    expect(a.observations.map((o) => o.observation.id)).toEqual(['o1', 'o2']);
    expect(a.messages?.map((m) => [m.message.id, m.outcome])).toEqual([
      ['m1', 'processed'],
      ['m2', 'processed'],
    ]);
  });

  it('a refused entry is dead-lettered alone, keeping its message outcome for a replay', async () => {
    const r = await fhirStage(fhirStore((o) => (o.id === 'o1' ? 'refused' : 'ok'))).run({
      id: 'f2',
      data: fhirJob([envelope('o1', 'm1'), envelope('o2', 'm2')], [pending('m1'), pending('m2')]),
    });
    expect(
      r.deadLetters.map((d) => [
        d.observation?.observation.id,
        d.error.code,
        d.outcome?.message.id,
      ]),
    ).toEqual([['o1', 'FhirRejected', 'm1']]);
    const a = r.next[0]!.data as AnalyticsJobData;
    expect(a.observations.map((o) => o.observation.id)).toEqual(['o2']);
    expect(a.messages?.map((m) => [m.message.id, m.outcome, m.errorCode])).toEqual([
      ['m1', 'dead_lettered', 'FhirRejected'],
      ['m2', 'processed', undefined],
    ]);
  });

  it('only the transient entries are retried; their messages stay pending', async () => {
    const r = await fhirStage(fhirStore((o) => (o.id === 'o2' ? 'transient' : 'ok'))).run({
      id: 'f3',
      data: fhirJob([envelope('o1', 'm1'), envelope('o2', 'm2')], [pending('m1'), pending('m2')]),
    });
    expect(r.retry?.error.code).toBe('FhirUnavailable');
    expect(r.retry?.data.observations.map((o) => o.observation.id)).toEqual(['o2']);
    expect(r.retry?.data.messages?.map((m) => m.message.id)).toEqual(['m2']);
    expect((r.next[0]!.data as AnalyticsJobData).observations.map((o) => o.observation.id)).toEqual(
      ['o1'],
    );
  });

  it('a server that cannot be reached: the whole batch is the remainder', async () => {
    const down = new PipelineError('FhirUnavailable', 'batch: ECONNREFUSED');
    const r = await fhirStage(fhirStore(() => 'ok', down)).run({
      id: 'f4',
      data: fhirJob([envelope('o1', 'm1')], [pending('m1')]),
    });
    expect(r.retry?.data.observations).toHaveLength(1);
    expect(r.next).toEqual([]);
    expect(r.deadLetters).toEqual([]);
  });

  it('an association sync refused for good is dead-lettered; the Observations go on', async () => {
    const r = await fhirStage(
      fhirStore(() => 'ok'),
      (id) =>
        id === 'bad'
          ? Promise.reject(new PipelineError('PatientNotFound', 'missing'))
          : Promise.resolve(),
    ).run({
      id: 'f5',
      data: { ...fhirJob([envelope('o1', 'm1')], [pending('m1')]), associations: ['bad', 'good'] },
    });
    expect(r.deadLetters.map((d) => [d.associations, d.error.code])).toEqual([
      [['bad'], 'PatientNotFound'],
    ]);
    expect((r.next[0]!.data as AnalyticsJobData).observations).toHaveLength(1);
  });

  it('concurrent jobs needing one Device share one sync (and its failure); an association change syncs again after it', async () => {
    const syncs: string[] = [];
    const pendingSyncs: { resolve: () => void; reject: (e: Error) => void }[] = [];
    const stage = fhirStage(
      fhirStore(() => 'ok'),
      (id) => {
        syncs.push(id);
        return new Promise<void>((resolve, reject) => pendingSyncs.push({ resolve, reject }));
      },
    );
    const job = (id: string, data: Partial<FhirJobData>) =>
      stage.run({
        id,
        data: { ...fhirJob([envelope(`o-${id}`, `m-${id}`)], [pending(`m-${id}`)]), ...data },
      });
    const settle = () => new Promise((r) => setImmediate(r));

    // Five jobs at once need Device d1: one sync; a transient failure reaches all five.
    const first = [1, 2, 3, 4, 5].map((n) => job(`a${n}`, { devices: ['d1'] }));
    await settle();
    expect(syncs).toEqual(['d1']);
    pendingSyncs.shift()!.reject(new PipelineError('FhirUnavailable', 'read Device: ECONNREFUSED'));
    for (const r of await Promise.all(first)) expect(r.retry?.error.code).toBe('FhirUnavailable');

    // Again: one sync, and an association change arriving meanwhile waits for it, then syncs anew.
    const again = [1, 2, 3].map((n) => job(`b${n}`, { devices: ['d1'] }));
    const change = job('c1', { associations: ['d1'] });
    await settle();
    expect(syncs).toEqual(['d1', 'd1']);
    pendingSyncs.shift()!.resolve();
    await settle();
    expect(syncs).toEqual(['d1', 'd1', 'd1']);
    pendingSyncs.shift()!.resolve();
    for (const r of await Promise.all([...again, change])) {
      expect(r.retry).toBeUndefined();
      expect(r.deadLetters).toEqual([]);
    }
    // The Device is known now: a later job syncs nothing.
    await job('d1', { devices: ['d1'] });
    expect(syncs).toHaveLength(3);
  });

  it('a whole-job failure dead-letters every Observation and settles every message', () => {
    const r = fhirStage(fhirStore(() => 'ok')).wholeJobFailure(
      { id: 'f6', data: fhirJob([envelope('o1', 'm1'), envelope('o2', 'm1')], [pending('m1', 2)]) },
      new PipelineError('FhirUnavailable', 'retries exhausted'),
    );
    expect(r.deadLetters.map((d) => d.observation?.observation.id)).toEqual(['o1', 'o2']);
    expect(r.outcomes.map((o) => [o.message.id, o.outcome, o.errorCode])).toEqual([
      ['m1', 'dead_lettered', 'FhirUnavailable'],
    ]);
  });
});

// ---- the analytics stage ---------------------------------------------------

/** A ClickHouse store that refuses any insert holding a refused id, or is down. */
function analyticsStore(refuse: ReadonlySet<string>, down = false) {
  const inserted: string[] = [];
  const messages: MessageOutcome[] = [];
  /** The Observation ids of each insert statement (refused ones included). */
  const inserts: string[][] = [];
  const store = {
    migrate: () => Promise.resolve(),
    insertFlattened: (flats: readonly FlattenedObservation[]) => {
      if (flats.length > 0) inserts.push(flats.map((f) => f.observation.id));
      if (down) return Promise.reject(new PipelineError('ClickHouseUnavailable', 'down'));
      if (flats.some((f) => refuse.has(f.observation.id)))
        return Promise.reject(new PipelineError('ClickHouseRejected', 'refused a write'));
      inserted.push(...flats.map((f) => f.observation.id));
      return Promise.resolve();
    },
    insertMessages: (m: readonly MessageOutcome[]) => {
      messages.push(...m);
      return Promise.resolve();
    },
    insertAssociations: () => Promise.resolve(),
  } as unknown as AnalyticsStore;
  return { store, inserted, messages, inserts };
}

const stored = (id: string, messageId: string): ObservationEnvelope => {
  const e = envelope(id, messageId);
  return {
    ...e,
    observation: {
      ...e.observation,
      meta: { versionId: '1', lastUpdated: new Date().toISOString() },
    },
  };
};

describe('the analytics stage', () => {
  const processed = (id: string) => pending(id);

  it('a plain batch is inserted with its message outcomes', async () => {
    const s = analyticsStore(new Set());
    const r = await createAnalyticsStage({ store: s.store, log }).run({
      id: 'a1',
      data: {
        traceId: 'ta',
        committedAt: now,
        observations: [stored('o1', 'm1')],
        messages: [processed('m1')],
      },
    });
    expect(r.deadLetters).toEqual([]);
    expect(s.inserted).toEqual(['o1']);
    expect(s.messages.map((m) => m.outcome)).toEqual(['processed']);
  });

  it('an Observation that cannot be flattened, and one the engine refuses, are dead-lettered alone; their messages say so', async () => {
    const s = analyticsStore(new Set(['o3']));
    const bad = stored('o2', 'm2');
    const r = await createAnalyticsStage({ store: s.store, log }).run({
      id: 'a2',
      data: {
        traceId: 'ta',
        committedAt: now,
        observations: [
          stored('o1', 'm1'),
          { ...bad, observation: { ...bad.observation, effectiveDateTime: 'not a date' } },
          stored('o3', 'm3'),
          stored('o4', 'm4'),
        ],
        messages: ['m1', 'm2', 'm3', 'm4'].map(processed),
      },
    });
    expect(r.deadLetters.map((d) => [d.observation?.observation.id, d.error.code]).sort()).toEqual([
      ['o2', 'InvalidTimestamp'],
      ['o3', 'ClickHouseRejected'],
    ]);
    expect(s.inserted.sort()).toEqual(['o1', 'o4']);
    expect(s.messages.map((m) => [m.message.id, m.outcome, m.errorStage])).toEqual([
      ['m1', 'processed', undefined],
      ['m2', 'dead_lettered', 'analytics'],
      ['m3', 'dead_lettered', 'analytics'],
      ['m4', 'processed', undefined],
    ]);
  });

  /** A mirror job of these Observations, each of its own message, processed. */
  const mirrorJob =
    (stage: ReturnType<typeof createAnalyticsStage>) => (id: string, obs: string[]) =>
      stage.run({
        id,
        data: {
          traceId: 'ta',
          committedAt: now,
          observations: obs.map((o) => stored(o, `m-${o}`)),
          messages: obs.map((o) => processed(`m-${o}`)),
        },
      });

  it('jobs arriving within the linger share one insert; a refused shared insert is retried per job, and only the bad job isolates its Observation', async () => {
    const s = analyticsStore(new Set(['b2']));
    const stage = createAnalyticsStage({
      store: s.store,
      log,
      insert: { lingerMs: 60_000, lingerJobs: 3 },
    });
    const job = mirrorJob(stage);
    // Three jobs: the third is the last the stage can hold, so the insert goes then.
    const [a, b, c] = await Promise.all([
      job('j1', ['a1']),
      job('j2', ['b1', 'b2']),
      job('j3', ['c1']),
    ]);
    expect(s.inserts[0]).toEqual(['a1', 'b1', 'b2', 'c1']);
    // Refused whole: each job alone, then j2's halves.
    expect(s.inserts.slice(1)).toEqual([['a1'], ['b1', 'b2'], ['c1'], ['b1'], ['b2']]);
    expect(a.deadLetters).toEqual([]);
    expect(c.deadLetters).toEqual([]);
    expect(b.deadLetters.map((d) => [d.observation?.observation.id, d.error.code])).toEqual([
      ['b2', 'ClickHouseRejected'],
    ]);
    expect(s.inserted.sort()).toEqual(['a1', 'b1', 'c1']);
    expect(
      s.messages.map((m) => [m.message.id, m.outcome]).sort(([x], [y]) => (x! < y! ? -1 : 1)),
    ).toEqual([
      ['m-a1', 'processed'],
      ['m-b1', 'processed'],
      ['m-b2', 'dead_lettered'],
      ['m-c1', 'processed'],
    ]);
  });

  it('an insert goes as soon as lingerRows rows and outcomes wait, without waiting out the linger', async () => {
    const s = analyticsStore(new Set());
    const stage = createAnalyticsStage({
      store: s.store,
      log,
      insert: { lingerMs: 60_000, lingerJobs: 32, lingerRows: 6 },
    });
    const job = mirrorJob(stage);
    // Two Observations and two outcomes each: the second job brings 8 entries waiting.
    const [a, b] = await Promise.all([job('j1', ['a1', 'a2']), job('j2', ['b1', 'b2'])]);
    expect(s.inserts).toEqual([['a1', 'a2', 'b1', 'b2']]);
    expect([...a.deadLetters, ...b.deadLetters]).toEqual([]);
  });

  it('ClickHouse down: the whole job is the remainder', async () => {
    const s = analyticsStore(new Set(), true);
    const data: AnalyticsJobData = {
      traceId: 'ta',
      committedAt: now,
      observations: [stored('o1', 'm1')],
    };
    const r = await createAnalyticsStage({ store: s.store, log }).run({ id: 'a3', data });
    expect(r.retry?.error.code).toBe('ClickHouseUnavailable');
    expect(r.retry?.data).toEqual(data);
  });

  it('a whole-job failure dead-letters each Observation and settles its message', () => {
    const s = analyticsStore(new Set());
    const r = createAnalyticsStage({ store: s.store, log }).wholeJobFailure(
      {
        id: 'a4',
        data: {
          traceId: 'ta',
          committedAt: now,
          observations: [stored('o1', 'm1')],
          messages: [processed('m1')],
        },
      },
      new PipelineError('ClickHouseUnavailable', 'retries exhausted'),
    );
    expect(r.deadLetters.map((d) => d.observation?.observation.id)).toEqual(['o1']);
    expect(r.outcomes.map((o) => [o.message.id, o.outcome, o.errorCode])).toEqual([
      ['m1', 'dead_lettered', 'ClickHouseUnavailable'],
    ]);
  });
});
