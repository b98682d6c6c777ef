/**
 * The template versions, the active version, the rollback history and the
 * audit trail in Redis — the adapter behind the lifecycle (service.ts).
 *
 * Keys, all under `{prefix}:{mappings}:` — one hash tag, so the keys an
 * activation touches share a hash slot (Redis Cluster runs the script below as
 * one unit on one node):
 *   set:<version>       the template files (JSON SourceFile[]); content-addressed, immutable
 *   fixtures:<version>  the fixtures proposed with it (JSON Fixture[]; a new proposal replaces them)
 *   versions            hash version → VersionRecord (JSON)
 *   activated           hash version → when it last became active (ISO 8601)
 *   active              the active version
 *   history             list of versions active before, newest first (what rollback restores)
 *   audit               list of AuditEntry (JSON), oldest first; never trimmed
 * Channel `{prefix}:mappings` announces each new active version (workers follow it).
 *
 * Contract: activation and rollback are one compare-and-set script — the active
 * version changes only from the version the gates were run against, the history,
 * the activation time, the audit entry and the announcement go with it, or
 * nothing happens ('conflict').
 */
import type { RedisConnection } from '../../redis.js';
import type { Fixture } from '../fixtures.js';
import type { SourceFile } from '../load.js';
import type { AuditEntry, VersionRecord } from './types.js';

/** Rollback history kept (older versions stay stored until pruned). */
export const HISTORY_CAP = 50;

export function lifecycleKeys(prefix: string) {
  const base = `${prefix}:{mappings}`;
  return {
    set: (v: string) => `${base}:set:${v}`,
    fixtures: (v: string) => `${base}:fixtures:${v}`,
    versions: `${base}:versions`,
    activated: `${base}:activated`,
    active: `${base}:active`,
    history: `${base}:history`,
    audit: `${base}:audit`,
    channel: `${prefix}:mappings`,
  };
}

export type Keys = ReturnType<typeof lifecycleKeys>;

// KEYS: active, history, activated, audit, set:<to>
// ARGV: expected active ('' = none), to, at, audit entry, channel, mode, history cap
const SWITCH_SCRIPT = `
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {'conflict', cur} end
if redis.call('EXISTS', KEYS[5]) == 0 then return {'missing', cur} end
if ARGV[6] == 'rollback' then
  local top = redis.call('LINDEX', KEYS[2], 0)
  if top ~= ARGV[2] then return {'conflict', cur} end
  redis.call('LPOP', KEYS[2])
elseif cur ~= '' then
  redis.call('LPUSH', KEYS[2], cur)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[7]) - 1)
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('RPUSH', KEYS[4], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return {'ok', cur}
`;

// KEYS: active, history, versions, activated, audit, then set:<v>, fixtures:<v> per version
// ARGV: audit entry template (JSON, "removed" filled in here), then the versions
const PRUNE_SCRIPT = `
local active = redis.call('GET', KEYS[1]) or ''
local kept = {}
for _, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do kept[v] = true end
local removed = {}
for i = 2, #ARGV do
  local v = ARGV[i]
  if v ~= active and not kept[v] then
    redis.call('DEL', KEYS[6 + (i - 2) * 2], KEYS[7 + (i - 2) * 2])
    redis.call('HDEL', KEYS[3], v)
    redis.call('HDEL', KEYS[4], v)
    table.insert(removed, v)
  end
end
if #removed > 0 then
  local entry = cjson.decode(ARGV[1])
  entry['removed'] = removed
  redis.call('RPUSH', KEYS[5], cjson.encode(entry))
end
return removed
`;

export type SwitchMode = 'activate' | 'rollback' | 'bootstrap';
export type SwitchOutcome =
  | { readonly ok: true }
  | { readonly ok: false; readonly why: 'conflict' | 'missing'; readonly active: string };

export class LifecycleStore {
  readonly keys: Keys;
  readonly #redis: RedisConnection;

