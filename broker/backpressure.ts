/**
 * Backpressure that slows acknowledgements down instead of stopping them.
 *
 * The broker reads the backlog in Redis (jobs not yet done in "ingest" and
 * "fhir") every `pollMs` and counts the jobs it writes itself in between. From
 * two readings it measures how fast the workers drain the backlog: jobs done =
 * backlog before + jobs this broker added − backlog now (jobs other brokers
 * added count as not drained, so several brokers err on the slow side).
 *
 *  - Under the high-water mark the broker writes jobs as fast as messages come.
 *  - Over it (until the backlog is back under the low mark) the broker writes
 *    jobs at the measured drain rate: the batcher asks `permit` before each job
 *    write, and messages wait for it with their PUBACK withheld (aedes reads a
 *    connection's next bytes only when the packets of the previous read are
 *    handled, lib/client.js `nextBatch`, so TCP flow control slows the devices
 *    meanwhile; broker memory holds at most one socket read per connection).
 *    A job takes every waiting message (up to BROKER_BATCH_MAX_MESSAGES), so
 *    each device sees its acknowledgements come at the pace of the workers.
 *  - No message waits longer than `maxWaitMs` (BROKER_BACKPRESSURE_MAX_WAIT_MS):
 *    the rate never drops below one job per `maxWaitMs`, and a job is written
 *    at once when its oldest message has waited that long, even with no worker
 *    draining at all. Then the backlog grows past the mark, slowly (each device
 *    gets its in-flight window acknowledged once per `maxWaitMs` at worst):
 *    Redis memory absorbs that, where a full stop would make devices with short
 *    PUBACK timeouts reconnect and resend all at once.
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
  /** Longest a message waits for admission over the high mark, ms. */
  readonly maxWaitMs: number;
  /** Reads the backlog (jobs); see queue-runtime backlogJobs. */
  readonly backlog: () => Promise<number>;
  readonly log: Logger;
  readonly metrics?: Metrics;
  readonly now?: () => number;
  /** Called when metering ends, so that waiting messages go at once. */
  readonly onOpen?: () => void;
}

/** What the batcher asks before writing a job. */
export interface AdmissionGate {
  /**
   * 0 when a job may be written now (and that job is counted against the
   * rate), else how long to wait, ms. `oldestSince` is when the oldest waiting
   * message arrived.
   */
  permit(oldestSince: number): number;
}

/** Weight of the newest drain measurement in the moving average. */
const DRAIN_SMOOTHING = 0.5;

export class Backpressure implements AdmissionGate {
  readonly #opts: BackpressureOptions;
  readonly #now: () => number;
  #metered = false;
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  /** Backlog estimate: the last reading plus the jobs written since. */
  #last = 0;
  #previous: { backlog: number; at: number } | undefined;
  #addedSincePoll = 0;
  /** Measured drain, jobs per second (moving average); undefined before two readings. */
  #drain: number | undefined;
  /** Token bucket of job writes while metered (capacity one job). */
  #tokens = 0;
  #tokensAt = 0;

  constructor(options: BackpressureOptions) {
    this.#opts = options;
    this.#now = options.now ?? Date.now;
  }

  /** True while over the high-water mark (until back under the low one): job writes are metered. */
  get metered(): boolean {
    return this.#metered;
  }

  /** Jobs per second admitted while metered: the measured drain, at least one per maxWaitMs. */
  get admitRate(): number {
    return Math.max(this.#drain ?? 0, 1000 / this.#opts.maxWaitMs);
  }

  /** The last measured drain, jobs per second (undefined until two readings). */
  get drainRate(): number | undefined {
    return this.#drain;
  }

  start(): void {
    void this.poll();
    this.#timer = setInterval(() => void this.poll(), this.#opts.pollMs);
    this.#timer.unref();
  }

  /**
   * Counts a job this broker just stored, so that between two polls the broker
   * does not overshoot the high mark by more than its own writes.
   */
  noteJobAdded(): void {
    this.#last++;
    this.#addedSincePoll++;
    if (!this.#metered && this.#last >= this.#opts.high) this.#meter(this.#last);
  }

  permit(oldestSince: number): number {
    if (!this.#metered) return 0;
    const now = this.#now();
    this.#tokens = Math.min(1, this.#tokens + ((now - this.#tokensAt) / 1000) * this.admitRate);
    this.#tokensAt = now;
    const waited = now - oldestSince;
    if (this.#tokens >= 1 || waited >= this.#opts.maxWaitMs) {
      // A job forced by the wait bound takes no debt: the bound already slows it.
      this.#tokens = Math.max(0, this.#tokens - 1);
      return 0;
    }
    const untilToken = Math.ceil(((1 - this.#tokens) / this.admitRate) * 1000);
    return Math.max(1, Math.min(untilToken, this.#opts.maxWaitMs - waited));
  }

  /** Reads the backlog once, measures the drain and updates the state (exposed for tests). */
  async poll(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    try {
      const n = await this.#opts.backlog();
      const at = this.#now();
      if (this.#previous && at > this.#previous.at) {
        const done = Math.max(0, this.#previous.backlog + this.#addedSincePoll - n);
        const rate = done / ((at - this.#previous.at) / 1000);
        this.#drain =
          this.#drain === undefined
            ? rate
            : DRAIN_SMOOTHING * rate + (1 - DRAIN_SMOOTHING) * this.#drain;
      }
      this.#previous = { backlog: n, at };
      this.#addedSincePoll = 0;
      this.#last = n;
      this.#opts.metrics?.brokerBacklog.set(n);
      if (!this.#metered && n >= this.#opts.high) this.#meter(n);
      else if (this.#metered && n <= this.#opts.low) this.#open(n);
      this.#opts.metrics?.brokerAdmitRate.set(this.#metered ? this.admitRate : 0);
    } catch (err) {
      this.#opts.log.warn(
        { event: 'backlog-unreadable', reason: (err as Error).message },
        'cannot read the backlog; keeping the last state',
      );
    } finally {
      this.#polling = false;
    }
  }

  /** Stops polling and admits everything (shutdown: waiting messages are enqueued and drained). */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#metered) this.#open(this.#last);
  }

  #meter(backlog: number): void {
    this.#metered = true;
    // The first job over the mark waits for a token like the rest.
    this.#tokens = 0;
    this.#tokensAt = this.#now();
    this.#opts.metrics?.brokerPaused.set(1);
    this.#opts.metrics?.brokerPauses.inc();
    this.#opts.log.warn(
      {
        event: 'backpressure-on',
        backlog,
        high: this.#opts.high,
        admitJobsPerSecond: Number(this.admitRate.toFixed(3)),
        maxWaitMs: this.#opts.maxWaitMs,
      },
      'backlog over the high-water mark: admitting PUBLISHes at the drain rate',
    );
  }

  #open(backlog: number): void {
    this.#metered = false;
    this.#opts.metrics?.brokerPaused.set(0);
    this.#opts.log.info(
      { event: 'backpressure-off', backlog, low: this.#opts.low },
      'backlog under the low-water mark: admitting PUBLISHes freely',
    );
    this.#opts.onOpen?.();
  }
}
