/**
 * Queue names and the data each job carries. Every arrow of the data flow is a
 * queue hop, so each stage retries on its own. Jobs carry batches: a BullMQ job
 * costs several Redis round trips, a message must cost a fraction of one.
 */
import type { Observation } from 'fhir/r4.js';
import type { ErrorCode, Stage } from './errors.js';

export const QUEUE = {
  ingest: 'ingest',
  fhir: 'fhir',
  analytics: 'analytics',
  deadLetter: 'dead-letter',
} as const;

export type QueueName = (typeof QUEUE)[keyof typeof QUEUE];

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

export interface IngestJobData {
  readonly traceId: string;
  readonly messages: readonly TelemetryMessage[];
}

/** Where an Observation came from: kept beside it until ClickHouse. */
export interface ObservationProvenance {
  readonly messageId: string;
  readonly deviceId: string;
  readonly receivedAt: number;
  readonly templateName: string;
  readonly templateVersion: string;
}

export interface ObservationEnvelope {
  readonly observation: Observation;
  readonly provenance: ObservationProvenance;
}

/** A subject the FHIR writer ensures exists before the Observations that reference it. */
export interface SubjectRef {
  readonly resourceType: 'Patient' | 'Device';
  readonly id: string;
  /** The identifier to stamp on a created resource. */
  readonly identifier: { readonly system: string; readonly value: string };
  /** For a Device: the Patient it is bound to. */
  readonly patientId?: string;
}

export interface FhirJobData {
  readonly traceId: string;
  readonly subjects: readonly SubjectRef[];
  readonly observations: readonly ObservationEnvelope[];
}

export interface AnalyticsJobData {
  readonly traceId: string;
  /** FHIR commit time, epoch milliseconds. */
  readonly committedAt: number;
  readonly observations: readonly ObservationEnvelope[];
}

export interface DeadLetterJobData {
  readonly traceId: string;
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
}
