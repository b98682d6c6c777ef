/**
 * Backpressure with two water marks. The broker reads the backlog in Redis
 * (jobs not yet done in "ingest" and "fhir") every `pollMs`. At or over the high
 * mark it stops admitting PUBLISHes: each one waits here, its PUBACK withheld,
 * and because aedes reads a connection's next bytes only after every packet of
 * the previous read is handled (aedes lib/client.js `nextBatch`), the broker
 * stops reading that socket — TCP flow control then slows the device. At or
 * under the low mark, the waiting messages go on in arrival order. Devices see
 * slower acks, never lost data; broker memory holds at most one socket read per
 * connection.
 *
 * Two marks, not one, so that the broker does not flap around a single line.
 * If Redis cannot be read, the last state holds (enqueueing fails on its own
 * and withholds the PUBACK then).
 */
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';

export interface BackpressureOptions {
  readonly high: number;
  readonly low: number;
  readonly pollMs: number;
  /** Reads the backlog (jobs); see queue-runtime backlogJobs. */
  readonly backlog: () => Promise<number>;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

export class Backpressure {
  readonly #opts: BackpressureOptions;
  #paused = false;
  #waiting: (() => void)[] = [];
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  #last = 0;

  constructor(options: BackpressureOptions) {
    this.#opts = options;
  }

  get paused(): boolean {
    return this.#paused;
  }

  /** PUBLISHes held back right now. */
  get held(): number {
    return this.#waiting.length;
  }

  start(): void {
    void this.poll();
    this.#timer = setInterval(() => void this.poll(), this.#opts.pollMs);
    this.#timer.unref();
  }

  /**
   * Counts a job this broker just stored, so that between two polls the broker
   * does not overshoot the high mark by more than its own last write.
   */
  noteJobAdded(): void {
    this.#last++;
    if (!this.#paused && this.#last >= this.#opts.high) this.#pause(this.#last);
  }

  /** Resolves at once below the high mark, else when the backlog drops under the low mark. */
  admit(): Promise<void> {
    if (!this.#paused) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** Reads the backlog once and updates the state (exposed for tests). */
  async poll(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    try {
      const n = await this.#opts.backlog();
      this.#last = n;
      this.#opts.metrics?.brokerBacklog.set(n);
      if (!this.#paused && n >= this.#opts.high) this.#pause(n);
      else if (this.#paused && n <= this.#opts.low) this.#resume(n);
    } catch (err) {
      this.#opts.log.warn(
        { event: 'backlog-unreadable', reason: (err as Error).message },
        'cannot read the backlog; keeping the last state',
      );
    } finally {
      this.#polling = false;
    }
  }

  /** Lets every held message go (shutdown: they are enqueued and drained). */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#paused) this.#resume(this.#last);
  }

  #pause(backlog: number): void {
    this.#paused = true;
    this.#opts.metrics?.brokerPaused.set(1);
    this.#opts.metrics?.brokerPauses.inc();
    this.#opts.log.warn(
      { event: 'backpressure-on', backlog, high: this.#opts.high },
      'backlog over the high-water mark: holding PUBLISHes',
    );
  }

  #resume(backlog: number): void {
    this.#paused = false;
    this.#opts.metrics?.brokerPaused.set(0);
    const waiting = this.#waiting.splice(0);
    this.#opts.log.info(
      { event: 'backpressure-off', backlog, low: this.#opts.low, released: waiting.length },
      'backlog under the low-water mark: reading again',
    );
    for (const go of waiting) go();
  }
}
