/**
 * Secret checks (scrypt, ~50 ms of CPU each) run here, a few at a time, so that
 * a flood of CONNECTs cannot take every CPU and the libuv threadpool (shared
 * with file, DNS and other crypto work) and starve legitimate devices:
 *
 *  - at most `concurrency` checks run at once (MQTT_AUTH_CONCURRENCY);
 *  - an address with failed CONNECTs in the window runs at most
 *    `concurrency − 1` checks at once (at least one), so a flood from one
 *    address never holds every place: a device from another address starts
 *    its check at once (an address without failures, a healthy fleet behind
 *    one NAT, may use every place);
 *  - and at most as many as its failure budget has units left
 *    (connect-budgets.ts): every running check may fail, so the checks one
 *    address gets per window never exceed its budget. When the units run out,
 *    its waiting CONNECTs are refused (`spent`);
 *  - when a place frees up it goes to the waiting address with the fewest
 *    checks running, addresses taking turns among equals (round robin);
 *  - one address may have at most `maxPendingPerAddress` CONNECTs waiting or
 *    running, all addresses together `maxPending`; more are refused at once;
 *  - a check that has not started within `maxWaitMs` is refused.
 * A refusal is a PoolBusy error: the broker answers CONNACK 3 "server
 * unavailable" (CONNACK 5 when `spent`) and the device retries later.
 */

export type PoolBusyReason = 'address-busy' | 'busy' | 'wait-timeout' | 'spent';

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

/** What the address's failure budget allows (connect-budgets.ts Reservation). */
export interface BudgetView {
  /** Failures the address may still have. */
  unitsLeft(): number;
  /** True while the address has no failure in the window. */
  clean(): boolean;
}

const UNLIMITED: BudgetView = { unitsLeft: () => Infinity, clean: () => true };

interface Waiting {
  readonly budget: BudgetView;
  readonly run: () => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** A place in line for one CONNECT: run its check once, or leave. */
export interface PoolTicket {
  run<T>(check: () => Promise<T>, budget?: BudgetView): Promise<T>;
  leave(): void;
}

export class SecretCheckPool {
  readonly #opts: SecretCheckPoolOptions;
  /** Checks an address with failures may run at once: never every place. */
  readonly #suspectRunning: number;
  /** Waiting checks per address. */
  readonly #waiting = new Map<string, Waiting[]>();
  /** Waiting or running checks per address. */
  readonly #perAddress = new Map<string, number>();
  /** Running checks per address. */
  readonly #runningAt = new Map<string, number>();
  /** When each address with checks waiting or running was last served (a sequence number). */
  readonly #servedAt = new Map<string, number>();
  #served = 0;
  #pending = 0;
  #running = 0;

  constructor(options: SecretCheckPoolOptions) {
    this.#opts = options;
    this.#suspectRunning = Math.max(1, options.concurrency - 1);
  }

  /** Checks waiting or running right now. */
  get pending(): number {
    return this.#pending;
  }

  get running(): number {
    return this.#running;
  }

  /**
   * Takes a place in line for `address` now, synchronously (so that CONNECTs
   * arriving together see each other), or throws PoolBusy. The ticket is then
   * either `run` once or left.
   */
  enter(address: string): PoolTicket {
    const mine = this.#perAddress.get(address) ?? 0;
    if (mine >= this.#opts.maxPendingPerAddress) throw new PoolBusy('address-busy');
    if (this.#pending >= this.#opts.maxPending) throw new PoolBusy('busy');
    this.#perAddress.set(address, mine + 1);
    this.#pending++;
    let used = false;
    const done = () => {
      this.#pending--;
      const left = (this.#perAddress.get(address) ?? 1) - 1;
      if (left > 0) this.#perAddress.set(address, left);
      else {
        this.#perAddress.delete(address);
        this.#servedAt.delete(address);
      }
    };
    return {
      run: <T>(check: () => Promise<T>, budget = UNLIMITED) => {
        if (used) return Promise.reject(new Error('pool ticket used twice'));
        used = true;
        return this.#queue(address, check, budget, done);
      },
      leave: () => {
        if (used) return;
        used = true;
        done();
      },
    };
  }

  /** Runs `check` when its turn comes; rejects with PoolBusy when it cannot. */
  run<T>(address: string, check: () => Promise<T>, budget = UNLIMITED): Promise<T> {
    try {
      return this.enter(address).run(check, budget);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #queue<T>(
    address: string,
    check: () => Promise<T>,
    budget: BudgetView,
    done: () => void,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Waiting = {
        budget,
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
          clearTimeout(entry.timer);
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
      // The address with the fewest checks running, among those that may run
      // one more; among equals, the one served longest ago (round robin).
      let address: string | undefined;
      let best = [Infinity, Infinity];
      for (const [a, queue] of this.#waiting) {
        const running = this.#runningAt.get(a) ?? 0;
        const budget = queue[0]!.budget;
        const units = budget.unitsLeft();
        if (units <= 0) {
          // Its failures are spent: nothing of it will be checked in this window.
          this.#waiting.delete(a);
          for (const w of queue) w.reject(new PoolBusy('spent'));
          continue;
        }
        const share = budget.clean() ? this.#opts.concurrency : this.#suspectRunning;
        if (running >= Math.min(share, units)) continue;
        const key = [running, this.#servedAt.get(a) ?? -1];
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
