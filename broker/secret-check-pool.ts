/**
 * Secret checks (scrypt, ~50 ms of CPU each) run here, a few at a time, so that
 * a flood of CONNECTs cannot take every CPU and the libuv threadpool (shared
 * with file, DNS and other crypto work) and starve legitimate devices:
 *
 *  - at most `concurrency` checks run at once (MQTT_AUTH_CONCURRENCY);
 *  - one address runs at most `concurrency − 1` checks at once (at least one),
 *    so a flood from one address never holds every place: a device from
 *    another address starts its check at once;
 *  - when a place frees up it goes to the waiting address with the fewest
 *    checks running, addresses taking turns among equals (round robin);
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
  /** Running checks per address. */
  readonly #runningAt = new Map<string, number>();
  /** When each address with checks waiting or running was last served (a sequence number). */
  readonly #servedAt = new Map<string, number>();
  #served = 0;
  /** Checks one address may run at once: never every place. */
  readonly #perAddressRunning: number;
  #pending = 0;
  #running = 0;

  constructor(options: SecretCheckPoolOptions) {
    this.#opts = options;
    this.#perAddressRunning = Math.max(1, options.concurrency - 1);
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
        else {
          this.#perAddress.delete(address);
          this.#servedAt.delete(address);
        }
      };
      const entry: Waiting = {
        run: () => {
          clearTimeout(entry.timer);
          this.#running++;
          this.#runningAt.set(address, (this.#runningAt.get(address) ?? 0) + 1);
          check()
            .then(resolve, reject)
            .finally(() => {
              this.#running--;
              const left = (this.#runningAt.get(address) ?? 1) - 1;
              if (left > 0) this.#runningAt.set(address, left);
              else this.#runningAt.delete(address);
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
      // The address with the fewest checks running; among equals, the one
      // served longest ago (round robin).
      let address: string | undefined;
      let best = [Infinity, Infinity];
      for (const a of this.#waiting.keys()) {
        const key = [this.#runningAt.get(a) ?? 0, this.#servedAt.get(a) ?? -1];
        if (key[0]! >= this.#perAddressRunning) continue;
        if (key[0]! < best[0]! || (key[0] === best[0] && key[1]! < best[1]!)) {
          address = a;
          best = key;
        }
      }
      if (address === undefined) return; // every waiting address is at its share
      const queue = this.#waiting.get(address)!;
      const entry = queue.shift()!;
      if (queue.length === 0) this.#waiting.delete(address);
      this.#servedAt.set(address, this.#served++);
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
