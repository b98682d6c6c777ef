/**
 * The broker's session store (aedes persistence), bounded. aedes keeps, per
 * client id: subscriptions, messages queued for an offline persistent session,
 * inbound QoS 2 packets awaiting PUBREL, wills, and retained messages per topic.
 * The in-memory store aedes ships bounds none of them. This one wraps it:
 *
 *  - subscriptions: only those the SUBSCRIBE rule allows are stored. aedes
 *    stores every filter of a SUBSCRIBE packet as soon as one of them is granted
 *    (lib/handlers/subscribe.js storeSubscriptions), so a refused telemetry
 *    filter next to an allowed one would still queue telemetry offline;
 *  - queued messages: at most MQTT_SESSION_MAX_QUEUED messages and
 *    MQTT_SESSION_MAX_QUEUED_BYTES payload bytes per offline session; more are
 *    not queued (counted). Nothing a device may subscribe to is published today,
 *    so the queue stays empty; the bound holds whatever is added later;
 *  - inbound QoS 2: only the packet id is kept until PUBREL, never the payload
 *    (aedes only asks whether the id is there; the message itself is already in
 *    Redis before PUBREC: broker/index.ts);
 *  - retained messages: never kept (`storeRetained` does nothing; a retained
 *    query finds nothing). The broker is an intake, not a message store.
 *  - `dropSession` deletes everything of one client id (an evicted or expired
 *    session, client-ids.ts).
 * Wills and the subscription index are delegated to aedes-persistence.
 */
import { Readable } from 'node:stream';
import type { Client, Subscription } from 'aedes';
import aedesPersistence from 'aedes-persistence';

/** The promise-style subset of aedes-persistence's in-memory store used here. */
interface InnerStore {
  setup(broker: unknown): Promise<void>;
  addSubscriptions(client: { id: string }, subs: Subscription[]): Promise<void>;
  removeSubscriptions(client: { id: string }, topics: string[]): Promise<void>;
  subscriptionsByClient(client: { id: string }): Promise<unknown[]>;
  subscriptionsByTopic(topic: string): Promise<unknown[]>;
  cleanSubscriptions(client: { id: string }): Promise<unknown>;
  putWill(client: { id: string }, packet: unknown): Promise<unknown>;
  getWill(client: { id: string }): Promise<unknown>;
  delWill(client: { id: string }): Promise<unknown>;
  streamWill(brokers?: unknown): Readable;
  destroy(): Promise<void>;
}

// A CommonJS module whose export is the factory itself; its types describe an ES
// default export, which Node's interop does not give.
const memory = aedesPersistence as unknown as () => InnerStore;

/** The fields of a PUBLISH the queues keep (aedes-packet's Packet). */
interface QueuedPacket {
  cmd: string;
  brokerId?: string;
  brokerCounter?: number;
  topic: string;
  payload: Buffer;
  qos: number;
  retain: boolean;
  dup: boolean;
  messageId?: number;
  [key: string]: unknown;
}

interface Queue {
  packets: QueuedPacket[];
  bytes: number;
}

export interface SessionStoreOptions {
  readonly maxQueued: number;
  readonly maxQueuedBytes: number;
  /** The SUBSCRIBE rule: may this connection hold a subscription to `topic`? */
  readonly allowSubscription: (client: Client, topic: string) => boolean;
  /** A message was not queued for `clientId` because its queue is full. */
  readonly onNotQueued?: (clientId: string) => void;
}

const payloadBytes = (p: { payload?: unknown }) =>
  Buffer.isBuffer(p.payload)
    ? p.payload.length
    : typeof p.payload === 'string'
      ? Buffer.byteLength(p.payload)
      : 0;

export class SessionStore {
  readonly #inner = memory();
  readonly #opts: SessionStoreOptions;
  readonly #outgoing = new Map<string, Queue>();
  readonly #incoming = new Map<string, Map<number, QueuedPacket>>();

  constructor(options: SessionStoreOptions) {
    this.#opts = options;
  }

  // aedes checks that setup is an async function.
  async setup(broker: unknown): Promise<void> {
    await this.#inner.setup(broker);
  }

  // Subscriptions.

