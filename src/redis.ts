/**
 * Where Redis is, in one setting (REDIS_URL), and one way to connect to it:
 *
 *  - `redis://[:password@]host:port[/db]` (or `rediss://`): one server;
 *  - `redis+cluster://[:password@]host:port,host:port,…`: a Redis Cluster,
 *    found from any of the nodes named;
 *  - `redis+sentinel://[:password@]host:port,host:port,…/master-name`: the
 *    master Sentinel names, followed through failovers. The password, if any,
 *    is the data nodes'; the Sentinels are reached without one.
 *
 * On a cluster every BullMQ key of one pipeline carries one hash tag (the
 * queue prefix in braces), because BullMQ's scripts touch several keys of a
 * queue at once; the registry, association and template keys are single-key
 * or tagged by their own modules.
 */
import calculateSlot from 'cluster-key-slot';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { PipelineError } from './errors.js';

/** A connection to whichever topology REDIS_URL names. */
export type RedisConnection = Redis | Cluster;

interface Node {
  readonly host: string;
  readonly port: number;
}

export type RedisTarget =
  | { readonly kind: 'single'; readonly url: string }
  | { readonly kind: 'cluster'; readonly nodes: readonly Node[]; readonly password?: string }
  | {
      readonly kind: 'sentinel';
      readonly sentinels: readonly Node[];
      readonly master: string;
      readonly password?: string;
    };

const MULTI = /^(redis\+cluster|redis\+sentinel):\/\/(?:([^@/]*)@)?([^/]+)(?:\/(.*))?$/;

function nodes(list: string, raw: string): Node[] {
  return list.split(',').map((part) => {
    const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(part.trim());
    const port = m ? Number(m[2]) : NaN;
    if (!m?.[1] || port < 1 || port > 65535)
      throw new Error(`expected host:port in "${raw}", got "${part}"`);
    return { host: m[1], port };
  });
}

/** REDIS_URL as a topology; throws a plain Error naming what is wrong (config reports it). */
export function parseRedisUrl(raw: string): RedisTarget {
  const m = MULTI.exec(raw);
  if (!m) {
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      throw new Error(`expected a redis://, rediss://, redis+cluster:// or redis+sentinel:// URL`);
    }
    if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:')
      throw new Error(
        `expected a redis://, rediss://, redis+cluster:// or redis+sentinel:// URL, got "${parsed.protocol}"`,
      );
    return { kind: 'single', url: raw.replace(/\/+$/, '') };
  }
  const [, scheme, auth, hosts = '', path] = m;
  const password = auth ? decodeURIComponent(auth.slice(auth.indexOf(':') + 1)) : undefined;
  const secret = password ? { password } : {};
  if (scheme === 'redis+cluster') return { kind: 'cluster', nodes: nodes(hosts, raw), ...secret };
  const master = (path ?? '').replace(/\/+$/, '');
  if (!master) throw new Error('a redis+sentinel:// URL ends with /<master name>');
  return { kind: 'sentinel', sentinels: nodes(hosts, raw), master, ...secret };
}

export interface ConnectOptions {
  /** ioredis maxRetriesPerRequest: null for BullMQ workers (they block), a small number elsewhere. */
  readonly maxRetriesPerRequest: number | null;
  readonly lazyConnect?: boolean;
  readonly connectTimeout?: number;
  readonly retryStrategy?: (attempt: number) => number | null;
}

