/**
 * The broker's listeners: MQTT over TCP (always), over TLS (when a certificate
 * and key are configured; optionally with client certificates) and over
 * WebSocket (when MQTT_WS_PORT is set). Every listener accepts TCP itself; the
 * TCP and TLS listeners read the PROXY header first when MQTT_PROXY_PROTOCOL
 * asks for one (proxy-protocol.ts), then every listener asks `admitSocket`
 * (the idle-socket cap per client address, socket-gate.ts);
 * only an admitted socket goes on to the TLS handshake, the HTTP upgrade, and
 * then the frame guard before aedes sees a byte. The TLS handshake and the
 * upgrade's headers must arrive within MQTT_CONNECT_TIMEOUT_MS.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, type TlsOptions } from 'node:tls';
import type { IncomingMessage } from 'node:http';
import { WebSocketServer, createWebSocketStream } from 'ws';
import type { Config } from '../src/config.js';
import { PipelineError } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import { listen } from './listen.js';
import {
  peerOfSocket,
  readProxyHeader,
  trustedProxies,
  type Peer,
  type ProxyGateOptions,
  type ProxyRefusal,
} from './proxy-protocol.js';

export type ConnectionHandler = (stream: Duplex, req?: IncomingMessage) => void;

export interface Listener {
  readonly kind: 'tcp' | 'tls' | 'ws';
  readonly port: number;
  close(): Promise<void>;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function readPem(path: string, setting: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new PipelineError('ConfigInvalid', `${setting}: cannot read ${path}`, { cause: err });
  }
}

/** TLS options from the configuration; `requestCert` only when client certificates are used. */
export function tlsOptions(mqtt: Config['mqtt']): TlsOptions | undefined {
  if (!mqtt.tlsCertFile || !mqtt.tlsKeyFile) return undefined;
  const useClientCerts = mqtt.tlsClientCert !== 'none';
  return {
    cert: readPem(mqtt.tlsCertFile, 'MQTT_TLS_CERT_FILE'),
    key: readPem(mqtt.tlsKeyFile, 'MQTT_TLS_KEY_FILE'),
    ...(useClientCerts && mqtt.tlsCaFile
      ? { ca: readPem(mqtt.tlsCaFile, 'MQTT_TLS_CA_FILE') }
      : {}),
    requestCert: useClientCerts,
    // required: the handshake itself refuses a missing or untrusted certificate;
    // optional: authenticate.ts refuses an untrusted one and accepts a password instead.
    rejectUnauthorized: mqtt.tlsClientCert === 'required',
    minVersion: 'TLSv1.2',
  };
}

export interface ListenerHooks {
  /**
   * Called for each accepted socket with its client's address (from the PROXY
   * header when there is one); false means the socket was refused (and destroyed).
   */
  readonly admitSocket: (socket: Socket, peer: Peer) => boolean;
  /** A TLS handshake failed; `address` is the client's. */
  readonly onTlsError: (reason: string, address: string) => void;
  /** A connection was closed for its PROXY header or its balancer's address. */
  readonly onProxyRefused: (reason: ProxyRefusal, address: string) => void;
}

type Accept = (socket: Socket, next: (socket: Socket) => void) => void;

/** Admits a socket, after its PROXY header when `proxy` is given, then hands it to `next`. */
function acceptor(hooks: ListenerHooks, proxy: ProxyGateOptions | undefined): Accept {
  return (socket, next) => {
    const admit = (peer: Peer) => {
      if (hooks.admitSocket(socket, peer)) next(socket);
    };
    if (proxy) readProxyHeader(socket, proxy, admit);
    else admit(peerOfSocket(socket));
  };
}

/** A TCP server that accepts each socket, then hands it to `next` (a TLS or HTTP server). */
function acceptInto(next: Server, accept: Accept): Server {
  return createTcpServer((socket) => accept(socket, (s) => next.emit('connection', s)));
}

export async function startListeners(
  config: Config,
  handle: ConnectionHandler,
  maxFrameBytes: number,
  log: Logger,
  hooks: ListenerHooks,
): Promise<Listener[]> {
  const { mqtt } = config;
  const started: Listener[] = [];
  const direct = acceptor(hooks, undefined);
  const proxied =
    mqtt.proxyProtocol === 'off'
      ? direct
      : acceptor(hooks, {
          mode: mqtt.proxyProtocol,
          trusted: trustedProxies(mqtt.proxyTrusted),
          timeoutMs: mqtt.connectTimeoutMs,
          onRefused: hooks.onProxyRefused,
        });
  try {
    const tcp = createTcpServer((socket) => proxied(socket, handle));
    const tcpPort = await listen(tcp, mqtt.port, mqtt.host, 'MQTT_PORT');
    started.push({ kind: 'tcp', port: tcpPort, close: () => closeServer(tcp) });

    const tls = tlsOptions(mqtt);
    if (tls) {
      const server = createTlsServer(
        { ...tls, handshakeTimeout: mqtt.connectTimeoutMs },
        (socket) => handle(socket),
      );
      server.on('tlsClientError', (err, socket) =>
        hooks.onTlsError(err.message, peerOfSocket(socket).address),
      );
      const front = acceptInto(server, proxied);
      const port = await listen(front, mqtt.tlsPort, mqtt.host, 'MQTT_TLS_PORT');
      started.push({ kind: 'tls', port, close: () => closeServer(front) });
    }

    if (mqtt.wsPort !== undefined) {
      const http = createHttpServer({
        headersTimeout: mqtt.connectTimeoutMs,
        requestTimeout: mqtt.connectTimeoutMs,
      });
      // ws refuses larger WebSocket messages before buffering them (close code 1009).
      const wss = new WebSocketServer({ server: http, maxPayload: maxFrameBytes + 16 });
      wss.on('connection', (ws, req) => handle(createWebSocketStream(ws), req));
      // WebSocket is not behind the PROXY protocol: a TCP balancer in front of it hides the client.
      const front = acceptInto(http, direct);
      const port = await listen(front, mqtt.wsPort, mqtt.host, 'MQTT_WS_PORT');
      started.push({
        kind: 'ws',
        port,
        // aedes.close() ends the client streams, which closes their WebSockets.
        close: async () => {
          await new Promise<void>((resolve) => wss.close(() => resolve()));
          await closeServer(front);
        },
      });
    }
  } catch (err) {
    await Promise.all(started.map((l) => l.close()));
    throw err;
  }
  for (const l of started)
    log.info(
      { event: 'broker-listening', transport: l.kind, port: l.port, host: mqtt.host },
      'MQTT listener up',
    );
  return started;
}