  async addSubscriptions(client: Client, subs: Subscription[]): Promise<void> {
    const allowed = subs.filter((s) => this.#opts.allowSubscription(client, s.topic));
    if (allowed.length > 0) await this.#inner.addSubscriptions(client, allowed);
  }

  removeSubscriptions(client: Client, topics: string[]): Promise<void> {
    return this.#inner.removeSubscriptions(client, topics);
  }

  subscriptionsByClient(client: Client): Promise<unknown[]> {
    return this.#inner.subscriptionsByClient(client);
  }

  subscriptionsByTopic(topic: string): Promise<unknown[]> {
    return this.#inner.subscriptionsByTopic(topic);
  }

  cleanSubscriptions(client: Client): Promise<unknown> {
    return this.#inner.cleanSubscriptions(client);
  }

  // Retained messages: never kept.

  async storeRetained(_packet: unknown): Promise<void> {}

  createRetainedStream(_pattern: string): Readable {
    return Readable.from([]);
  }

  createRetainedStreamCombi(_patterns: string[]): Readable {
    return Readable.from([]);
  }

  // Messages queued for a session (the same semantics as aedes-persistence, bounded).

  outgoingEnqueue(sub: { clientId: string }, packet: QueuedPacket): Promise<void> {
    this.#enqueue(sub.clientId, packet);
    return Promise.resolve();
  }

  outgoingEnqueueCombi(subs: { clientId: string }[], packet: QueuedPacket): Promise<void> {
    for (const sub of subs) this.#enqueue(sub.clientId, packet);
    return Promise.resolve();
  }

  outgoingUpdate(client: Client, packet: QueuedPacket): Promise<void> {
    const packets = this.#outgoing.get(client.id)?.packets ?? [];
    for (let i = 0; i < packets.length; i++) {
      const queued = packets[i]!;
      if (queued.brokerId === packet.brokerId) {
        if (queued.brokerCounter === packet.brokerCounter) {
          queued.messageId = packet.messageId;
          return Promise.resolve();
        }
        // Same broker, another counter: packet ids wrap at 65535; keep looking.
      } else if (queued.messageId === packet.messageId) {
        packets[i] = packet;
        return Promise.resolve();
      }
    }
    return Promise.reject(new Error('no such packet'));
  }

  outgoingClearMessageId(
    client: Client,
    packet: { messageId?: number },
  ): Promise<QueuedPacket | undefined> {
    const queue = this.#outgoing.get(client.id);
    const at = queue ? queue.packets.findIndex((p) => p.messageId === packet.messageId) : -1;
    if (!queue || at < 0) return Promise.resolve(undefined);
    const [gone] = queue.packets.splice(at, 1);
    queue.bytes -= payloadBytes(gone!);
    if (queue.packets.length === 0) this.#outgoing.delete(client.id);
    return Promise.resolve(gone);
  }

  outgoingStream(client: Client): Readable {
    return Readable.from([...(this.#outgoing.get(client.id)?.packets ?? [])]);
  }

  /** Messages queued for `clientId` (tests, metrics). */
  queued(clientId: string): { readonly messages: number; readonly bytes: number } {
    const q = this.#outgoing.get(clientId);
    return { messages: q?.packets.length ?? 0, bytes: q?.bytes ?? 0 };
  }

  // Inbound QoS 2 awaiting PUBREL: the packet id only (MQTT-4.3.3-2 needs no more).

  incomingStorePacket(client: Client, packet: QueuedPacket): Promise<void> {
    const ids = this.#incoming.get(client.id) ?? new Map<number, QueuedPacket>();
    this.#incoming.set(client.id, ids);
    ids.set(packet.messageId ?? 0, {
      cmd: packet.cmd,
      topic: packet.topic,
      payload: Buffer.alloc(0),
      qos: packet.qos,
      retain: false,
      dup: false,
      messageId: packet.messageId,
    });
    return Promise.resolve();
  }

  incomingGetPacket(client: Client, packet: { messageId?: number }): Promise<QueuedPacket> {
    const found = this.#incoming.get(client.id)?.get(packet.messageId ?? 0);
    return found ? Promise.resolve(found) : Promise.reject(new Error('no such packet'));
  }

  incomingDelPacket(client: Client, packet: { messageId?: number }): Promise<void> {
    const ids = this.#incoming.get(client.id);
    if (!ids?.delete(packet.messageId ?? 0)) return Promise.reject(new Error('no such packet'));
    if (ids.size === 0) this.#incoming.delete(client.id);
    return Promise.resolve();
  }

  /** Inbound QoS 2 ids held for `clientId` (tests). */
  incomingCount(clientId: string): number {
    return this.#incoming.get(clientId)?.size ?? 0;
  }

  cleanIncoming(client: { id: string }): Promise<void> {
    this.#incoming.delete(client.id);
    return Promise.resolve();
  }

  // Wills.

  putWill(client: Client, packet: unknown): Promise<unknown> {
    return this.#inner.putWill(client, packet);
  }

  getWill(client: Client): Promise<unknown> {
    return this.#inner.getWill(client);
  }

  delWill(client: { id: string }): Promise<unknown> {
    return this.#inner.delWill(client);
  }

  streamWill(brokers?: unknown): Readable {
    return this.#inner.streamWill(brokers);
  }

  /** Deletes everything kept for `clientId` (an evicted or expired session). */
  async dropSession(clientId: string): Promise<void> {
    this.#outgoing.delete(clientId);
    this.#incoming.delete(clientId);
    await this.#inner.cleanSubscriptions({ id: clientId });
  }

  destroy(): Promise<void> {
    return this.#inner.destroy();
  }

  #enqueue(clientId: string, packet: QueuedPacket): void {
    const queue = this.#outgoing.get(clientId) ?? { packets: [], bytes: 0 };
    const size = payloadBytes(packet);
    if (
      queue.packets.length >= this.#opts.maxQueued ||
      queue.bytes + size > this.#opts.maxQueuedBytes
    ) {
      this.#opts.onNotQueued?.(clientId);
      return;
    }
    // A copy, as aedes-persistence makes: the packet id is set when it is sent.
    queue.packets.push({ ...packet, messageId: undefined });
    queue.bytes += size;
    this.#outgoing.set(clientId, queue);
  }
}
