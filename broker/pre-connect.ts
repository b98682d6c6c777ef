/**
 * CONNECT, before any credential is looked at (aedes `preConnect`). Two
 * protocol rules aedes applies silently or not at all:
 *  - Protocol level. The broker speaks MQTT 3.1 and 3.1.1 (aedes 1.2); aedes
 *    answers any other level, MQTT 5 included, with CONNACK 1 "unacceptable
 *    protocol version" and closes (MQTT-3.1.2-2) — but says nothing. Here the
 *    refusal is logged and counted (`unsupported-protocol-version`), and aedes
 *    still sends its CONNACK.
 *  - An empty client id with CleanSession=0 must be refused with CONNACK 2
 *    (MQTT-3.1.3-8); aedes would give it a random id and keep a session nobody
 *    can resume. It is marked here and refused by authenticate.ts.
 */
import type { AedesOptions, Client, ConnectPacket } from 'aedes';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import { peerOfSocket, type Peer } from './proxy-protocol.js';

type PreConnectHandler = NonNullable<AedesOptions['preConnect']>;

/** Connections already refused and reported here (aedes then reports them as a connectionError). */
const reported = new WeakSet<Client>();
/** Connections whose CONNECT had an empty client id and CleanSession=0. */
const anonymousPersistent = new WeakSet<Client>();

export function alreadyReported(client: Client): boolean {
  return reported.has(client);
}

export function wantsAnonymousSession(client: Client): boolean {
  return anonymousPersistent.has(client);
}

/**
 * The client of a TCP or TLS socket, or of the HTTP request a WebSocket came
 * in on: the address its PROXY header named, when it had one.
 */
export function peerOf(client: Client): Peer {
  const conn = client.conn as { remoteAddress?: string; remotePort?: number };
  const req = (client as { req?: { socket?: { remoteAddress?: string; remotePort?: number } } })
    .req;
  return peerOfSocket(conn.remoteAddress === undefined && req?.socket ? req.socket : conn);
}

export function createPreConnect(log: Logger, metrics?: Metrics): PreConnectHandler {
  return (client, packet: ConnectPacket, done) => {
    const version = packet.protocolVersion;
    if (version !== 3 && version !== 4) {
      reported.add(client);
      metrics?.connectionsRefused.inc({ reason: 'unsupported-protocol-version' });
      log.warn(
        {
          event: 'connect-refused',
          code: 'NotAuthorized',
          reason: 'unsupported-protocol-version',
          protocolVersion: version,
          clientId: packet.clientId,
          deviceId: packet.username ?? null,
          address: peerOf(client).address,
        },
        'connect refused: the broker speaks MQTT 3.1.1 (protocol level 4) and 3.1',
      );
    }
    if (packet.clientId === '' && packet.clean === false) anonymousPersistent.add(client);
    // aedes sends CONNACK 1 itself for an unsupported level (lib/handlers/connect.js init).
    done(null, true);
  };
}
