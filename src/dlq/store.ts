/**
 * The dead-letter queue as operators see it: list and show what failed, replay
 * it into the stage that failed, purge it. Adapter over the BullMQ
 * "dead-letter" queue (no worker consumes it, so every entry waits there).
 *
 * Replay routes by content and stage:
 *  - a raw message (it failed while being normalized, or before) → "ingest":
 *    it is mapped again with the templates active now (after a template fix),
 *    and attributed again by its reading time — so a reading held for having no
 *    association lands on the patient of an association recorded since;
 *  - an Observation that failed at the FHIR stage → "fhir": written again as
 *    it was (after the server-side cause is fixed), with its Patient and Device
 *    ensured but NEVER an association written: a replay reads associations.
 *    In Create mode each Observation's patient is checked against the
 *    association history at its own time first; one that no longer matches (a
 *    correction was recorded since) is not replayed (AssociationChanged);
 *  - an Observation that failed at the analytics stage → "analytics";
 *  - a device whose association history could not be written → "fhir" again.
 * Replayed entries leave the dead-letter queue only after their new job is
 * stored; a replay that fails again comes back as a new dead letter. Writes are
 * idempotent, so replaying twice does no harm.
 */
import { randomUUID } from 'node:crypto';
import type { Job } from 'bullmq';
import type { Observation } from 'fhir/r4.js';
import { associatedDuring, patientPeriods } from '../devices/associations.js';
import type { AssociationReader } from '../devices/association-store.js';
import { PipelineError, type ErrorCode, type Stage } from '../errors.js';
import { patientRefs } from '../fhir/associations.js';
import type { Queues } from '../queue-runtime.js';
import type {
  DeadLetterJobData,
  MessageOutcome,
  ObservationEnvelope,
  PatientRef,
} from '../queues.js';

export interface DeadLetterFilter {
  readonly code?: string;
  readonly deviceId?: string;
  readonly stage?: string;
  /** failedAt at or after, epoch ms. */
  readonly since?: number;
  /** failedAt before, epoch ms. */
  readonly until?: number;
  /** Exact dead-letter ids; other criteria still apply. */
  readonly ids?: readonly string[];
}

export interface DeadLetterSummary {
  readonly id: string;
  readonly failedAt: number;
  readonly stage: Stage;
  readonly code: ErrorCode;
  readonly deviceId: string;
  readonly reason: string;
  readonly holds: 'message' | 'observation' | 'associations' | 'nothing';
  readonly traceId: string;
}

export interface ReplayResult {
  readonly replayed: number;
  readonly byStage: Readonly<Record<'normalize' | 'fhir' | 'analytics', number>>;
  readonly skipped: readonly { id: string; why: string }[];
}

export interface DeadLetterStoreOptions {
  /**
   * Create mode: the association histories, to check each replayed
   * Observation's patient at its time and to know which Patients may be
   * created. Absent (the Lookup modes): FHIR is the source of truth and a
   * replay ensures nothing.
   */
  readonly associations?: {
    readonly reader: AssociationReader;
    /** FHIR_CREATE_PATIENTS */
    readonly createPatients: boolean;
  };
  /** Entries per replayed job (jobs carry batches). */
  readonly batchSize?: number;
}

const PAGE = 1000;

export function matches(d: DeadLetterJobData, id: string, f: DeadLetterFilter): boolean {
  if (f.ids && !f.ids.includes(id)) return false;
  if (f.code !== undefined && d.code !== f.code) return false;
  if (f.deviceId !== undefined && d.deviceId !== f.deviceId) return false;
  if (f.stage !== undefined && d.stage !== f.stage) return false;
  if (f.since !== undefined && d.failedAt < f.since) return false;
  if (f.until !== undefined && d.failedAt >= f.until) return false;
  return true;
}

function summary(job: Job<DeadLetterJobData>): DeadLetterSummary {
  const d = job.data;
  return {
    id: job.id ?? '',
    failedAt: d.failedAt,
    stage: d.stage,
    code: d.code,
    deviceId: d.deviceId,
    reason: d.reason,
    holds: d.message
      ? 'message'
      : d.observation
        ? 'observation'
        : d.associations
          ? 'associations'
          : 'nothing',
    traceId: d.traceId,
  };
}

