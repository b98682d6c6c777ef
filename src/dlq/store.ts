/**
 * The dead-letter queue as operators see it: list and show what failed, replay
 * it into the stage that failed, purge it. Adapter over the BullMQ
 * "dead-letter" queue (no worker consumes it, so every entry waits there).
 *
 * Replay routes by content and stage:
 *  - a raw message (it failed while being normalized, or before) → "ingest":
 *    it is mapped again with the templates active now (after a template fix);
 *  - an Observation that failed at the FHIR stage → "fhir": written again as
 *    it was (after the server-side cause is fixed);
 *  - an Observation that failed at the analytics stage → "analytics".
 * Replayed entries leave the dead-letter queue only after their new job is
 * stored; a replay that fails again comes back as a new dead letter. Writes are
 * idempotent, so replaying twice does no harm.
 */
import { randomUUID } from 'node:crypto';
import type { Job } from 'bullmq';
import { PipelineError, type ErrorCode, type Stage } from '../errors.js';
import type { Queues } from '../queue-runtime.js';
import type { DeadLetterJobData, ObservationEnvelope, SubjectRef } from '../queues.js';

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
  readonly holds: 'message' | 'observation' | 'nothing';
  readonly traceId: string;
}

export interface ReplayResult {
  readonly replayed: number;
  readonly byStage: Readonly<Record<'normalize' | 'fhir' | 'analytics', number>>;
  readonly skipped: readonly { id: string; why: string }[];
}

export interface DeadLetterStoreOptions {
  /** Device.identifier.system for Devices re-created on an FHIR replay. */
  readonly deviceIdentifierSystem: string;
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
    holds: d.message ? 'message' : d.observation ? 'observation' : 'nothing',
    traceId: d.traceId,
  };
}

/** The Patient and Device an Observation references, so the FHIR stage can ensure them. */
function subjectsOf(env: ObservationEnvelope, deviceSystem: string): SubjectRef[] {
  const patientId = env.observation.subject?.reference?.replace(/^Patient\//, '');
  const deviceRef = env.observation.device?.reference?.replace(/^Device\//, '');
  const out: SubjectRef[] = [];
  if (patientId) {
    out.push({
      resourceType: 'Patient',
      id: patientId,
      identifier: { system: 'urn:iomt:patient', value: patientId },
    });
  }
  if (deviceRef) {
    out.push({
      resourceType: 'Device',
      id: deviceRef,
      identifier: { system: deviceSystem, value: env.provenance.deviceId },
      ...(patientId ? { patientId } : {}),
    });
  }
  return out;
}

export class DeadLetterStore {
  readonly #queues: Queues;
  readonly #opts: Required<DeadLetterStoreOptions>;

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
    const skipped: { id: string; why: string }[] = [];
    for (const job of jobs) {
      const d = job.data;
      if (d.message) toIngest.push(job);
      else if (d.observation && d.stage === 'analytics') toAnalytics.push(job);
      else if (d.observation) toFhir.push(job);
      else skipped.push({ id: job.id ?? '', why: 'holds neither a message nor an Observation' });
    }
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
    for (let i = 0; i < toFhir.length; i += size) {
      const part = toFhir.slice(i, i + size);
      const observations = part.map((j) => j.data.observation!);
      const subjects = new Map<string, SubjectRef>();
      for (const env of observations)
        for (const s of subjectsOf(env, this.#opts.deviceIdentifierSystem))
          subjects.set(`${s.resourceType}/${s.id}`, s);
      await this.#queues.fhir.add(
        'replay',
        { traceId: randomUUID(), subjects: [...subjects.values()], observations },
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
        },
        { jobId: `replay-${randomUUID()}` },
      );
      await Promise.all(part.map((j) => j.remove()));
    }
    return {
      replayed: toIngest.length + toFhir.length + toAnalytics.length,
      byStage: { normalize: toIngest.length, fhir: toFhir.length, analytics: toAnalytics.length },
      skipped,
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
