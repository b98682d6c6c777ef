/**
 * Which device holds each MQTT client id, and how many sessions a device holds.
 *
 *  - A client id belongs to the device holding it, connected or with a
 *    persistent session: a CONNECT from another device with that id is refused
 *    (CONNACK 2, identifier rejected) and the holder stays connected, its
 *    session untouched. Only the same device may take its own id over
 *    (MQTT-3.1.4-2: aedes then closes the older connection).
 *  - A device holds at most `maxPerDevice` client ids at once, connected or
 *    persistent. A new one takes the place of the device's least recently seen
 *    offline persistent session; when all are connected it is refused.
 *  - An offline persistent session is forgotten after `expiryMs`.
 *
 * Pure state (the clock comes in as an argument). The caller deletes the
 * session data of the ids this returns (session-store.ts). Per broker: brokers
 * share no sessions, so a client id is held on the broker it connected to.
 */

interface Holding {
  readonly deviceId: string;
  /** The connection holding it now; undefined for an offline persistent session. */
  client: object | undefined;
  persistent: boolean;
  seenAt: number;
}

export type ClaimVerdict =
  | { readonly ok: true; readonly evicted: readonly string[] }
  | { readonly ok: false; readonly reason: 'client-id-taken' | 'too-many-sessions' };

export interface ClientIdsOptions {
  readonly maxPerDevice: number;
  readonly expiryMs: number;
}

export class ClientIds {
  readonly #opts: ClientIdsOptions;
  readonly #byId = new Map<string, Holding>();
  readonly #byDevice = new Map<string, Set<string>>();

  constructor(options: ClientIdsOptions) {
    this.#opts = options;
  }

  /** The device holding `clientId`, if any. */
  holder(clientId: string): string | undefined {
    return this.#byId.get(clientId)?.deviceId;
  }

  /** Client ids `deviceId` holds. */
  count(deviceId: string): number {
    return this.#byDevice.get(deviceId)?.size ?? 0;
  }

  /** `client` (a connection of `deviceId`) asks for `clientId`. */
  claim(
    clientId: string,
    deviceId: string,
    client: object,
    persistent: boolean,
    now: number,
  ): ClaimVerdict {
    const held = this.#byId.get(clientId);
    if (held && held.deviceId !== deviceId) return { ok: false, reason: 'client-id-taken' };
    if (held) {
      // The same device taking its own id over (or resuming its session).
      held.client = client;
      held.persistent = persistent;
      held.seenAt = now;
      return { ok: true, evicted: [] };
    }
    const ids = this.#byDevice.get(deviceId) ?? new Set<string>();
    const evicted: string[] = [];
    if (ids.size >= this.#opts.maxPerDevice) {
      let oldest: string | undefined;
      for (const id of ids) {
        const h = this.#byId.get(id)!;
        if (
          h.client === undefined &&
          (oldest === undefined || h.seenAt < this.#byId.get(oldest)!.seenAt)
        )
          oldest = id;
      }
      if (oldest === undefined) return { ok: false, reason: 'too-many-sessions' };
      this.#forget(oldest);
      evicted.push(oldest);
    }
    ids.add(clientId);
    this.#byDevice.set(deviceId, ids);
    this.#byId.set(clientId, { deviceId, client, persistent, seenAt: now });
    return { ok: true, evicted };
  }

  /** The connection `client` holding `clientId` ended: a persistent session stays, offline. */
  release(clientId: string, client: object, now: number): void {
    const held = this.#byId.get(clientId);
    if (!held || held.client !== client) return; // taken over, or never held
    if (held.persistent) {
      held.client = undefined;
      held.seenAt = now;
    } else {
      this.#forget(clientId);
    }
  }

  /** Forgets offline persistent sessions unseen for `expiryMs`; returns their client ids. */
  expire(now: number): string[] {
    const gone: string[] = [];
    for (const [id, h] of this.#byId)
      if (h.client === undefined && now - h.seenAt >= this.#opts.expiryMs) gone.push(id);
    for (const id of gone) this.#forget(id);
    return gone;
  }

  #forget(clientId: string): void {
    const held = this.#byId.get(clientId);
    if (!held) return;
    this.#byId.delete(clientId);
    const ids = this.#byDevice.get(held.deviceId);
    ids?.delete(clientId);
    if (ids?.size === 0) this.#byDevice.delete(held.deviceId);
  }
}
