/**
 * Secret checks (scrypt, ~50 ms of CPU each) run here, a few at a time, so that
 * a flood of CONNECTs cannot take every CPU and the libuv threadpool (shared
 * with file, DNS and other crypto work) and starve legitimate devices:
 *
 *  - at most `concurrency` checks run at once (MQTT_AUTH_CONCURRENCY);
 *  - waiting checks are served one address after another (round robin), so an
 *    address with many CONNECTs in line does not delay the others by more than
 *    one check each;
 *  - one address may have at most `maxPendingPerAddress` CONNECTs waiting or
 *    running, all addresses together `maxPending`; more are refused at once;
 *  - a check that has not started within `maxWaitMs` is refused.
 * A refusal is a PoolBusy error: the broker answers CONNACK 3 "server
 * unavailable" and the device retries later.
 */

export type PoolBusyReason = 'address-busy' | 'busy' | 'wait-timeout';

export class PoolBusy extends Error {
  constructor(readonly reason: PoolBusyReason) {
    super(`secret checks busy (${reason})`);
    this.name = 'PoolBusy';
  }
}

export interface SecretCheckPoolOptions {
  readonly concurrency: number;
  readonly maxPendingPerAddress: number;
  readonly maxPending: number;
  readonly maxWaitMs: number;
}

interface Waiting {
  readonly run: () => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export class SecretCheckPool {
  readonly #opts: SecretCheckPoolOptions;
  /** Waiting checks per address; the Map's order is the round robin's. */
  readonly #waiting = new Map<string, Waiting[]>();
  /** Waiting or running checks per address. */
  readonly #perAddress = new Map<string, number>();
  #pending = 0;
  #running = 0;

  constructor(options: SecretCheckPoolOptions) {
    this.#opts = options;
  }

  /** Checks waiting or running right now. */
  get pending(): number {
    return this.#pending;
  }

  get running(): number {
    return this.#running;
  }

  /** Runs `check` when its turn comes; rejects with PoolBusy when it cannot. */
  run<T>(address: string, check: () => Promise<T>): Promise<T> {
    const mine = this.#perAddress.get(address) ?? 0;
    if (mine >= this.#opts.maxPendingPerAddress)
      return Promise.reject(new PoolBusy('address-busy'));
    if (this.#pending >= this.#opts.maxPending) return Promise.reject(new PoolBusy('busy'));
    this.#perAddress.set(address, mine + 1);
    this.#pending++;
    return new Promise<T>((resolve, reject) => {
      const done = () => {
        this.#pending--;
        const left = (this.#perAddress.get(address) ?? 1) - 1;
        if (left > 0) this.#perAddress.set(address, left);
        else this.#perAddress.delete(address);
      };
      const entry: Waiting = {
        run: () => {
          clearTimeout(entry.timer);
          this.#running++;
          check()
            .then(resolve, reject)
            .finally(() => {
              this.#running--;
              done();
              this.#pump();
            });
        },
        reject: (err) => {
          done();
          reject(err);
        },
        timer: setTimeout(() => this.#expire(address, entry), this.#opts.maxWaitMs).unref(),
      };
      const queue = this.#waiting.get(address);
      if (queue) queue.push(entry);
      else this.#waiting.set(address, [entry]);
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#running < this.#opts.concurrency && this.#waiting.size > 0) {
      const [address, queue] = this.#waiting.entries().next().value as [string, Waiting[]];
      const entry = queue.shift()!;
      // Round robin: this address goes to the back of the line.
      this.#waiting.delete(address);
      if (queue.length > 0) this.#waiting.set(address, queue);
      entry.run();
    }
  }

  #expire(address: string, entry: Waiting): void {
    const queue = this.#waiting.get(address);
    const at = queue?.indexOf(entry) ?? -1;
    if (!queue || at < 0) return;
    queue.splice(at, 1);
    if (queue.length === 0) this.#waiting.delete(address);
    entry.reject(new PoolBusy('wait-timeout'));
  }
}