/** The effective time of an Observation, [start, end) in epoch ms. */
function effectiveRange(o: Observation): [number, number] | undefined {
  const start = Date.parse(
    o.effectiveDateTime ?? o.effectivePeriod?.start ?? o.effectiveInstant ?? '',
  );
  if (Number.isNaN(start)) return undefined;
  const end = Date.parse(o.effectivePeriod?.end ?? '');
  return [start, Number.isNaN(end) ? start : end];
}

/** The messages' outcomes the dead letters kept, once per message. */
function outcomesOf(jobs: readonly Job<DeadLetterJobData>[]): MessageOutcome[] {
  const byMessage = new Map<string, MessageOutcome>();
  for (const j of jobs) {
    const o = j.data.outcome;
    if (o && !byMessage.has(o.message.id)) byMessage.set(o.message.id, o);
  }
  return [...byMessage.values()];
}

function readingDevice(env: ObservationEnvelope): string {
  return env.provenance.readingDeviceId ?? env.provenance.deviceId;
}

function patientOf(env: ObservationEnvelope): string {
  return env.observation.subject?.reference?.replace(/^Patient\//, '') ?? '';
}

export class DeadLetterStore {
  readonly #queues: Queues;
  readonly #opts: DeadLetterStoreOptions & { readonly batchSize: number };

  constructor(queues: Queues, options: DeadLetterStoreOptions) {
    this.#queues = queues;
    this.#opts = { batchSize: 500, ...options };
  }

  /** Every dead letter matching `filter`, oldest first. */
  async #matching(filter: DeadLetterFilter): Promise<Job<DeadLetterJobData>[]> {
    const out: Job<DeadLetterJobData>[] = [];
    if (filter.ids) {
      for (const id of filter.ids) {
        const job = await this.#queues.deadLetter.getJob(id);
        if (job && matches(job.data, id, filter)) out.push(job);
      }
      return out;
    }
    for (let start = 0; ; start += PAGE) {
      const page = await this.#queues.deadLetter.getJobs(
        ['waiting'],
        start,
        start + PAGE - 1,
        true,
      );
      for (const job of page) if (job && matches(job.data, job.id ?? '', filter)) out.push(job);
      if (page.length < PAGE) break;
    }
    return out.sort((a, b) => a.data.failedAt - b.data.failedAt);
  }

  async list(filter: DeadLetterFilter = {}, limit = Infinity): Promise<DeadLetterSummary[]> {
    return (await this.#matching(filter)).slice(0, limit).map(summary);
  }

  async count(filter: DeadLetterFilter = {}): Promise<number> {
    return (await this.#matching(filter)).length;
  }

  /** The whole entry: raw payload (or Observation), reason, stage. */
  async show(id: string): Promise<DeadLetterJobData & { readonly id: string }> {
    const job = await this.#queues.deadLetter.getJob(id);
    if (!job) throw new PipelineError('DeadLetterNotFound', `no dead letter with id "${id}"`);
    return { id, ...job.data };
  }

  async replay(filter: DeadLetterFilter): Promise<ReplayResult> {
    const jobs = await this.#matching(filter);
    if (filter.ids && jobs.length === 0)
      throw new PipelineError(
        'DeadLetterNotFound',
        `no dead letter with id ${filter.ids.join(', ')}`,
      );
    const toIngest: Job<DeadLetterJobData>[] = [];
    const toFhir: Job<DeadLetterJobData>[] = [];
    const toAnalytics: Job<DeadLetterJobData>[] = [];
    const toSync: Job<DeadLetterJobData>[] = [];
    const skipped: { id: string; why: string }[] = [];
    for (const job of jobs) {
      const d = job.data;
      if (d.message) toIngest.push(job);
      else if (d.observation && d.stage === 'analytics') toAnalytics.push(job);
      else if (d.observation) toFhir.push(job);
      else if (d.associations) toSync.push(job);
      else skipped.push({ id: job.id ?? '', why: 'holds neither a message nor an Observation' });
    }
    const fhirChecked = await this.#checkAttribution(toFhir);
    skipped.push(...fhirChecked.skipped);
    const size = this.#opts.batchSize;
    for (let i = 0; i < toIngest.length; i += size) {
      const part = toIngest.slice(i, i + size);
      await this.#queues.ingest.add(
        'replay',
        { traceId: randomUUID(), messages: part.map((j) => j.data.message!) },
        { jobId: `replay-${randomUUID()}` },
      );
      await Promise.all(part.map((j) => j.remove()));
    }
    for (let i = 0; i < fhirChecked.ok.length; i += size) {
      const part = fhirChecked.ok.slice(i, i + size);
      const observations = part.map((j) => j.data.observation!);
      const { patients, devices } = fhirChecked.subjects(observations);
      await this.#queues.fhir.add(
        'replay',
        // With their messages' outcomes: a write that succeeds now settles them again.
        { traceId: randomUUID(), patients, devices, observations, messages: outcomesOf(part) },
        { jobId: `replay-${randomUUID()}` },
      );
      await Promise.all(part.map((j) => j.remove()));
    }
    for (let i = 0; i < toSync.length; i += size) {
      const part = toSync.slice(i, i + size);
      await this.#queues.fhir.add(
        'replay',
        {
          traceId: randomUUID(),
          patients: [],
          devices: [],
          observations: [],
          associations: [...new Set(part.flatMap((j) => j.data.associations ?? []))],
        },
        { jobId: `replay-${randomUUID()}` },
      );
      await Promise.all(part.map((j) => j.remove()));
    }
    for (let i = 0; i < toAnalytics.length; i += size) {
      const part = toAnalytics.slice(i, i + size);
      await this.#queues.analytics.add(
        'replay',
        {
          traceId: randomUUID(),
          committedAt: Date.now(),
          observations: part.map((j) => j.data.observation!),
          // The outcome they had before the mirror refused them, decided anew now.
          messages: outcomesOf(part).map((o) => ({ ...o, decidedAt: Date.now() })),
        },
        { jobId: `replay-${randomUUID()}` },
      );
      await Promise.all(part.map((j) => j.remove()));
    }
    const fhir = fhirChecked.ok.length + toSync.length;
    return {
      replayed: toIngest.length + fhir + toAnalytics.length,
      byStage: { normalize: toIngest.length, fhir, analytics: toAnalytics.length },
      skipped,
    };
  }

  /**
   * Create mode: keeps the FHIR-stage dead letters whose Observation names the
   * patient associated with its device at its own time, and says which
   * Patients (creatable or not) and Devices the FHIR stage must ensure.
   */
  async #checkAttribution(jobs: readonly Job<DeadLetterJobData>[]): Promise<{
    ok: Job<DeadLetterJobData>[];
    skipped: { id: string; why: string }[];
    subjects(observations: readonly ObservationEnvelope[]): {
      patients: PatientRef[];
      devices: string[];
    };
  }> {
    const assoc = this.#opts.associations;
    if (!assoc) {
      return { ok: [...jobs], skipped: [], subjects: () => ({ patients: [], devices: [] }) };
    }
    const histories = await assoc.reader.histories(
      jobs.map((j) => readingDevice(j.data.observation!)),
    );
    const ok: Job<DeadLetterJobData>[] = [];
    const skipped: { id: string; why: string }[] = [];
    for (const job of jobs) {
      const env = job.data.observation!;
      const periods = patientPeriods(histories.get(readingDevice(env)) ?? []);
      const range = effectiveRange(env.observation);
      if (range && associatedDuring(periods, patientOf(env), range[0], range[1])) ok.push(job);
      else
        skipped.push({
          id: job.id ?? '',
          why:
            'AssociationChanged: the device was not associated with the patient this Observation ' +
            'names at its time (a correction was recorded since); replay the raw message or review it',
        });
    }
    return {
      ok,
      skipped,
      subjects: (observations) => {
        const patients = new Map<string, PatientRef>();
        const devices = new Set<string>();
        for (const env of observations) {
          const device = readingDevice(env);
          devices.add(device);
          if (env.provenance.gatewayId !== undefined) devices.add(env.provenance.gatewayId);
          for (const ref of patientRefs(histories.get(device) ?? [], assoc.createPatients))
            if (ref.id === patientOf(env)) patients.set(ref.id, ref);
        }
        return { patients: [...patients.values()], devices: [...devices] };
      },
    };
  }

  /** Removes matching dead letters for good; returns how many. */
  async purge(filter: DeadLetterFilter): Promise<number> {
    const jobs = await this.#matching(filter);
    if (filter.ids && jobs.length === 0)
      throw new PipelineError(
        'DeadLetterNotFound',
        `no dead letter with id ${filter.ids.join(', ')}`,
      );
    await Promise.all(jobs.map((j) => j.remove()));
    return jobs.length;
  }
}
