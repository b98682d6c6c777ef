/**
 * The device registry: which devices may connect, with which secret, and which
 * patient each one is bound to. Kept in Redis so that every broker and worker
 * sees the same registry (one hash per device: `{prefix}:device:{id}`).
 */
import type { Redis } from 'ioredis';
import { PipelineError } from '../errors.js';
import { generateSecret, hashSecret, verifySecret, verifyUnknown } from './secret.js';

export interface DeviceRecord {
  readonly deviceId: string;
  /** FHIR Patient id the device's readings belong to. */
  readonly patientId: string;
  readonly createdAt: string;
}

/** MQTT usernames are free text; we accept a conservative device-id alphabet. */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
/** FHIR R4 id: [A-Za-z0-9\-\.]{1,64}. */
export const FHIR_ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;

/** Accepts `Patient/abc` or `abc`; returns the FHIR id or throws a clear error. */
export function parsePatientRef(ref: string): string {
  const id = ref.startsWith('Patient/') ? ref.slice('Patient/'.length) : ref;
  if (!FHIR_ID_PATTERN.test(id)) {
    throw new PipelineError(
      'PatientNotFound',
      `patient reference "${ref}" is not a FHIR id ([A-Za-z0-9-.]{1,64})`,
    );
  }
  return id;
}

export class DeviceRegistry {
  readonly #redis: Redis;
  readonly #prefix: string;

  constructor(redis: Redis, prefix: string) {
    this.#redis = redis;
    this.#prefix = prefix;
  }

  #key(deviceId: string): string {
    return `${this.#prefix}:device:${deviceId}`;
  }

  /** Registers (or re-keys) a device; returns the new secret, which is never stored in clear. */
  async add(
    deviceId: string,
    patientRef: string,
    secret = generateSecret(),
  ): Promise<{ secret: string; record: DeviceRecord }> {
    if (!DEVICE_ID_PATTERN.test(deviceId)) {
      throw new PipelineError(
        'DeviceNotFound',
        `device id "${deviceId}" must match ${DEVICE_ID_PATTERN.source}`,
      );
    }
    const patientId = parsePatientRef(patientRef);
    const record: DeviceRecord = { deviceId, patientId, createdAt: new Date().toISOString() };
    await this.#redis.hset(this.#key(deviceId), {
      secretHash: await hashSecret(secret),
      patientId,
      createdAt: record.createdAt,
    });
    return { secret, record };
  }

  async get(deviceId: string): Promise<DeviceRecord | undefined> {
    const h = await this.#redis.hgetall(this.#key(deviceId));
    if (!h.patientId || !h.createdAt) return undefined;
    return { deviceId, patientId: h.patientId, createdAt: h.createdAt };
  }

  /** The device's record when the secret matches, else undefined (unknown device or wrong secret). */
  async authenticate(deviceId: string, secret: string): Promise<DeviceRecord | undefined> {
    const h = await this.#redis.hgetall(this.#key(deviceId));
    // Unknown id: the same scrypt work as a wrong secret (no id probing by timing).
    if (!h.secretHash || !h.patientId || !h.createdAt)
      return verifyUnknown(secret).then(() => undefined);
    if (!(await verifySecret(secret, h.secretHash))) return undefined;
    return { deviceId, patientId: h.patientId, createdAt: h.createdAt };
  }

  async remove(deviceId: string): Promise<boolean> {
    return (await this.#redis.del(this.#key(deviceId))) === 1;
  }

  async list(): Promise<DeviceRecord[]> {
    const out: DeviceRecord[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await this.#redis.scan(
        cursor,
        'MATCH',
        `${this.#prefix}:device:*`,
        'COUNT',
        500,
      );
      cursor = next;
      for (const key of keys) {
        const rec = await this.get(key.slice(`${this.#prefix}:device:`.length));
        if (rec) out.push(rec);
      }
    } while (cursor !== '0');
    return out.sort((a, b) => a.deviceId.localeCompare(b.deviceId));
  }
}
