/**
 * What every Redis-backed store of the devices module shares: one Redis
 * connection and keys under the pipeline's prefix (`{prefix}:{kind}:{id}`), so
 * that separate pipelines may share one Redis and the key layout lives in one place.
 */
import type { RedisConnection } from '../redis.js';

export abstract class PrefixedStore {
  protected readonly redis: RedisConnection;
  readonly #prefix: string;

  protected constructor(redis: RedisConnection, prefix: string) {
    this.redis = redis;
    this.#prefix = prefix;
  }

  /** `{prefix}:{parts…}` */
  protected key(...parts: readonly string[]): string {
    return [this.#prefix, ...parts].join(':');
  }
}
