/**
 * The broker's listeners: MQTT over TCP (always), over TLS (when a certificate
 * and key are configured; optionally with client certificates) and over
 * WebSocket (when MQTT_WS_PORT is set). Every listener accepts TCP itself and
 * asks `admitSocket` first (the idle-socket cap per address, socket-gate.ts);
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
  /** Called for each accepted socket; false means the socket was refused (and destroyed). */
  readonly admitSocket: (socket: Socket) => boolean;
  /** A TLS handshake failed. */
  readonly onTlsError: (reason: string, address: string | undefined) => void;
}

/** A TCP server that admits each socket, then hands it to `next` (a TLS or HTTP server). */
function acceptInto(next: Server, admit: (socket: Socket) => boolean): Server {
  return createTcpServer((socket) => {
    if (admit(socket)) next.emit('connection', socket);
  });
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
  try {
    const tcp = createTcpServer((socket) => {
      if (hooks.admitSocket(socket)) handle(socket);
    });
    const tcpPort = await listen(tcp, mqtt.port, mqtt.host, 'MQTT_PORT');
    started.push({ kind: 'tcp', port: tcpPort, close: () => closeServer(tcp) });

    const tls = tlsOptions(mqtt);
    if (tls) {
      const server = createTlsServer(
        { ...tls, handshakeTimeout: mqtt.connectTimeoutMs },
        (socket) => handle(socket),
      );
      server.on('tlsClientError', (err, socket) =>
        hooks.onTlsError(err.message, socket.remoteAddress),
      );
      const front = acceptInto(server, hooks.admitSocket);
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
      const front = acceptInto(http, hooks.admitSocket);
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
