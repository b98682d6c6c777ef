/**
 * The device registry: which devices may connect, and with which secret.
 * Credentials only — whom a device's readings belong to is its association
 * history (associations.ts), kept apart so that moving a device to another
 * patient never touches its secret, and re-keying never touches its patients.
 *
 * Redis layout (every role sees the same registry):
 *  - `{prefix}:device:{id}` hash: secretHash, credentialId, kind, status,
 *    createdAt, updatedAt — a removed device keeps its hash (status "removed",
 *    no secret), so its history stays attached to its id and it can be added again;
 *  - `{prefix}:devices` set: every id (listing without SCAN, which sees one
 *    node of a cluster).
 */
import { randomBytes } from 'node:crypto';
import type { RedisConnection } from '../redis.js';
import { PipelineError } from '../errors.js';
import { PrefixedStore } from './prefixed-store.js';
import { generateSecret, hashSecret, verifySecret, verifyUnknown } from './secret.js';

export type DeviceKind = 'device' | 'gateway';
export type DeviceStatus = 'active' | 'removed';

export interface DeviceRecord {
  readonly deviceId: string;
  /** A gateway relays readings of its linked devices and has no patient of its own. */
  readonly kind: DeviceKind;
  readonly status: DeviceStatus;
  /** Changes with every new secret: a connection made with an older one is ended. */
  readonly credentialId: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** MQTT usernames are free text; we accept a conservative device-id alphabet. */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
/** FHIR R4 id: [A-Za-z0-9\-\.]{1,64}. */
export const FHIR_ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;

/** Accepts `Patient/abc` or `abc`; returns the FHIR id or throws InvalidArgument. */
export function parsePatientRef(ref: string): string {
  const id = ref.startsWith('Patient/') ? ref.slice('Patient/'.length) : ref;
  if (!FHIR_ID_PATTERN.test(id)) {
    throw new PipelineError(
      'InvalidArgument',
      'the patient reference is not Patient/<FHIR id> (letters, digits, "-" and ".", at most 64)',
    );
  }
  return id;
}

export function assertDeviceId(deviceId: string): string {
  if (!DEVICE_ID_PATTERN.test(deviceId)) {
    throw new PipelineError(
      'InvalidArgument',
      `a device id must match ${DEVICE_ID_PATTERN.source} (got ${JSON.stringify(deviceId.slice(0, 64))})`,
    );
  }
  return deviceId;
}

/**
 * Creates the device unless an active one has the id (a removed one is added
 * again). KEYS[1] device hash; ARGV field/value pairs.
 */
const CREATE_SCRIPT = `
if redis.call('HGET', KEYS[1], 'status') == 'active' then return 0 end
local created = redis.call('HGET', KEYS[1], 'createdAt')
for i = 1, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if created then redis.call('HSET', KEYS[1], 'createdAt', created) end
return 1`;

/** Replaces the secret of an active device. KEYS[1] device hash; ARGV hash, credentialId, updatedAt. */
const ROTATE_SCRIPT = `
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], 'secretHash', ARGV[1], 'credentialId', ARGV[2], 'updatedAt', ARGV[3])
return 1`;

function newCredentialId(): string {
  return randomBytes(8).toString('hex');
}

function record(deviceId: string, h: Record<string, string>): DeviceRecord | undefined {
  if (!h.createdAt) return undefined;
  return {
    deviceId,
    kind: h.kind === 'gateway' ? 'gateway' : 'device',
    status: h.status === 'removed' ? 'removed' : 'active',
    credentialId: h.credentialId ?? '',
    createdAt: h.createdAt,
    updatedAt: h.updatedAt ?? h.createdAt,
  };
}

export class DeviceRegistry extends PrefixedStore {
  constructor(redis: RedisConnection, prefix: string) {
    super(redis, prefix);
  }

  #key(deviceId: string): string {
    return this.key('device', deviceId);
  }

