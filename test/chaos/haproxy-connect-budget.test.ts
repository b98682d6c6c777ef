/**
 * Two brokers behind a real HAProxy that sends PROXY v2 headers
 * (MQTT_PROXY_PROTOCOL=v2, MQTT_PROXY_TRUSTED=127.0.0.1). Clients connect to
 * HAProxy from different loopback addresses; HAProxy always reaches the
 * brokers from 127.0.0.1. The failed-CONNECT budget (MQTT_AUTH_MAX_FAILURES,
 * in Redis) counts one client address across both brokers, and one address
 * spent does not lock out another: the brokers see the client's address, not
 * the balancer's. A connection straight to a broker, without the header, is
 * closed before MQTT. On the TLS listener the header comes before the TLS
 * handshake (HAProxy passes TLS through; the broker terminates it).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uniqueId } from '../support/harness.js';
import { startBrokerBalancer, type BrokerBalancer } from '../support/haproxy-tcp.js';
import {
  connectPacket,
  makePki,
  rawConnect,
  rawSocket,
  type Pki,
} from '../integration/security-fixtures.js';
import { Fleet, type Device } from './support/fleet.js';
import {
  dropPrefix,
  freePort,
  iomtEnv,
  ready,
  spawnIomt,
  stopAll,
  type IomtProcess,
  type LogLine,
} from './support/processes.js';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = uniqueId('chaos-lb-budget');
const MAX_FAILURES = 4;
let dir: string;
let haproxy: BrokerBalancer | undefined;
let haproxyTls: BrokerBalancer | undefined;
let pki: Pki;

afterAll(async () => {
  await haproxy?.close();
  await haproxyTls?.close();
  await stopAll();
  await dropPrefix(redisUrl, prefix);
  if (dir) await rm(dir, { recursive: true, force: true });
  if (pki) await rm(pki.dir, { recursive: true, force: true });
});

/** One CONNECT through HAProxy from `localAddress`; the CONNACK return code. */
async function attempt(
  port: number,
  localAddress: string,
  username: string,
  password: string,
): Promise<number | 'closed'> {
  const socket = await rawSocket(port, localAddress);
  try {
    return (await rawConnect(socket, connectPacket(uniqueId('c'), username, password))).returnCode;
  } finally {
    socket.destroy();
  }
}

const refusals = (logs: readonly LogLine[], reason: string, address: string) =>
  logs.filter((l) => l.event === 'connect-refused' && l.reason === reason && l.address === address);

let b1: IomtProcess;
let b2: IomtProcess;
let p1: number;
let p2: number;
let device: Device;

/** The TLS port a broker logged. */
const tlsPortOf = async (b: IomtProcess) =>
  Number(
    (
      await b.waitForLog(
        (l) => l.event === 'broker-listening' && l.transport === 'tls',
        60_000,
        'TLS listener',
      )
    ).port,
  );

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'iomt-chaos-lb-budget-'));
  pki = await makePki();
  const env = iomtEnv({
    redisUrl,
    prefix,
    fhirUrl: 'http://127.0.0.1:9/fhir',
    chdbPath: path.join(dir, 'chdb'),
    extra: {
      MQTT_PROXY_PROTOCOL: 'v2',
      MQTT_PROXY_TRUSTED: '127.0.0.1',
      MQTT_AUTH_MAX_FAILURES: String(MAX_FAILURES),
      MQTT_AUTH_FAILURE_WINDOW_MS: '600000',
      MQTT_TLS_PORT: '0',
      MQTT_TLS_CERT_FILE: pki.serverCert,
      MQTT_TLS_KEY_FILE: pki.serverKey,
    },
  });

  // Two brokers on one Redis (TCP and TLS listeners), a HAProxy in front of
  // each kind (round robin, send-proxy-v2).
  b1 = spawnIomt('broker', env, 'B1');
  b2 = spawnIomt('broker', env, 'B2');
  [p1, p2] = (await Promise.all([ready(b1, 'broker'), ready(b2, 'broker')])) as [number, number];
  haproxy = await startBrokerBalancer(await freePort(), [
    { name: 'b1', port: p1 },
    { name: 'b2', port: p2 },
  ]);
  haproxyTls = await startBrokerBalancer(await freePort(), [
    { name: 'b1', port: await tlsPortOf(b1) },
    { name: 'b2', port: await tlsPortOf(b2) },
  ]);
  const fleet = await Fleet.register(redisUrl, prefix, 1);
  device = fleet.devices[0]!;
}, 300_000);

