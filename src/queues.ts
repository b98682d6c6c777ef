/**
 * Queue names and the data each job carries. Every arrow of the data flow is a
 * queue hop, so each stage retries on its own. Jobs carry batches: a BullMQ job
 * costs several Redis round trips, a message must cost a fraction of one.
 */
import type { Observation } from 'fhir/r4.js';
import type { DeviceAssociationRow } from './clickhouse/associations.js';
import type { ErrorCode, Stage } from './errors.js';

export const QUEUE = {
  ingest: 'ingest',
  fhir: 'fhir',
  analytics: 'analytics',
  deadLetter: 'dead-letter',
} as const;

export type QueueName = (typeof QUEUE)[keyof typeof QUEUE];

/** The stages a worker runs, each the consumer of one queue (WORKER_STAGES). */
export const STAGE_QUEUE = {
  normalize: QUEUE.ingest,
  fhir: QUEUE.fhir,
  analytics: QUEUE.analytics,
} as const;

export type StageName = keyof typeof STAGE_QUEUE;

/**
 * Job ids and dead-letter keys: deterministic, so that a job retried after a
 * crash adds the same next jobs and dead letters again, and BullMQ keeps one of
 * each (BullMQ refuses ids containing ":", its key separator).
 */
export const JOB_ID = {
  /** The FHIR job a normalize job makes of `messageIds` (several if it retries a remainder). */
  fhirOf: (ingestJobId: string, digest: string) => `n-${ingestJobId}-${digest}`,
  /** The analytics job a FHIR job makes of what it committed and settled. */
  analyticsOf: (fhirJobId: string, digest: string) => `f-${fhirJobId}-${digest}`,
  /** Message outcomes a job settled on its own. */
  outcomesOf: (stage: StageName, jobId: string, digest: string) => `m-${stage}-${jobId}-${digest}`,
} as const;

/** A dead letter's key from its parts (stage, job, item): stable across retries of the job. */
export function deadLetterKey(...parts: readonly string[]): string {
  return parts.join('_').replaceAll(':', '_');
}

/** One MQTT PUBLISH as received, before any interpretation. */
export interface TelemetryMessage {
  /** Unique per message (broker id + sequence); names the message in logs and dead letters. */
  readonly id: string;
  /** The authenticated device: identity comes from CONNECT, never from the payload. */
  readonly deviceId: string;
  readonly topic: string;
  readonly qos: 0 | 1 | 2;
  /** Broker receipt time, epoch milliseconds. */
  readonly receivedAt: number;
  /** The payload as UTF-8 text, or base64 when it is not valid UTF-8. */
  readonly payload: string;
  readonly encoding: 'utf8' | 'base64';
}

/**
 * Times a job's remainder was rescheduled after transient failures of some of
 * its entries (its own count: BullMQ's attempts are left for whole-job crashes).
 */
export interface Retried {
  readonly transientRetries?: number;
}

/**
 * What ties a job to its trace. `traceId` names the batch in logs and dead
 * letters (a random UUID, or the OpenTelemetry trace id when tracing is on);
 * `traceparent` (W3C Trace Context, tracing on only) is the span that added
 * the job: the next stage's span is its child (src/observability/tracing.ts).
 */
export interface Traced {
  readonly traceId: string;
  readonly traceparent?: string;
}

export interface IngestJobData extends Retried, Traced {
  readonly messages: readonly TelemetryMessage[];
}

/** Where an Observation came from: kept beside it until ClickHouse. */
export interface ObservationProvenance {
  readonly messageId: string;
  /** The authenticated device that published the message. */
  readonly deviceId: string;
  /** The device that took the reading, when a gateway relayed it (else deviceId). */
  readonly readingDeviceId?: string;
  readonly receivedAt: number;
  readonly templateName: string;
  readonly templateVersion: string;
  /** Set when a gateway published the reading for another device (its device id). */
  readonly gatewayId?: string;
}

export interface ObservationEnvelope {
  readonly observation: Observation;
  readonly provenance: ObservationProvenance;
  /**
   * A grouped Observation (hourly/daily window, correlation id): the FHIR writer
   * merges it into the stored one (read, merge, PUT with If-Match) instead of
   * replacing it.
   */
  readonly merge?: boolean;
}

/** A Patient the FHIR writer ensures exists before the Observations that reference it. */
export interface PatientRef {
  readonly id: string;
  /** The identifier to stamp on a created Patient. */
  readonly identifier: { readonly system: string; readonly value: string };
  /**
   * Whether the writer may create it when it is missing: FHIR_CREATE_PATIENTS,
   * or an association that said the patient is new. Otherwise a missing Patient
   * is PatientNotFound, never a phantom Patient made from a typo.
   */
  readonly create: boolean;
}

/**
 * One message's fate, for the analytics table device_messages (the audit trail).
 * The normalize stage decides it for messages it dead-letters; the FHIR writer
 * for the others, once their Observations are written or refused.
 */
export interface MessageOutcome {
  readonly message: TelemetryMessage;
  /**
   * The patient its readings were attributed to ('' when none was, or when
   * they belong to several patients, as a gateway's may).
   */
  readonly patientId: string;
  readonly outcome: 'processed' | 'dead_lettered';
  readonly errorCode?: ErrorCode;
  readonly errorStage?: Stage;
  readonly observationCount: number;
  readonly templateVersion: string;
  /** When the outcome was decided, epoch milliseconds (the later verdict wins). */
  readonly decidedAt: number;
}

export interface FhirJobData extends Retried, Traced {
  /** Patients the Observations reference (Create mode; empty in the Lookup modes). */
  readonly patients: readonly PatientRef[];
  /**
   * Devices (MQTT ids) the Observations reference (Create mode): their FHIR
   * Device is written from their association history before the Observations.
   */
  readonly devices: readonly string[];
  readonly observations: readonly ObservationEnvelope[];
  /** The messages these Observations came from, outcome pending until written. */
  readonly messages?: readonly MessageOutcome[];
  /**
   * Devices whose association history FHIR must follow: Device.patient and a
   * DeviceUseStatement per period (fhir/associations.ts).
   */
  readonly associations?: readonly string[];
}

export interface AnalyticsJobData extends Retried, Traced {
  /** FHIR commit time, epoch milliseconds. */
  readonly committedAt: number;
  readonly observations: readonly ObservationEnvelope[];
  /** Message outcomes for device_messages. */
  readonly messages?: readonly MessageOutcome[];
  /** device_associations rows (clickhouse/associations.ts): a device's whole history each time. */
  readonly associations?: readonly DeviceAssociationRow[];
}

export interface DeadLetterJobData extends Traced {
  readonly stage: Stage;
  readonly code: ErrorCode;
  /** The cause's message: written by us, never payload values. */
  readonly reason: string;
  readonly deviceId: string;
  readonly failedAt: number;
  /** The raw message, for replay. */
  readonly message?: TelemetryMessage;
  /** Or the resource that failed at the FHIR stage. */
  readonly observation?: ObservationEnvelope;
  /** Or the devices whose association history could not be written to FHIR. */
  readonly associations?: readonly string[];
  /**
   * With an Observation: its message's outcome as it stood before the failure, so
   * that a replay that succeeds settles the message (device_messages) again.
   */
  readonly outcome?: MessageOutcome;
}