  get #setKey(): string {
    return this.key('devices');
  }

  /** Registers a new device; refuses (DeviceExists) an id that is registered and active. */
  async create(
    deviceId: string,
    options: { kind?: DeviceKind; secret?: string; now?: Date } = {},
  ): Promise<{ secret: string; record: DeviceRecord }> {
    assertDeviceId(deviceId);
    const secret = options.secret ?? generateSecret();
    const at = (options.now ?? new Date()).toISOString();
    const fields = {
      secretHash: await hashSecret(secret),
      credentialId: newCredentialId(),
      kind: options.kind ?? 'device',
      status: 'active',
      createdAt: at,
      updatedAt: at,
    };
    // The id set first (idempotent; listing skips ids without a record), then
    // the record: two keys in two slots of a cluster, so no one script for both.
    await this.redis.sadd(this.#setKey, deviceId);
    const created = await this.redis.eval(
      CREATE_SCRIPT,
      1,
      this.#key(deviceId),
      ...Object.entries(fields).flat(),
    );
    if (created !== 1) {
      throw new PipelineError(
        'DeviceExists',
        `device "${deviceId}" is already registered; nothing was changed ` +
          '(use assign to move it to a patient, rotate-secret to re-key it)',
      );
    }
    return { secret, record: (await this.get(deviceId))! };
  }

  async get(deviceId: string): Promise<DeviceRecord | undefined> {
    return record(deviceId, await this.redis.hgetall(this.#key(deviceId)));
  }

  /** The records of these devices (undefined when never registered), one round trip. */
  async records(deviceIds: readonly string[]): Promise<Map<string, DeviceRecord | undefined>> {
    const ids = [...new Set(deviceIds)];
    // Sent together (no reply awaited in between); each key goes to its node on a cluster.
    const hashes = await Promise.all(ids.map((id) => this.redis.hgetall(this.#key(id))));
    return new Map(ids.map((id, i) => [id, record(id, hashes[i] ?? {})]));
  }

  /** The device's record when it is active and the secret matches, else undefined. */
  async authenticate(deviceId: string, secret: string): Promise<DeviceRecord | undefined> {
    const h = DEVICE_ID_PATTERN.test(deviceId) ? await this.redis.hgetall(this.#key(deviceId)) : {};
    const found = record(deviceId, h);
    if (!found || found.status !== 'active' || !h.secretHash) {
      // Unknown, removed or malformed id: do the same work as for a wrong secret,
      // so that the refusal time does not tell which ids exist (docs/security.md).
      await verifyUnknown(secret);
      return undefined;
    }
    return (await verifySecret(secret, h.secretHash)) ? found : undefined;
  }

  /** A new secret for an active device; its associations stay as they are. */
  async rotateSecret(
    deviceId: string,
    secret = generateSecret(),
  ): Promise<{ secret: string; record: DeviceRecord }> {
    const rotated = await this.redis.eval(
      ROTATE_SCRIPT,
      1,
      this.#key(deviceId),
      await hashSecret(secret),
      newCredentialId(),
      new Date().toISOString(),
    );
    if (rotated !== 1)
      throw new PipelineError('DeviceNotFound', `device "${deviceId}" is not registered`);
    return { secret, record: (await this.get(deviceId))! };
  }

  /** Marks a registered device as a gateway. */
  async markGateway(deviceId: string): Promise<void> {
    const rec = await this.get(deviceId);
    if (rec?.status !== 'active')
      throw new PipelineError('DeviceNotFound', `device "${deviceId}" is not registered`);
    await this.redis.hset(this.#key(deviceId), 'kind', 'gateway');
  }

  /**
   * Removes the device's credentials: it can no longer connect. Its record stays
   * (status "removed") so that its association history keeps its meaning.
   */
  async remove(deviceId: string): Promise<boolean> {
    const rec = await this.get(deviceId);
    if (rec?.status !== 'active') return false;
    await this.redis
      .multi()
      .hdel(this.#key(deviceId), 'secretHash', 'credentialId')
      .hset(this.#key(deviceId), 'status', 'removed', 'updatedAt', new Date().toISOString())
      .exec();
    return true;
  }

  /** Current credential ids of these devices ('' when removed or unknown), one round trip. */
  async credentialIds(deviceIds: readonly string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (deviceIds.length === 0) return out;
    // Sent together (no reply awaited in between); each key goes to its node on a cluster.
    const replies = await Promise.all(
      deviceIds.map((id) => this.redis.hget(this.#key(id), 'credentialId')),
    );
    deviceIds.forEach((id, i) => out.set(id, replies[i] ?? ''));
    return out;
  }

  /** Every registered device (removed ones too, marked), sorted by id. */
  async list(): Promise<DeviceRecord[]> {
    const ids = (await this.redis.smembers(this.#setKey)).sort();
    if (ids.length === 0) return [];
    const replies = await Promise.all(ids.map((id) => this.redis.hgetall(this.#key(id))));
    return ids.flatMap((id, i) => {
      const r = record(id, replies[i] ?? {});
      return r ? [r] : [];
    });
  }

  /**
   * Registries written before associations existed kept one `patientId` per
   * device hash and no id set. Returns those bindings (and indexes every device
   * in the set) so that the caller can record them as associations; idempotent.
   */
  async legacyBindings(): Promise<{ deviceId: string; patientId: string; createdAt: string }[]> {
    const found: { deviceId: string; patientId: string; createdAt: string }[] = [];
    const head = `${this.key('device')}:`;
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${head}*`, 'COUNT', 500);
      cursor = next;
      for (const key of keys) {
        const deviceId = key.slice(head.length);
        const h = await this.redis.hgetall(key);
        if (!h.createdAt) continue;
        await this.redis.sadd(this.#setKey, deviceId);
        if (!h.status) {
          await this.redis.hset(key, {
            status: h.secretHash ? 'active' : 'removed',
            kind: h.kind ?? 'device',
            credentialId: h.credentialId ?? newCredentialId(),
            updatedAt: h.updatedAt ?? h.createdAt,
          });
        }
        if (h.patientId) found.push({ deviceId, patientId: h.patientId, createdAt: h.createdAt });
      }
    } while (cursor !== '0');
    return found;
  }

  /** Forgets the legacy binding once it is recorded as an association. */
  async dropLegacyBinding(deviceId: string): Promise<void> {
    await this.redis.hdel(this.#key(deviceId), 'patientId');
  }
}