  constructor(redis: RedisConnection, prefix: string) {
    this.#redis = redis;
    this.keys = lifecycleKeys(prefix);
  }

  async active(): Promise<string | undefined> {
    return (await this.#redis.get(this.keys.active)) ?? undefined;
  }

  async history(): Promise<string[]> {
    return this.#redis.lrange(this.keys.history, 0, -1);
  }

  async files(version: string): Promise<SourceFile[] | undefined> {
    const raw = await this.#redis.get(this.keys.set(version));
    return raw === null ? undefined : (JSON.parse(raw) as SourceFile[]);
  }

  async fixtures(version: string): Promise<Fixture[]> {
    const raw = await this.#redis.get(this.keys.fixtures(version));
    return raw === null ? [] : (JSON.parse(raw) as Fixture[]);
  }

  async record(version: string): Promise<VersionRecord | undefined> {
    const raw = await this.#redis.hget(this.keys.versions, version);
    return raw === null ? undefined : (JSON.parse(raw) as VersionRecord);
  }

  async records(): Promise<VersionRecord[]> {
    const all = await this.#redis.hvals(this.keys.versions);
    return all.map((r) => JSON.parse(r) as VersionRecord);
  }

  async activations(): Promise<Record<string, string>> {
    return this.#redis.hgetall(this.keys.activated);
  }

  /**
   * Stores a version (files once, fixtures replaced, the record kept from the
   * first proposal). True when the version is new. One slot: MULTI is safe.
   */
  async put(
    record: VersionRecord,
    files: readonly SourceFile[],
    fixtures: readonly Fixture[],
    audit: AuditEntry,
  ): Promise<boolean> {
    const k = this.keys;
    const res = await this.#redis
      .multi()
      .set(k.set(record.version), JSON.stringify(files))
      .set(k.fixtures(record.version), JSON.stringify(fixtures))
      .hsetnx(k.versions, record.version, JSON.stringify(record))
      .exec();
    const created = res?.[2]?.[1] === 1;
    if (created) await this.appendAudit(audit);
    return created;
  }

  async appendAudit(entry: AuditEntry): Promise<void> {
    await this.#redis.rpush(this.keys.audit, JSON.stringify(entry));
  }

  /** The last `limit` entries, oldest first. */
  async audit(limit: number): Promise<AuditEntry[]> {
    const raw = await this.#redis.lrange(this.keys.audit, -Math.max(1, limit), -1);
    return raw.map((r) => JSON.parse(r) as AuditEntry);
  }

  /** Makes `to` active if the active version is still `expected` (see the contract above). */
  async switchTo(
    expected: string | undefined,
    to: string,
    mode: SwitchMode,
    entry: AuditEntry,
  ): Promise<SwitchOutcome> {
    const k = this.keys;
    const [status, current] = (await this.#redis.eval(
      SWITCH_SCRIPT,
      5,
      k.active,
      k.history,
      k.activated,
      k.audit,
      k.set(to),
      expected ?? '',
      to,
      entry.at,
      JSON.stringify(entry),
      k.channel,
      mode,
      String(HISTORY_CAP),
    )) as [string, string];
    if (status === 'ok') return { ok: true };
    return { ok: false, why: status === 'missing' ? 'missing' : 'conflict', active: current };
  }

  /** Deletes the versions that are neither active nor in the rollback history; returns those removed. */
  async prune(versions: readonly string[], entry: AuditEntry): Promise<string[]> {
    if (versions.length === 0) return [];
    const k = this.keys;
    const perVersion = versions.flatMap((v) => [k.set(v), k.fixtures(v)]);
    return (await this.#redis.eval(
      PRUNE_SCRIPT,
      5 + perVersion.length,
      k.active,
      k.history,
      k.versions,
      k.activated,
      k.audit,
      ...perVersion,
      JSON.stringify(entry),
      ...versions,
    )) as string[];
  }
}
