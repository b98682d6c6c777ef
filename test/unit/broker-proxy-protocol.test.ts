/**
 * The PROXY protocol gate (broker/proxy-protocol.ts) on real loopback sockets:
 * v1 and v2 headers (HAProxy's spec, 2.1 and 2.2), a header split over several
 * writes, the bytes after it handed on unchanged, and the refusals: no header,
 * the wrong version, a LOCAL header without an address, a balancer outside
 * MQTT_PROXY_TRUSTED, and a header that never comes.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  headerLength,
  peerOfSocket,
  readProxyHeader,
  trustedProxies,
  type Peer,
  type ProxyGateOptions,
  type ProxyRefusal,
} from '../../broker/proxy-protocol.js';

const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/** A v2 header (spec 2.2): PROXY (0x21) or LOCAL (0x20), TCP over IPv4 (0x11). */
function v2Header(source: [number, number, number, number], port: number, local = false): Buffer {
  const addresses = Buffer.alloc(12);
  Buffer.from(source).copy(addresses, 0);
  Buffer.from([127, 0, 0, 1]).copy(addresses, 4);
  addresses.writeUInt16BE(port, 8);
  addresses.writeUInt16BE(1883, 10);
  const fixed = Buffer.from([local ? 0x20 : 0x21, 0x11, 0, 12]);
  return Buffer.concat([V2_SIGNATURE, fixed, addresses]);
}

interface Outcome {
  readonly peer?: Peer;
  readonly refused?: ProxyRefusal;
  /** What the next reader got after the header. */
  readonly rest?: string;
}

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A server gating each socket; the client writes `chunks` one by one. */
async function gate(
  options: Partial<ProxyGateOptions>,
  chunks: readonly Buffer[],
): Promise<Outcome> {
  return new Promise((resolve) => {
    const server = createServer((socket: Socket) => {
      readProxyHeader(
        socket,
        {
          mode: 'any',
          trusted: undefined,
          timeoutMs: 2000,
          onRefused: (refused) => resolve({ refused }),
          ...options,
        },
        (peer) => {
          socket.resume();
          socket.once('data', (rest: Buffer) => {
            expect(peerOfSocket(socket)).toEqual(peer);
            resolve({ peer, rest: rest.toString() });
          });
        },
      );
    });
    servers.push(server);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      const client = connect({ port, host: '127.0.0.1' }, () => {
        void (async () => {
          for (const chunk of chunks) {
            client.write(chunk);
            await new Promise((r) => setTimeout(r, 20));
          }
        })();
      });
      // Neither handed on nor refused: the test fails on an empty outcome.
      setTimeout(() => resolve({}), 5000).unref();
      client.on('error', () => undefined);
    });
  });
}

describe('the PROXY protocol gate', () => {
  it('reads a v1 header, even split over writes, and hands the rest on', async () => {
    const header = 'PROXY TCP4 10.1.2.3 127.0.0.1 40000 1883\r\n';
    const out = await gate({ mode: 'v1' }, [
      Buffer.from(header.slice(0, 9)),
      Buffer.from(header.slice(9) + 'MQTT'),
    ]);
    expect(out).toEqual({ peer: { address: '10.1.2.3', port: 40000 }, rest: 'MQTT' });
  });

  it('reads a v2 header and hands the rest on', async () => {
    const out = await gate({ mode: 'v2' }, [
      Buffer.concat([v2Header([10, 9, 8, 7], 50000), Buffer.from('MQTT')]),
    ]);
    expect(out).toEqual({ peer: { address: '10.9.8.7', port: 50000 }, rest: 'MQTT' });
  });

  it('refuses no header, the other version, and a header without an address', async () => {
    expect(await gate({}, [Buffer.from([0x10, 0x0c, 0, 4])])).toEqual({
      refused: 'missing-proxy-header',
    });
    expect(await gate({ mode: 'v1' }, [v2Header([10, 0, 0, 1], 1)])).toEqual({
      refused: 'missing-proxy-header',
    });
    expect(await gate({ mode: 'v2' }, [Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n')])).toEqual(
      { refused: 'missing-proxy-header' },
    );
    expect(await gate({}, [v2Header([10, 0, 0, 1], 1, true)])).toEqual({
      refused: 'invalid-proxy-header',
    });
  });

  it('closes a balancer outside MQTT_PROXY_TRUSTED, and a header that never comes', async () => {
    expect(await gate({ trusted: trustedProxies(['10.0.0.0/8', '::1']) }, [])).toEqual({
      refused: 'untrusted-proxy',
    });
    expect(await gate({ trusted: trustedProxies(['127.0.0.0/8']), timeoutMs: 200 }, [])).toEqual({
      refused: 'missing-proxy-header',
    });
  });

  it('frames headers: complete, incomplete, not one', () => {
    expect(headerLength(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nx'), 'any')).toBe(32);
    expect(headerLength(Buffer.from('PROX'), 'any')).toBe(0);
    expect(headerLength(Buffer.from(`PROXY ${'x'.repeat(120)}`), 'any')).toBe(-1);
    expect(headerLength(v2Header([1, 2, 3, 4], 5).subarray(0, 15), 'any')).toBe(0);
    expect(headerLength(v2Header([1, 2, 3, 4], 5), 'any')).toBe(28);
  });
});
