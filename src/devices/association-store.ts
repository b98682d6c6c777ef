/**
 * The association log in Redis: one list per device,
 * `{prefix}:assoc:{deviceId}`, of JSON records (associations.ts), append-only.
 *
 * Contract:
 *  - history(id) / histories(ids): the records in recording order (one round
 *    trip for many devices: the normalize worker reads every device of a job at once);
 *  - append(id, draft, check): appends one record if `check` accepts it against
 *    the history it sees, atomically (a compare-and-append script on the
 *    device's one key: a concurrent append makes this one re-read and
 *    re-check, never interleave; one key, so a Redis Cluster serves it too).
 * No cache: a reading is attributed with the history as it is when its job
 * runs, and a change is in force for the next job at once.
 */
import type { RedisConnection } from '../redis.js';
import { PipelineError } from '../errors.js';
import type { AssociationDraft, AssociationRecord } from './associations.js';
import { PrefixedStore } from './prefixed-store.js';

/** Attempts of a compare-and-append before giving up (each one lost a race to another writer). */
const APPEND_ATTEMPTS = 20;

export interface AssociationReader {
  history(deviceId: string): Promise<readonly AssociationRecord[]>;
  histories(deviceIds: readonly string[]): Promise<Map<string, readonly AssociationRecord[]>>;
}

function parse(raw: readonly string[]): AssociationRecord[] {
  return raw.map((line) => JSON.parse(line) as AssociationRecord);
}

/** RPUSH ARGV[2] when the list still has ARGV[1] records: compare-and-append. */
const APPEND_IF_LENGTH = `
if redis.call('LLEN', KEYS[1]) == tonumber(ARGV[1]) then
  redis.call('RPUSH', KEYS[1], ARGV[2])
  return 1
end
return 0`;

export class AssociationStore extends PrefixedStore implements AssociationReader {
  constructor(redis: RedisConnection, prefix: string) {
    super(redis, prefix);
  }

  #key(deviceId: string): string {
    return this.key('assoc', deviceId);
  }

  async history(deviceId: string): Promise<readonly AssociationRecord[]> {
    return parse(await this.redis.lrange(this.#key(deviceId), 0, -1));
  }

  async histories(
    deviceIds: readonly string[],
  ): Promise<Map<string, readonly AssociationRecord[]>> {
    const ids = [...new Set(deviceIds)];
    const out = new Map<string, readonly AssociationRecord[]>();
    if (ids.length === 0) return out;
    // Sent together without waiting for replies (one round trip's worth on one
    // server; a cluster routes each key to its node — a MULTI/pipeline could not).
    const lists = await Promise.all(ids.map((id) => this.redis.lrange(this.#key(id), 0, -1)));
    ids.forEach((id, i) => out.set(id, parse(lists[i] ?? [])));
    return out;
  }

  /** Number of records (the history's version). */
  async length(deviceId: string): Promise<number> {
    return this.redis.llen(this.#key(deviceId));
  }

  /**
   * Appends `draft` when `check(history)` returns normally; `check` throws to
   * refuse. Returns the stored record and the history it was appended to.
   */
  async append(
    deviceId: string,
    draft: AssociationDraft,
    check: (history: readonly AssociationRecord[]) => void,
  ): Promise<{ record: AssociationRecord; history: readonly AssociationRecord[] }> {
    const key = this.#key(deviceId);
    for (let attempt = 0; attempt < APPEND_ATTEMPTS; attempt++) {
      const history = parse(await this.redis.lrange(key, 0, -1));
      check(history);
      const record = { ...draft, seq: history.length } as AssociationRecord;
      // Appended only if nobody appended since the read (one key: a cluster is fine).
      const done = await this.redis.eval(
        APPEND_IF_LENGTH,
        1,
        key,
        history.length,
        JSON.stringify(record),
      );
      if (done === 1) return { record, history: [...history, record] };
    }
    throw new PipelineError(
      'QueueUnavailable',
      `could not record the change for device "${deviceId}": too many concurrent changes, try again`,
    );
  }
}
