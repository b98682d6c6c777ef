/**
 * The broker's CONNECT and session parts, without a network: budgets reserved
 * before the secret check (connect-budgets.ts), the fair secret-check pool,
 * client ids owned by devices (client-ids.ts), the idle-socket cap, the
 * SUBSCRIBE rule, and the bounded session store.
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { Client } from 'aedes';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { describe, expect, it } from 'vitest';
import { subscribeRefusal } from '../../broker/authorize.js';
import { ClientIds } from '../../broker/client-ids.js';
import { ConnectBudgets } from '../../broker/connect-budgets.js';
import { PoolBusy, SecretCheckPool } from '../../broker/secret-check-pool.js';
import { SessionStore } from '../../broker/session-store.js';
import { SocketGate } from '../../broker/socket-gate.js';

function budgets(addressPoints: number, devicePoints: number, knownDeviceMs = 60_000) {
  return new ConnectBudgets({
    addressFailures: new RateLimiterMemory({ points: addressPoints, duration: 60 }),
    deviceAttempts: new RateLimiterMemory({ points: devicePoints, duration: 60 }),
    knownDeviceMs,
  });
}

describe('ConnectBudgets', () => {
  const refuse = async (b: ConnectBudgets, address: string, id: string) => {
    const r = await b.reserve(address, id);
    if (r.ok) await r.reservation.settle('refused');
    return r.ok;
  };

  it('counts failures at once and refuses a spent address outright', async () => {
    const b = budgets(3, 1000);
    const r = await b.reserve('10.0.0.1', 'a');
    if (!r.ok) throw new Error('refused');
    expect(r.reservation.unitsLeft()).toBe(3);
    r.reservation.failed(); // in memory at once, before Redis
    expect(r.reservation.unitsLeft()).toBe(2);
    await r.reservation.settle('refused'); // not counted twice
    expect(r.reservation.unitsLeft()).toBe(2);
    await refuse(b, '10.0.0.1', 'b');
    await refuse(b, '10.0.0.1', 'c');
    expect(await b.reserve('10.0.0.1', 'd')).toEqual({ ok: false, reason: 'too-many-failures' });
    // Another address has its own budget.
    expect((await b.reserve('10.0.0.2', 'x')).ok).toBe(true);
  });

  it('does not count accepted CONNECTs nor refusals of ours', async () => {
    const b = budgets(2, 1000);
    for (let i = 0; i < 5; i++) {
      for (const outcome of ['accepted', 'void'] as const) {
        const r = await b.reserve('10.0.0.1', `dev-${outcome}-${i}`);
        if (!r.ok) throw new Error(`refused: ${r.reason}`);
        await r.reservation.settle(outcome);
      }
    }
    expect(await refuse(b, '10.0.0.1', 'x')).toBe(true);
    expect(await refuse(b, '10.0.0.1', 'y')).toBe(true);
    expect(await b.reserve('10.0.0.1', 'z')).toEqual({ ok: false, reason: 'too-many-failures' });
  });

  it('limits checks per device id, whatever their outcome, without charging the address', async () => {
    const b = budgets(5, 3);
    for (let i = 0; i < 3; i++) {
      const r = await b.reserve(`10.0.0.${i}`, 'loop-device');
      if (!r.ok) throw new Error('refused');
      expect(await r.reservation.attempt()).toBe(true);
      await r.reservation.settle('accepted');
    }
    const fourth = await b.reserve('10.0.0.9', 'loop-device');
    if (!fourth.ok) throw new Error('refused');
    expect(await fourth.reservation.attempt()).toBe(false);
    await fourth.reservation.settle('void');
    // Nothing was charged to 10.0.0.9: five failures are still possible there.
    for (let i = 0; i < 5; i++) expect(await refuse(b, '10.0.0.9', `d${i}`)).toBe(true);
    expect(await refuse(b, '10.0.0.9', 'd5')).toBe(false);
  });

  it('reads an address once for CONNECTs arriving together', async () => {
    const failures = new RateLimiterMemory({ points: 10, duration: 60 });
    let reads = 0;
    const get = failures.get.bind(failures);
    failures.get = (key, options) => {
      reads++;
      return get(key, options);
    };
    const b = new ConnectBudgets({
      addressFailures: failures,
      deviceAttempts: new RateLimiterMemory({ points: 10, duration: 60 }),
      knownDeviceMs: 0,
    });
    const all = await Promise.all(
      Array.from({ length: 50 }, (_, i) => b.reserve('10.0.0.1', `d${i}`)),
    );
    expect(all.every((r) => r.ok)).toBe(true);
    expect(reads).toBe(1);
  });

  it('lets a device known at an address in while that address has spent its budget (NAT)', async () => {
    const b = budgets(2, 100);
    const known = await b.reserve('192.0.2.7', 'bedside-1');
    if (!known.ok) throw new Error('refused');
    await known.reservation.settle('accepted');
    // Someone behind the same NAT address spends its failure budget.
    for (let i = 0; i < 2; i++) await refuse(b, '192.0.2.7', `nobody-${i}`);
    expect(await b.reserve('192.0.2.7', 'new-device')).toEqual({
      ok: false,
      reason: 'too-many-failures',
    });
    const again = await b.reserve('192.0.2.7', 'bedside-1');
    expect(again.ok && again.reservation.unitsLeft()).toBe(Infinity);
  });
});

describe('SecretCheckPool', () => {
  const deferred = () => {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    return { promise, resolve };
  };

  it('runs at most `concurrency` checks, and gives a free place to the address with fewest running', async () => {
    const pool = new SecretCheckPool({
      concurrency: 1,
      maxPendingPerAddress: 100,
      maxPending: 1000,
      maxWaitMs: 10_000,
    });
    const order: string[] = [];
    const gates = new Map<string, { promise: Promise<void>; resolve: () => void }>();
    const check = (label: string) => () => {
      order.push(label);
      const d = deferred();
      gates.set(label, d);
      return d.promise;
    };
    // A flood from one address is in line before a device from another one.
    const runs = [
      ...Array.from({ length: 5 }, (_, i) => pool.run('attacker', check(`a${i}`))),
      pool.run('hospital', check('h0')),
    ];
    expect(pool.running).toBe(1);
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setImmediate(r));
      gates.get(order[order.length - 1]!)!.resolve();
    }
    await Promise.all(runs);
    // a0 was running; the next free place goes to the hospital, which has
    // nothing running, not to the attacker's line.
    expect(order).toEqual(['a0', 'h0', 'a1', 'a2', 'a3', 'a4']);
  });

  it('never gives every place to an address with failures; a clean one may use them all', () => {
    const pool = new SecretCheckPool({
      concurrency: 2,
      maxPendingPerAddress: 100,
      maxPending: 1000,
      maxWaitMs: 10_000,
    });
    const never = () => new Promise<void>(() => undefined);
    const failing = { unitsLeft: () => 8, clean: () => false };
    for (let i = 0; i < 5; i++) void pool.run('attacker', never, failing).catch(() => undefined);
    expect(pool.running).toBe(1); // the second place stays free for others
    let started = false;
    void pool.run('hospital', () => {
      started = true;
      return never();
    });
    expect(started).toBe(true);
    expect(pool.running).toBe(2);
    // A fleet behind one NAT with no failure gets both places.
    const fleet = new SecretCheckPool({
      concurrency: 2,
      maxPendingPerAddress: 100,
      maxPending: 1000,
      maxWaitMs: 10_000,
    });
    for (let i = 0; i < 5; i++) void fleet.run('nat', never);
    expect(fleet.running).toBe(2);
  });

  it('runs no more checks for an address than its budget has units left, and refuses the rest once spent', async () => {
    const pool = new SecretCheckPool({
      concurrency: 4,
      maxPendingPerAddress: 100,
      maxPending: 1000,
      maxWaitMs: 10_000,
    });
    let units = 2;
    let running = 0;
    let most = 0;
    // Every check fails and spends a unit before giving its place up.
    const failing = async () => {
      running++;
      most = Math.max(most, running);
      await new Promise((r) => setTimeout(r, 5));
      units--;
      running--;
    };
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, () =>
        pool.run('attacker', failing, { unitsLeft: () => units, clean: () => false }),
      ),
    );
    // Two in flight at most: its units (2), below its share of places (3).
    expect(most).toBe(2);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(2);
    const reasons = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    expect(reasons).toEqual(Array.from({ length: 4 }, () => new PoolBusy('spent')));
  });

  it('refuses past the per-address and global caps, and after waiting too long', async () => {
    const pool = new SecretCheckPool({
      concurrency: 1,
      maxPendingPerAddress: 2,
      maxPending: 3,
      maxWaitMs: 50,
    });
    const never = () => new Promise<void>(() => undefined);
    void pool.run('a', never).catch(() => undefined);
    const second = pool.run('a', never);
    await expect(pool.run('a', never)).rejects.toEqual(new PoolBusy('address-busy'));
    void pool.run('b', never).catch(() => undefined);
    await expect(pool.run('c', never)).rejects.toEqual(new PoolBusy('busy'));
    await expect(second).rejects.toEqual(new PoolBusy('wait-timeout'));
  });
});

describe('ClientIds', () => {
  const conn = () => ({});

  it("refuses another device's client id, connected or persistent, and lets a device take its own over", () => {
    const ids = new ClientIds({ maxPerDevice: 4, expiryMs: 60_000 });
    const victim = conn();
    expect(ids.claim('monitor-7', 'dev-a', victim, true, 0)).toEqual({ ok: true, evicted: [] });
    expect(ids.claim('monitor-7', 'dev-b', conn(), false, 1)).toEqual({
      ok: false,
      reason: 'client-id-taken',
    });
    // Offline, the persistent session still belongs to dev-a.
    ids.release('monitor-7', victim, 2);
    expect(ids.claim('monitor-7', 'dev-b', conn(), false, 3)).toMatchObject({ ok: false });
    const again = conn();
    expect(ids.claim('monitor-7', 'dev-a', again, false, 4).ok).toBe(true);
    // A clean session ends with its connection.
    ids.release('monitor-7', again, 5);
    expect(ids.holder('monitor-7')).toBeUndefined();
  });

  it('ignores the end of a connection that was taken over', () => {
    const ids = new ClientIds({ maxPerDevice: 4, expiryMs: 60_000 });
    const first = conn();
    const second = conn();
    ids.claim('x', 'dev', first, false, 0);
    ids.claim('x', 'dev', second, false, 1);
    ids.release('x', first, 2);
    expect(ids.holder('x')).toBe('dev');
  });

  it('bounds the ids of one device: the oldest offline session gives way, connected ones never', () => {
    const ids = new ClientIds({ maxPerDevice: 2, expiryMs: 60_000 });
    const a = conn();
    const b = conn();
    ids.claim('s1', 'dev', a, true, 0);
    ids.claim('s2', 'dev', b, true, 1);
    expect(ids.claim('s3', 'dev', conn(), true, 2)).toEqual({
      ok: false,
      reason: 'too-many-sessions',
    });
    ids.release('s1', a, 3);
    ids.release('s2', b, 4);
    expect(ids.claim('s3', 'dev', conn(), true, 5)).toEqual({ ok: true, evicted: ['s1'] });
    expect(ids.count('dev')).toBe(2);
  });

  it('forgets offline persistent sessions after expiryMs', () => {
    const ids = new ClientIds({ maxPerDevice: 4, expiryMs: 1000 });
    const a = conn();
    ids.claim('s1', 'dev', a, true, 0);
    ids.claim('s2', 'dev', conn(), true, 0);
    ids.release('s1', a, 100);
    expect(ids.expire(1099)).toEqual([]);
    expect(ids.expire(1100)).toEqual(['s1']);
    expect(ids.holder('s2')).toBe('dev'); // connected: never expires
  });
});

describe('SocketGate', () => {
  const socket = (address: string, port: number) =>
    Object.assign(new EventEmitter(), {
      remoteAddress: address,
      remotePort: port,
      destroyed: false,
      destroy() {
        this.destroyed = true;
      },
    }) as unknown as Socket & EventEmitter;

  it('caps unauthenticated sockets per address; authenticated or closed ones free a place', () => {
    const refused: string[] = [];
    const gate = new SocketGate({ maxIdlePerAddress: 2, onRefused: (a) => refused.push(a) });
    const s1 = socket('::ffff:10.0.0.1', 1);
    const s2 = socket('10.0.0.1', 2);
    const s3 = socket('10.0.0.1', 3);
    expect([gate.admit(s1), gate.admit(s2), gate.admit(s3)]).toEqual([true, true, false]);
    expect(s3.destroyed).toBe(true);
    expect(refused).toEqual(['10.0.0.1']);
    expect(gate.admit(socket('10.0.0.2', 1))).toBe(true); // another address
    gate.authenticated('10.0.0.1', 1);
    expect(gate.admit(socket('10.0.0.1', 4))).toBe(true);
    s2.emit('close');
    expect(gate.idle('10.0.0.1')).toBe(1);
  });
});

describe('the SUBSCRIBE rule', () => {
  it('allows named topics under the device, never telemetry or a wildcard in its place', () => {
    expect(subscribeRefusal('d1', 'devices/d1/commands')).toBeUndefined();
    expect(subscribeRefusal('d1', 'devices/d1/commands/#')).toBeUndefined();
    for (const f of [
      'devices/d1/telemetry',
      'devices/d1/telemetry/#',
      'devices/d1/#',
      'devices/d1/+',
    ])
      expect(subscribeRefusal('d1', f), f).toBe('telemetry-topic');
    for (const f of ['devices/d2/commands', 'devices/+/commands', '#', 'devices/d1', '$SYS/#'])
      expect(subscribeRefusal('d1', f), f).toBe('topic-not-allowed');
    expect(subscribeRefusal(undefined, 'devices/d1/commands')).toBe('not-authenticated');
  });
});

describe('SessionStore', () => {
  const client = (id: string) => ({ id }) as unknown as Client;
  const packet = (n: number, bytes: number) => ({
    cmd: 'publish',
    brokerId: 'b',
    brokerCounter: n,
    topic: 'devices/d1/commands',
    payload: Buffer.alloc(bytes),
    qos: 1,
    retain: false,
    dup: false,
  });

  function store(maxQueued = 3, maxQueuedBytes = 1000) {
    let notQueued = 0;
    const s = new SessionStore({
      maxQueued,
      maxQueuedBytes,
      allowSubscription: (_c, topic) => subscribeRefusal('d1', topic) === undefined,
      onNotQueued: () => notQueued++,
    });
    return { s, notQueued: () => notQueued };
  }

  it('queues at most maxQueued messages and maxQueuedBytes per session', async () => {
    const { s, notQueued } = store(3, 1000);
    for (let i = 1; i <= 5; i++)
      await s.outgoingEnqueueCombi([{ clientId: 'c1' }, { clientId: 'c2' }], packet(i, 100));
    expect(s.queued('c1')).toEqual({ messages: 3, bytes: 300 });
    await s.outgoingEnqueue({ clientId: 'c3' }, packet(1, 900));
    await s.outgoingEnqueue({ clientId: 'c3' }, packet(2, 200));
    expect(s.queued('c3')).toEqual({ messages: 1, bytes: 900 });
    expect(notQueued()).toBe(5);
    // Sent and acknowledged: the place is free again.
    const p = { ...packet(1, 100), messageId: 42 };
    await s.outgoingUpdate(client('c1'), p);
    await s.outgoingClearMessageId(client('c1'), p);
    expect(s.queued('c1')).toEqual({ messages: 2, bytes: 200 });
  });

  it('stores only the subscriptions the SUBSCRIBE rule allows (aedes passes the whole packet)', async () => {
    const { s } = store();
    await s.setup({ id: 'test' });
    await s.addSubscriptions(client('c1'), [
      { topic: 'devices/d1/telemetry', qos: 1 },
      { topic: 'devices/d1/commands', qos: 1 },
    ]);
    expect(await s.subscriptionsByTopic('devices/d1/telemetry')).toEqual([]);
    expect(await s.subscriptionsByTopic('devices/d1/commands')).toHaveLength(1);
    await s.dropSession('c1');
    expect(await s.subscriptionsByTopic('devices/d1/commands')).toEqual([]);
  });

  it('keeps no retained message and no QoS 2 payload', async () => {
    const { s } = store();
    await s.storeRetained({ ...packet(1, 100), retain: true });
    const retained: unknown[] = [];
    for await (const p of s.createRetainedStreamCombi(['#'])) retained.push(p);
    expect(retained).toEqual([]);
    await s.incomingStorePacket(client('c1'), { ...packet(1, 200_000), qos: 2, messageId: 7 });
    const kept = await s.incomingGetPacket(client('c1'), { messageId: 7 });
    expect(kept.payload.length).toBe(0);
    await s.incomingDelPacket(client('c1'), { messageId: 7 });
    expect(s.incomingCount('c1')).toBe(0);
  });
});
