/**
 * Group commit for FHIR writes: the Observations of several jobs share one
 * transaction Bundle when they have to wait anyway.
 *
 * Each caller hands in a part (its chunk of Observations). A part is sent at
 * once while the adaptive limit (adaptive-limit.ts) has a free Bundle slot, so
 * at low load nothing waits for company. While every slot is busy, parts queue
 * here; when a slot frees, the next Bundle takes the waiting parts in arrival
 * order, up to `maxEntries` Observations. So at any load a Bundle carries what
 * arrived during the previous one (the server's fixed cost per request is paid
 * once for many small jobs) and no part waits behind more than one round of
 * Bundles already in flight.
 *
 * All or nothing per Bundle must not make one job's bad entry fail another's
 * good ones: when a Bundle of several parts is refused (a non-retryable
 * error), each part is sent again alone; only a part's own refusal reaches its
 * caller (who then isolates the bad entries, workers/fhir-batch.ts). A
 * transient failure (retryable) goes to every part in the Bundle: each job
 * retries its own remainder. A part never shares a Bundle with a part holding
 * one of its ids (a transaction refuses an id twice); `alone` parts are always
 * sent alone.
 *
 * Contract: write(part, alone) resolves with one result per Observation of the
 * part, in order, or rejects with the error of the request that carried it.
 * No timers; `send` does the I/O (one transaction, its own conflict retries).
 */
import type { Observation } from 'fhir/r4.js';
import { toPipelineError } from '../errors.js';
import type { AdaptiveLimit } from './adaptive-limit.js';

export interface CoalescerOptions<R> {
  /** The Bundle slots: a Bundle is started only while limit.inFlight < limit.limit. */
  readonly limit: Pick<AdaptiveLimit, 'limit' | 'inFlight'>;
  /** Most Observations in one Bundle (FHIR_BATCH_SIZE). */
  readonly maxEntries: number;
  /**
   * Writes one Bundle: must take its slot of `limit` synchronously (before its
   * first await), as AdaptiveLimit.run does, and resolve one result per entry.
   */
  readonly send: (observations: readonly Observation[]) => Promise<R[]>;
  /** For metrics and tests: called with the number of parts in every Bundle sent. */
  readonly onBundle?: (parts: number, entries: number) => void;
}

export interface Coalescer<R> {
  write(observations: readonly Observation[], alone?: boolean): Promise<R[]>;
  /** Parts waiting for a slot. */
  readonly waiting: number;
}

interface Part<R> {
  readonly observations: readonly Observation[];
  readonly alone: boolean;
  readonly resolve: (results: R[]) => void;
  readonly reject: (err: unknown) => void;
}

export function createCoalescer<R>(options: CoalescerOptions<R>): Coalescer<R> {
  const queue: Part<R>[] = [];
  const max = Math.max(1, options.maxEntries);

  /** The parts of the next Bundle, taken off the queue (the head always goes). */
  function take(): Part<R>[] {
    const head = queue.shift()!;
    if (head.alone) return [head];
    const bundle = [head];
    let entries = head.observations.length;
    const ids = new Set(head.observations.map((o) => o.id ?? ''));
    for (let i = 0; i < queue.length && entries < max;) {
      const p = queue[i]!;
      const fits = !p.alone && entries + p.observations.length <= max;
      if (fits && !p.observations.some((o) => ids.has(o.id ?? ''))) {
        queue.splice(i, 1);
        bundle.push(p);
        entries += p.observations.length;
        for (const o of p.observations) ids.add(o.id ?? '');
      } else i++;
    }
    return bundle;
  }

  function pump(): void {
    while (queue.length > 0 && options.limit.inFlight < Math.floor(options.limit.limit)) {
      const parts = take();
      const observations = parts.flatMap((p) => p.observations);
      options.onBundle?.(parts.length, observations.length);
      let sending: Promise<R[]>;
      try {
        sending = options.send(observations);
      } catch (err) {
        sending = Promise.reject(toPipelineError(err));
      }
      sending.then(
        (results) => {
          let at = 0;
          for (const p of parts) {
            p.resolve(results.slice(at, at + p.observations.length));
            at += p.observations.length;
          }
          pump();
        },
        (err: unknown) => {
          if (parts.length > 1 && !toPipelineError(err).retryable) {
            // Refused as a whole: whose entry was it? Each part alone, first in line.
            queue.unshift(...parts.map((p) => ({ ...p, alone: true })));
          } else for (const p of parts) p.reject(err);
          pump();
        },
      );
    }
  }

  return {
    get waiting() {
      return queue.length;
    },
    write(observations, alone = false) {
      if (observations.length === 0) return Promise.resolve([]);
      return new Promise<R[]>((resolve, reject) => {
        queue.push({ observations, alone: alone || observations.length > max, resolve, reject });
        pump();
      });
    },
  };
}
