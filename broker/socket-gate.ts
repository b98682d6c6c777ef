/**
 * Caps the sockets one client address holds before they authenticate
 * (MQTT_MAX_IDLE_SOCKETS_PER_ADDRESS). A socket counts from its TCP accept — on
 * the TLS listener before the handshake, on WebSocket before the HTTP upgrade —
 * until its CONNECT is accepted or it closes. Past the cap a new socket is
 * destroyed at once, before TLS, HTTP or MQTT spend anything on it. A socket
 * that never sends CONNECT is closed after MQTT_CONNECT_TIMEOUT_MS (aedes
 * connectTimeout; the TLS handshake and HTTP headers have the same timeout), so
 * the cap also bounds how fast one address can hold sockets open.
 *
 * The maps hold one entry per open, unauthenticated socket: they are bounded by
 * the cap times the addresses connected, and empty out as sockets close.
 */
import type { Socket } from 'node:net';

/** "::ffff:10.0.0.1" (IPv4 on a dual-stack listener) and "10.0.0.1" are one address. */
export function normalizeAddress(address: string | undefined): string {
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
}

export interface SocketGateOptions {
  readonly maxIdlePerAddress: number;
  /** Called for each socket refused (the caller counts and logs). */
  readonly onRefused: (address: string) => void;
}

export class SocketGate {
  readonly #max: number;
  readonly #onRefused: (address: string) => void;
  /** Unauthenticated sockets per address. */
  readonly #idle = new Map<string, number>();
  /** "address|port" of each unauthenticated socket → its address. */
  readonly #sockets = new Map<string, string>();

  constructor(options: SocketGateOptions) {
    this.#max = options.maxIdlePerAddress;
    this.#onRefused = options.onRefused;
  }

  /**
   * For a listener's accept: true when the socket may go on, false when it was
   * destroyed. `peer` is the client's address (behind a balancer, from the
   * PROXY header); by default the socket's own peer.
   */
  admit(
    socket: Socket,
    peer: { address: string | undefined; port: number | undefined } = {
      address: socket.remoteAddress,
      port: socket.remotePort,
    },
  ): boolean {
    const address = normalizeAddress(peer.address);
    const idle = this.#idle.get(address) ?? 0;
    if (idle >= this.#max) {
      socket.destroy();
      this.#onRefused(address);
      return false;
    }
    const key = `${address}|${peer.port ?? ''}`;
    this.#idle.set(address, idle + 1);
    this.#sockets.set(key, address);
    socket.once('close', () => this.#release(key));
    return true;
  }

  /** The connection from `address`:`port` authenticated: it no longer counts as idle. */
  authenticated(address: string, port: number | undefined): void {
    this.#release(`${normalizeAddress(address)}|${port ?? ''}`);
  }

  /** Unauthenticated sockets of `address` right now. */
  idle(address: string): number {
    return this.#idle.get(normalizeAddress(address)) ?? 0;
  }

  #release(key: string): void {
    const address = this.#sockets.get(key);
    if (address === undefined) return;
    this.#sockets.delete(key);
    const left = (this.#idle.get(address) ?? 1) - 1;
    if (left > 0) this.#idle.set(address, left);
    else this.#idle.delete(address);
  }
}
