/**
 * Group commit into the "ingest" queue. Messages arriving while a write is in
 * flight are gathered into the next job, so a lone device waits one Redis round
 * trip and a busy broker writes hundreds of messages per job. `enqueue` resolves
 * only once the job holding the message is stored in Redis: the broker sends a
 * QoS 1 PUBACK after that, never before.
 *
 * Contract: enqueue(message) → resolves when durable, rejects (QueueUnavailable)
 * when Redis refused the write; the caller then withholds the PUBACK.
 *
 * Tracing on: each job is one trace, whose root span ("ingest enqueue") runs
 * from its oldest message's arrival to the job stored; the job carries that
 * span as its `traceparent` and its trace id as `traceId`.
 *
 * An admission gate (backpressure.ts) may ask a job write to wait: the
 * messages keep gathering meanwhile, so the job, when it goes, takes them all
 * (up to maxMessages).
 */
import { randomUUID } from 'node:crypto';
import { PipelineError } from '../src/errors.js';
import { TRACING_OFF, type Tracing } from '../src/observability/tracing.js';
import { QUEUE, type IngestJobData, type TelemetryMessage } from '../src/queues.js';
import type { AdmissionGate } from './backpressure.js';

/** The one thing the batcher needs from a queue: store a job durably. */
export interface JobSink {
  add(name: string, data: IngestJobData): Promise<unknown>;
}

export interface IngestBatcherOptions {
  readonly sink: JobSink;
  /** Most messages per job. */
  readonly maxMessages: number;
  /** Jobs being written at once; more overlap round trips, fewer make bigger batches. */
  readonly maxInFlight?: number;
  /** Asked before each job write (backpressure); absent: jobs go at once. */
  readonly gate?: AdmissionGate;
  /** Spans per job (tracing on); absent: none. */
  readonly tracing?: Tracing;
  readonly now?: () => number;
}

interface Pending {
  readonly message: TelemetryMessage;
  /** When it arrived (for the gate's wait bound). */
  readonly at: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

export class IngestBatcher {
  readonly #sink: JobSink;
  readonly #maxMessages: number;
  readonly #maxInFlight: number;
  readonly #gate: AdmissionGate | undefined;
  readonly #tracing: Tracing;
  readonly #now: () => number;
  #pending: Pending[] = [];
  #inFlight = 0;
  #scheduled = false;
  #gateTimer: NodeJS.Timeout | undefined;
  #idleWaiters: (() => void)[] = [];

  constructor(options: IngestBatcherOptions) {
    this.#sink = options.sink;
    this.#maxMessages = options.maxMessages;
    this.#maxInFlight = options.maxInFlight ?? 2;
    this.#gate = options.gate;
    this.#tracing = options.tracing ?? TRACING_OFF;
    this.#now = options.now ?? Date.now;
  }

  /** Messages accepted but not yet durable. */
  get backlog(): number {
    return this.#pending.length;
  }

  enqueue(message: TelemetryMessage): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ message, at: this.#now(), resolve, reject });
      this.#schedule();
    });
  }

  /** Writes waiting messages now if the gate allows (the gate opened). */
  kick(): void {
    if (this.#gateTimer) clearTimeout(this.#gateTimer);
    this.#gateTimer = undefined;
    this.#flush();
  }

  /** Resolves when nothing is pending or in flight (used at shutdown). */
  drain(): Promise<void> {
    if (this.#pending.length === 0 && this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  // Wait one macrotask so that every PUBLISH parsed from the same socket read
  // joins the same job.
  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#flush();
    });
  }

  #flush(): void {
    while (this.#pending.length > 0 && this.#inFlight < this.#maxInFlight) {
      if (this.#gateTimer) return; // already waiting for the gate
      const wait = this.#gate?.permit(this.#pending[0]!.at) ?? 0;
      if (wait > 0) {
        this.#gateTimer = setTimeout(() => {
          this.#gateTimer = undefined;
          this.#flush();
        }, wait);
        return;
      }
      const batch = this.#pending.splice(0, this.#maxMessages);
      this.#inFlight++;
      const span = this.#tracing.start('ingest enqueue', {
        kind: 'producer',
        startTime: batch[0]!.at,
        attributes: {
          'messaging.system': 'bullmq',
          'messaging.operation.type': 'send',
          'messaging.destination.name': QUEUE.ingest,
          'messaging.batch.message_count': batch.length,
        },
      });
      const data: IngestJobData = {
        traceId: span.traceId ?? randomUUID(),
        ...(span.traceparent !== undefined ? { traceparent: span.traceparent } : {}),
        messages: batch.map((p) => p.message),
      };
      this.#sink
        .add('batch', data)
        .then(
          () => {
            span.end();
            for (const p of batch) p.resolve();
          },
          (err: unknown) => {
            span.fail('QueueUnavailable');
            span.end();
            const e = new PipelineError(
              'QueueUnavailable',
              `could not store messages in Redis: ${(err as Error).message}`,
              {
                cause: err,
              },
            );
            for (const p of batch) p.reject(e);
          },
        )
        .finally(() => {
          this.#inFlight--;
          if (this.#pending.length > 0) this.#flush();
          else if (this.#inFlight === 0) for (const w of this.#idleWaiters.splice(0)) w();
        });
    }
  }
}
