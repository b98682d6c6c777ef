/**
 * Group commit: the items of several callers share one request when they have
 * to wait anyway. The FHIR writer sends its Observations this way (one
 * transaction Bundle for many jobs, src/fhir/store.ts), and the ClickHouse
 * mirror its rows (one insert for many jobs, workers/analytics-mirror.ts).
 *
 * Each caller hands in a part (its chunk of items). A part is sent at once
 * while `limit` has a free slot, so at low load nothing waits for company.
 * While every slot is busy, parts queue here; when a slot frees, the next
 * request takes the waiting parts in arrival order, up to `maxEntries` items.
 * So at any load a request carries what arrived during the previous one (the
 * fixed cost per request is paid once for many small parts) and no part waits
 * behind more than one round of requests already in flight.
 *
 * `lingerMs` (default 0) makes a free slot wait for company too: the oldest
 * waiting part waits at most that long, and the request goes at once when
 * `lingerEntries` items (default `maxEntries`) or `lingerParts` parts (all the
 * callers there can be) are waiting. For a sink whose cost is per request
 * rather than per item (an insert into ClickHouse), this turns many small
 * requests into a few large ones whatever the load.
 *
 * All or nothing per request must not make one caller's bad item fail
 * another's good ones: when a request of several parts is refused (a
 * non-retryable error), each part is sent again alone, first in line; only a
 * part's own refusal reaches its caller (who then isolates the bad items). A
 * transient failure (retryable) goes to every part in the request: each caller
 * retries its own. With `key`, a part never shares a request with a part
 * holding one of its keys (a transaction refuses an id twice); `alone` parts
 * are always sent alone.
 *
 * Contract: write(part, alone) resolves with one result per item of the part,
 * in order, or rejects with the error of the request that carried it. `send`
 * does the I/O and must take its slot of `limit` synchronously (before its
 * first await), as AdaptiveLimit.run does; `fixedLimit` is such a limit.
 */
import { toPipelineError } from './errors.js';

/** The slots: a request is started only while inFlight < limit. */
export interface Slots {
  readonly limit: number;
  readonly inFlight: number;
}

export interface GroupCommitOptions<I, R> {
  readonly limit: Slots;
  /** Most items in one request. */
  readonly maxEntries: number;
  /** Sends one request; resolves one result per item, in order. */
  readonly send: (items: readonly I[]) => Promise<R[]>;
  /** Items with the same key never share a request; absent: any may. */
  readonly key?: (item: I) => string;
  /** Longest wait of the oldest part for company while a slot is free, ms (default 0). */
  readonly lingerMs?: number;
  /** With lingerMs: send at once when this many parts wait (default: no such bound). */
  readonly lingerParts?: number;
  /** With lingerMs: send at once when this many items wait (default: maxEntries). */
  readonly lingerEntries?: number;
  /** For metrics and tests: called with the parts and items of every request sent. */
  readonly onBundle?: (parts: number, entries: number) => void;
  readonly now?: () => number;
}

export interface GroupCommit<I, R> {
  write(items: readonly I[], alone?: boolean): Promise<R[]>;
  /** Parts waiting to be sent. */
  readonly waiting: number;
}

interface Part<I, R> {
  readonly items: readonly I[];
  readonly alone: boolean;
  readonly at: number;
  readonly resolve: (results: R[]) => void;
  readonly reject: (err: unknown) => void;
}

/** A fixed number of slots, taken by `run` (a limit that never adapts). */
export function fixedLimit(slots: number): Slots & {
  run<T>(fn: () => Promise<T>): Promise<T>;
} {
  let inFlight = 0;
  return {
    limit: slots,
    get inFlight() {
      return inFlight;
    },
    async run(fn) {
      inFlight++;
      try {
        return await fn();
      } finally {
        inFlight--;
      }
    },
  };
}

export function createGroupCommit<I, R>(options: GroupCommitOptions<I, R>): GroupCommit<I, R> {
  const queue: Part<I, R>[] = [];
  const max = Math.max(1, options.maxEntries);
  const lingerMs = options.lingerMs ?? 0;
  const lingerParts = options.lingerParts ?? Infinity;
  const lingerEntries = Math.min(max, Math.max(1, options.lingerEntries ?? max));
  const now = options.now ?? (() => performance.now());
  const key = options.key;
  let timer: NodeJS.Timeout | undefined;
  let queuedEntries = 0;

  /** The parts of the next request, taken off the queue (the head always goes). */
  function take(): Part<I, R>[] {
    const head = queue.shift()!;
    const bundle = [head];
    if (head.alone) return bundle;
    let entries = head.items.length;
    const keys = key ? new Set(head.items.map(key)) : undefined;
    for (let i = 0; i < queue.length && entries < max;) {
      const p = queue[i]!;
      const fits = !p.alone && entries + p.items.length <= max;
      if (fits && !(keys && p.items.some((item) => keys.has(key!(item))))) {
        queue.splice(i, 1);
        bundle.push(p);
        entries += p.items.length;
        if (keys) for (const item of p.items) keys.add(key!(item));
      } else i++;
    }
    return bundle;
  }

  /** 0 when the head may go now, else how long it may still wait for company. */
  function lingerLeft(): number {
    if (lingerMs <= 0) return 0;
    const head = queue[0]!;
    if (head.alone || queuedEntries >= lingerEntries || queue.length >= lingerParts) return 0;
    return Math.max(0, head.at + lingerMs - now());
  }

  function pump(): void {
    while (queue.length > 0 && options.limit.inFlight < Math.floor(options.limit.limit)) {
      const left = lingerLeft();
      if (left > 0) {
        timer ??= setTimeout(() => {
          timer = undefined;
          pump();
        }, Math.ceil(left));
        return;
      }
      if (timer) clearTimeout(timer);
      timer = undefined;
      const parts = take();
      const items = parts.flatMap((p) => p.items);
      queuedEntries -= items.length;
      options.onBundle?.(parts.length, items.length);
      let sending: Promise<R[]>;
      try {
        sending = options.send(items);
      } catch (err) {
        sending = Promise.reject(toPipelineError(err));
      }
      sending.then(
        (results) => {
          let at = 0;
          for (const p of parts) {
            p.resolve(results.slice(at, at + p.items.length));
            at += p.items.length;
          }
          pump();
        },
        (err: unknown) => {
          if (parts.length > 1 && !toPipelineError(err).retryable) {
            // Refused as a whole: whose item was it? Each part alone, first in line.
            queue.unshift(...parts.map((p) => ({ ...p, alone: true })));
            queuedEntries += items.length;
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
    write(items, alone = false) {
      if (items.length === 0) return Promise.resolve([]);
      return new Promise<R[]>((resolve, reject) => {
        queue.push({ items, alone: alone || items.length > max, at: now(), resolve, reject });
        queuedEntries += items.length;
        pump();
      });
    },
  };
}