describe('two brokers behind HAProxy with the PROXY protocol', () => {
  it('count failed CONNECTs per real client address across both brokers', async () => {
    if (!haproxy) throw new Error('HAProxy did not start');

    // 2. Wrong secrets from 127.0.0.2, one after another: round robin spreads
    //    them over both brokers; the shared budget refuses the fifth and later.
    const codes: (number | 'closed')[] = [];
    for (let i = 0; i < MAX_FAILURES + 4; i++)
      codes.push(await attempt(haproxy.port, '127.0.0.2', device.deviceId, 'wrong-secret'));
    expect(codes).toEqual(Array<number>(MAX_FAILURES + 4).fill(5)); // CONNACK 5: not authorized
    const b1Wrong = refusals(b1.logs, 'unknown-device-or-wrong-secret', '127.0.0.2').length;
    const b2Wrong = refusals(b2.logs, 'unknown-device-or-wrong-secret', '127.0.0.2').length;
    expect(b1Wrong + b2Wrong).toBe(MAX_FAILURES);
    expect(b1Wrong).toBeGreaterThan(0);
    expect(b2Wrong).toBeGreaterThan(0);
    await Promise.any(
      [b1, b2].map((b) =>
        b.waitForLog(
          (l) => refusals([l], 'too-many-failures', '127.0.0.2').length === 1,
          10_000,
          'too-many-failures for 127.0.0.2',
        ),
      ),
    );

    // 3. Even the right secret is refused from the spent address...
    expect(await attempt(haproxy.port, '127.0.0.2', device.deviceId, device.secret)).toBe(5);
    // 4. ...but another client address behind the same balancer connects, and
    //    its own wrong secret is judged as a credential failure, not a spent budget.
    expect(await attempt(haproxy.port, '127.0.0.3', device.deviceId, device.secret)).toBe(0);
    expect(await attempt(haproxy.port, '127.0.0.3', device.deviceId, 'wrong-secret')).toBe(5);
    await Promise.any(
      [b1, b2].map((b) =>
        b.waitForLog(
          (l) => refusals([l], 'unknown-device-or-wrong-secret', '127.0.0.3').length === 1,
          10_000,
          'a wrong secret refused for 127.0.0.3',
        ),
      ),
    );
    // Every credential refusal names a client's address, never the balancer's (127.0.0.1).
    const credentialRefusals = [b1, b2].flatMap((b) =>
      b.logs.filter(
        (l) =>
          l.event === 'connect-refused' &&
          (l.reason === 'unknown-device-or-wrong-secret' || l.reason === 'too-many-failures'),
      ),
    );
    expect(new Set(credentialRefusals.map((l) => l.address))).toEqual(
      new Set(['127.0.0.2', '127.0.0.3']),
    );

    // 5. Straight to a broker, without a PROXY header: closed before any CONNACK,
    //    and from an address that is not the balancer's: closed at accept.
    expect(await attempt(p1, '127.0.0.1', device.deviceId, device.secret)).toBe('closed');
    expect(await attempt(p2, '127.0.0.4', device.deviceId, device.secret)).toBe('closed');
    await b1.waitForLog(
      (l) => l.event === 'connect-refused' && l.reason === 'missing-proxy-header',
      10_000,
      'missing-proxy-header',
    );
    await b2.waitForLog(
      (l) =>
        l.event === 'connect-refused' &&
        l.reason === 'untrusted-proxy' &&
        l.address === '127.0.0.4',
      10_000,
      'untrusted-proxy',
    );
  }, 240_000);
  it('read the header before the TLS handshake, passed through HAProxy', async () => {
    if (!haproxyTls) throw new Error('HAProxy did not start');
    // A TLS client from 127.0.0.5: HAProxy passes the TLS bytes through after its header.
    const tlsAttempt = async (password: string) => {
      const raw = await rawSocket(haproxyTls!.port, '127.0.0.5');
      const socket = tlsConnect({
        socket: raw,
        ca: readFileSync(pki.caCert),
        servername: 'localhost',
      });
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', resolve);
        socket.once('error', reject);
      });
      socket.on('error', () => undefined);
      try {
        return (await rawConnect(socket, connectPacket(uniqueId('c'), device.deviceId, password)))
          .returnCode;
      } finally {
        socket.destroy();
      }
    };
    expect(await tlsAttempt(device.secret)).toBe(0);
    expect(await tlsAttempt('wrong-secret')).toBe(5);
    await Promise.any(
      [b1, b2].map((b) =>
        b.waitForLog(
          (l) => refusals([l], 'unknown-device-or-wrong-secret', '127.0.0.5').length === 1,
          10_000,
          'a wrong secret over TLS refused for 127.0.0.5',
        ),
      ),
    );
  });
  it('documents a HAProxy config that HAProxy accepts (deploy/haproxy/mqtt.cfg)', async () => {
    const { stdout } = await promisify(execFile)('haproxy', [
      '-c',
      '-f',
      path.resolve('deploy/haproxy/mqtt.cfg'),
    ]);
    expect(stdout).toContain('Configuration file is valid');
  });
});
