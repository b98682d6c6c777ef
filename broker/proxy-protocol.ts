/**
 * PROXY protocol (HAProxy's "PROXY protocol" spec, v1 text and v2 binary) on
 * the TCP and TLS listeners, when MQTT_PROXY_PROTOCOL is not `off`. A TCP load
 * balancer (HAProxy `send-proxy-v2`) writes one header before the client's
 * bytes, naming the client's address; with it the socket gate, the
 * failed-CONNECT budget, logs and refusal metrics see the device's address,
 * not the balancer's.
 *
 * Security: when on, every connection must open with a valid header of the
 * configured version, or it is closed before TLS or MQTT see a byte; when off,
 * a header is never read (a client could write one and claim any address). So
 * when on, the port must be reachable from the load balancer only;
 * MQTT_PROXY_TRUSTED (addresses or CIDR ranges) also closes, at accept, any
 * connection that does not come from one of them. Until its header arrives a
 * socket's client is unknown, so the idle-socket cap counts it only from then
 * on; MQTT_CONNECT_TIMEOUT_MS bounds the wait, MQTT_PROXY_TRUSTED who may open one.
 *
 * This module only frames the header (how many bytes it has: v1 ends with CRLF
 * within 107 bytes, spec 2.1; v2 is 16 bytes plus the length in bytes 15-16,
 * spec 2.2); aedes-protocol-decoder (proxy-protocol-js) parses it. The bytes
 * after the header are pushed back onto the socket for TLS or MQTT to read.
 * A v2 LOCAL or v1 UNKNOWN header (a balancer's own health check) names no
 * client and is refused (`invalid-proxy-header`); HAProxy's plain TCP check
 * opens and closes without sending anything, which is not counted.
 */
import { BlockList, isIPv6, type Socket } from 'node:net';
import { protocolDecoder } from 'aedes-protocol-decoder';
import { normalizeAddress } from './socket-gate.js';

export type ProxyProtocolMode = 'off' | 'v1' | 'v2' | 'any';

export type ProxyRefusal = 'untrusted-proxy' | 'invalid-proxy-header' | 'missing-proxy-header';

export interface Peer {
  readonly address: string;
  readonly port: number | undefined;
}

const V1_SIGNATURE = Buffer.from('PROXY ', 'latin1');
const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
/** Spec 2.1: a v1 header is at most 107 bytes, CRLF included. */
const V1_MAX_BYTES = 107;
/** v2 addresses take at most 216 bytes (unix sockets); room for a few TLVs beyond that. */
const V2_MAX_BYTES = 16 + 1024;

/** The client behind the balancer, per socket that came with a PROXY header. */
const proxied = new WeakMap<object, Peer>();

/**
 * The client's address of a socket: from its PROXY header when it had one,
 * else the socket's own peer. A TLS socket is looked up by the TCP socket it
 * wraps (Node's TLSSocket keeps it as `_parent`, lib/_tls_wrap.js).
 */
export function peerOfSocket(
  socket: { remoteAddress?: string; remotePort?: number } | undefined,
): Peer {
  if (socket) {
    const parent = (socket as { _parent?: object | null })._parent;
    const found = proxied.get(socket) ?? (parent ? proxied.get(parent) : undefined);
    if (found) return found;
  }
  return { address: normalizeAddress(socket?.remoteAddress), port: socket?.remotePort };
}

/** MQTT_PROXY_TRUSTED: comma-separated addresses or CIDR ranges, IPv4 or IPv6. */
export function trustedProxies(list: readonly string[]): BlockList | undefined {
  if (list.length === 0) return undefined;
  const allowed = new BlockList();
  for (const entry of list) {
    const [address = '', bits] = entry.split('/');
    const type = isIPv6(address) ? 'ipv6' : 'ipv4';
    if (bits === undefined) allowed.addAddress(address, type);
    else allowed.addSubnet(address, Number(bits), type);
  }
  return allowed;
}

function startsWith(buf: Buffer, signature: Buffer): boolean {
  const n = Math.min(buf.length, signature.length);
  return buf.subarray(0, n).equals(signature.subarray(0, n));
}

/** The header's length once `buf` holds all of it, 0 while more is needed, -1 when it is not one. */
export function headerLength(buf: Buffer, mode: ProxyProtocolMode): number {
  if (mode !== 'v2' && startsWith(buf, V1_SIGNATURE)) {
    const end = buf.subarray(0, V1_MAX_BYTES).indexOf('\r\n');
    if (end >= 0) return end + 2;
    return buf.length >= V1_MAX_BYTES ? -1 : 0;
  }
  if (mode !== 'v1' && startsWith(buf, V2_SIGNATURE)) {
    if (buf.length < 16) return 0;
    const length = 16 + buf.readUInt16BE(14);
    if (length > V2_MAX_BYTES) return -1;
    return buf.length >= length ? length : 0;
  }
  return -1;
}

export interface ProxyGateOptions {
  readonly mode: Exclude<ProxyProtocolMode, 'off'>;
  /** Load balancers allowed to connect; undefined: any address. */
  readonly trusted: BlockList | undefined;
  /** Time the header has to arrive, ms (MQTT_CONNECT_TIMEOUT_MS). */
  readonly timeoutMs: number;
  /** Called for each connection closed here (the caller counts and logs); `address` is the balancer's. */
  readonly onRefused: (reason: ProxyRefusal, address: string) => void;
}

/**
 * Reads the PROXY header of a freshly accepted socket, then calls `next` with
 * the client's address; or destroys the socket and reports why.
 */
export function readProxyHeader(
  socket: Socket,
  options: ProxyGateOptions,
  next: (peer: Peer) => void,
): void {
  const balancer = normalizeAddress(socket.remoteAddress);
  const refuse = (reason: ProxyRefusal) => {
    cleanup();
    socket.destroy();
    options.onRefused(reason, balancer);
  };
  if (options.trusted && !options.trusted.check(balancer, isIPv6(balancer) ? 'ipv6' : 'ipv4')) {
    socket.destroy();
    options.onRefused('untrusted-proxy', balancer);
    return;
  }
  let buffered: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => refuse('missing-proxy-header'), options.timeoutMs);
  const cleanup = () => {
    clearTimeout(timer);
    socket.removeListener('data', onData);
    socket.removeListener('close', cleanup);
    socket.removeListener('error', cleanup);
  };
  const onData = (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    const length = headerLength(buffered, options.mode);
    if (length === 0) return;
    if (length < 0) return refuse('missing-proxy-header');
    const header = buffered.subarray(0, length);
    let details: ReturnType<typeof protocolDecoder> | undefined;
    try {
      details = protocolDecoder(socket, header);
    } catch {
      details = undefined;
    }
    // isProxy 0: the library could not read an address from it (malformed, UNKNOWN).
    // A v2 LOCAL command (low nibble of byte 13 is 0, spec 2.2) must not be
    // believed whatever addresses follow; the library does not look at it.
    const local = header[0] === 0x0d && ((header[12] ?? 0) & 0x0f) !== 0x01;
    if (!details || details.isProxy === 0 || !details.ipAddress || local) {
      return refuse('invalid-proxy-header');
    }
    cleanup();
    socket.pause();
    if (buffered.length > length) socket.unshift(buffered.subarray(length));
    const peer: Peer = { address: normalizeAddress(details.ipAddress), port: details.port };
    proxied.set(socket, peer);
    next(peer);
  };
  socket.on('data', onData);
  // Closed before the header (a balancer's TCP health check): nothing to report.
  socket.once('close', cleanup);
  // A reset before the header: the socket closes; nobody else listens for errors yet.
  socket.once('error', cleanup);
}
