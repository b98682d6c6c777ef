/**
 * The gateway bounds the requests it has in flight (`maxRequests`,
 * FHIR_CONCURRENCY_MAX): reads, searches and writes beyond the bound wait for
 * a slot, FIFO; Bundles sent `paced` (the store's Observation writes, bounded
 * by its adaptive limit) do not take one. The server here holds each request
 * until the test lets it go, so what it sees in flight is exact, not timed.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createFhirGateway } from '../../src/fhir/gateway.js';

interface Held {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
}

/** An HTTP server that answers nothing until `release()`; counts what is in flight. */
async function holdingServer() {
  const held: Held[] = [];
  const seen: string[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const waiters: (() => void)[] = [];
  const server = createServer((req, res) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    seen.push(`${req.method ?? ''} ${req.url ?? ''}`);
    res.on('finish', () => inFlight--);
    held.push({ req, res });
    for (const w of waiters.splice(0)) w();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  const answer = ({ req, res }: Held) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/fhir+json');
      const body =
        req.method === 'POST'
          ? { resourceType: 'Bundle', type: 'transaction-response', entry: [] }
          : { resourceType: 'Patient', id: 'p' };
      res.end(JSON.stringify(body));
    });
  };
  return {
    url: `http://127.0.0.1:${port}/fhir`,
    seen,
    get maxInFlight() {
      return maxInFlight;
    },
    /** Resolves once the server has received `n` requests in all. */
    async received(n: number) {
      const deadline = Date.now() + 30_000;
      while (seen.length < n) {
        if (Date.now() > deadline) throw new Error(`only ${seen.length}/${n} requests arrived`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 1000).unref();
        });
      }
    },
    /** Answers the oldest held request. */
    releaseOne() {
      const h = held.shift();
      if (!h) throw new Error('no request is held');
      answer(h);
    },
    releaseAll() {
      for (const h of held.splice(0)) answer(h);
    },
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

let close: (() => Promise<void>) | undefined;
afterEach(async () => {
  await close?.();
  close = undefined;
});

describe('the gateway bounds its requests in flight (maxRequests)', () => {
  it('sends at most maxRequests at once; the rest wait their turn, in order', async () => {
    const server = await holdingServer();
    close = server.close;
    const gateway = createFhirGateway({ baseUrl: server.url, timeoutMs: 60_000, maxRequests: 3 });

    const reads = Array.from({ length: 10 }, (_, i) => gateway.read('Patient', `p${i}`));
    await server.received(3);
    // That nothing more comes needs a window. Unbounded, the 7 others arrive
    // within milliseconds; a slow machine can only make this miss a broken
    // bound, never fail a working one.
    await new Promise((r) => setTimeout(r, 500));
    expect(server.seen).toEqual([
      'GET /fhir/Patient/p0',
      'GET /fhir/Patient/p1',
      'GET /fhir/Patient/p2',
    ]);

    // Each answer frees one slot: exactly one more request arrives, the next in line.
    server.releaseOne();
    await server.received(4);
    expect(server.seen[3]).toBe('GET /fhir/Patient/p3');

    // Let the rest through as they come.
    while (server.seen.length < 10) {
      server.releaseAll();
      await server.received(Math.min(10, server.seen.length + 1));
    }
    server.releaseAll();
    await Promise.all(reads);
    // (Requests let go together may reach the server in any order.)
    expect([...server.seen].sort()).toEqual(
      Array.from({ length: 10 }, (_, i) => `GET /fhir/Patient/p${i}`).sort(),
    );
    expect(server.maxInFlight).toBe(3);
  });

  it('a paced Bundle does not wait behind the bounded requests', async () => {
    const server = await holdingServer();
    close = server.close;
    const gateway = createFhirGateway({ baseUrl: server.url, timeoutMs: 60_000, maxRequests: 2 });

    const reads = [gateway.read('Patient', 'a'), gateway.read('Patient', 'b')];
    await server.received(2);
    // Both slots are taken: an association sync's transaction waits, the store's paced one goes.
    const bounded = gateway.transaction([]);
    const paced = gateway.transaction([], { paced: true });
    await server.received(3);
    expect(server.seen).toEqual(['GET /fhir/Patient/a', 'GET /fhir/Patient/b', 'POST /fhir/']);
    expect(server.maxInFlight).toBe(3);

    server.releaseAll();
    await paced;
    await Promise.all(reads);
    await server.received(4);
    server.releaseAll();
    await bounded;
    expect(server.seen).toHaveLength(4);
  });

  it('without maxRequests nothing waits', async () => {
    const server = await holdingServer();
    close = server.close;
    const gateway = createFhirGateway({ baseUrl: server.url, timeoutMs: 60_000 });
    const reads = Array.from({ length: 6 }, (_, i) => gateway.read('Patient', `p${i}`));
    await server.received(6);
    expect(server.maxInFlight).toBe(6);
    server.releaseAll();
    await Promise.all(reads);
  });
});