/** A connection to REDIS_URL's topology. */
export function connect(url: string, o: ConnectOptions): RedisConnection {
  const target = parseRedisUrl(url);
  const common: RedisOptions = {
    maxRetriesPerRequest: o.maxRetriesPerRequest,
    enableReadyCheck: true,
    lazyConnect: o.lazyConnect ?? false,
    ...(o.connectTimeout !== undefined ? { connectTimeout: o.connectTimeout } : {}),
  };
  if (target.kind === 'single') {
    return new Redis(target.url, {
      ...common,
      ...(o.retryStrategy ? { retryStrategy: o.retryStrategy } : {}),
    });
  }
  if (target.kind === 'sentinel') {
    return new Redis({
      ...common,
      sentinels: target.sentinels.map((n) => ({ host: n.host, port: n.port })),
      name: target.master,
      ...(target.password !== undefined ? { password: target.password } : {}),
      ...(o.retryStrategy ? { sentinelRetryStrategy: o.retryStrategy } : {}),
    });
  }
  return new Cluster(
    target.nodes.map((n) => ({ host: n.host, port: n.port })),
    {
      lazyConnect: o.lazyConnect ?? false,
      enableReadyCheck: true,
      ...(o.retryStrategy ? { clusterRetryStrategy: o.retryStrategy } : {}),
      redisOptions: {
        maxRetriesPerRequest: o.maxRetriesPerRequest,
        ...(o.connectTimeout !== undefined ? { connectTimeout: o.connectTimeout } : {}),
        ...(target.password !== undefined ? { password: target.password } : {}),
      },
    },
  );
}

/**
 * BullMQ's key prefix for the pipeline's QUEUE_PREFIX: on a cluster it is
 * wrapped in braces, one hash tag, so every queue key lands in one slot
 * (BullMQ's requirement for Redis Cluster).
 */
export function queuePrefix(url: string, prefix: string): string {
  return parseRedisUrl(url).kind === 'cluster' && !/\{[^}]+\}/.test(prefix)
    ? `{${prefix}}`
    : prefix;
}

/**
 * Waits until what this connection just wrote to `key`'s node is on `replicas`
 * replicas (WAIT) — or, with `aof`, fsynced to the master's append-only file
 * (WAITAOF 1 0). Throws QueueUnavailable when that does not happen within
 * `timeoutMs`: the caller withholds the PUBACK and the device resends.
 */
export async function waitDurable(
  redis: RedisConnection,
  key: string,
  o: { readonly replicas: number; readonly aof: boolean; readonly timeoutMs: number },
): Promise<void> {
  const node = redis instanceof Cluster ? nodeOf(redis, key) : redis;
  if (o.replicas > 0) {
    const acked = Number(await node.call('WAIT', o.replicas, o.timeoutMs));
    if (acked < o.replicas)
      throw new PipelineError(
        'QueueUnavailable',
        `Redis: ${acked} of ${o.replicas} replica(s) confirmed the write within ${o.timeoutMs} ms (REDIS_WAIT_REPLICAS)`,
      );
  }
  if (o.aof) {
    const [local] = (await node.call('WAITAOF', 1, 0, o.timeoutMs)) as [number, number];
    if (Number(local) < 1)
      throw new PipelineError(
        'QueueUnavailable',
        `Redis did not fsync the write to its append-only file within ${o.timeoutMs} ms (REDIS_WAIT_AOF)`,
      );
  }
}

/** The master connection serving `key`'s slot. */
function nodeOf(cluster: Cluster, key: string): Redis {
  const slot = calculateSlot(key);
  const owner = cluster.slots[slot]?.[0];
  const node = cluster.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === owner);
  if (!node) throw new PipelineError('QueueUnavailable', `no cluster node serves slot ${slot}`);
  return node;
}

/** REDIS_WAIT_AOF needs WAITAOF (Redis 7.2+): a clear ConfigInvalid at start, not a refusal per message. */
export async function checkWaitAof(redis: RedisConnection): Promise<void> {
  const [info] = (await redis.call('COMMAND', 'INFO', 'WAITAOF')) as unknown[];
  if (info === null || info === undefined)
    throw new PipelineError(
      'ConfigInvalid',
      'REDIS_WAIT_AOF=true needs Redis 7.2 or later (the WAITAOF command); this Redis does not have it. Upgrade Redis or unset REDIS_WAIT_AOF.',
    );
}
