/**
 * Fixtures for the security and bad-input tests: a throwaway PKI made with the
 * openssl CLI at test time (a CA, a server certificate for 127.0.0.1, device
 * certificates whose subject CN is the device id, and a rogue CA that nobody
 * trusts), mapping templates that read deviceId / patientId from payloads, and
 * raw MQTT CONNECTs from a chosen loopback address (to time refusals exactly).
 */
import { execFile } from 'node:child_process';
import { connect as netConnect, type Socket } from 'node:net';
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** P-256 keys: quick to make, and every TLS 1.2/1.3 stack speaks them. */
const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export interface Pki {
  readonly dir: string;
  readonly caCert: string;
  readonly serverCert: string;
  readonly serverKey: string;
  /** A client certificate signed by the CA, subject CN = `cn`. */
  clientCert(cn: string, options?: { rogue?: boolean }): Promise<{ cert: string; key: string }>;
}

async function selfSignedCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  await run('openssl', [
    'req',
    '-x509',
    ...KEY,
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
  ]);
  return { cert, key };
}

async function signed(
  dir: string,
  name: string,
  cn: string,
  ca: { cert: string; key: string },
  extensions: string,
): Promise<{ cert: string; key: string }> {
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.crt`);
  const ext = path.join(dir, `${name}.ext`);
  await writeFile(ext, extensions);
  await run('openssl', ['req', ...KEY, '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`]);
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    '-CAcreateserial',
    '-out',
    cert,
    '-days',
    '2',
    '-extfile',
    ext,
  ]);
  return { cert, key };
}

export async function makePki(): Promise<Pki> {
  const dir = await mkdtemp(path.join(tmpdir(), 'iomt-pki-'));
  const ca = await selfSignedCa(dir, 'iomt-test-ca');
  const rogue = await selfSignedCa(dir, 'rogue-ca');
  const server = await signed(
    dir,
    'server',
    'localhost',
    ca,
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n',
  );
  let n = 0;
  return {
    dir,
    caCert: ca.cert,
    serverCert: server.cert,
    serverKey: server.key,
    clientCert: (cn, options = {}) =>
      signed(dir, `client-${n++}`, cn, options.rogue ? rogue : ca, 'extendedKeyUsage=clientAuth\n'),
  };
}

/** The shipped templates, each device template also reading deviceId and patientId. */
export async function spoofAwareMappings(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'iomt-spoof-aware-mappings-'));
  await cp(path.resolve('mappings'), dir, { recursive: true });
  const file = path.join(dir, 'device', 'vitals.json');
  const collection = JSON.parse(await readFile(file, 'utf8')) as {
    template: { template: Record<string, unknown> }[];
  };
  for (const t of collection.template) {
    // Explicit, never a fallback: the connection's device unless the payload names one,
    // and no patient claim (null) unless the payload makes one.
    t.template.deviceIdExpression = '$exists(deviceId) ? deviceId : $meta.deviceId';
    t.template.patientIdExpression = '$exists(patientId) ? patientId : null';
  }
  await writeFile(file, JSON.stringify(collection, null, 2));
  return dir;
}

/** MQTT 3.1.1 §2.2.3 Remaining Length: 7 bits per byte, high bit = more bytes follow. */
export function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

/** A CONNECT packet (MQTT 3.1.1 §3.1): protocol level 4, keepalive 60 s, username and password. */
export function connectPacket(
  clientId: string,
  username: string,
  password: string,
  options: { clean?: boolean } = {},
): Buffer {
  const str = (s: string) => {
    const b = Buffer.from(s);
    return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
  };
  // Connect flags (§3.1.2.3): username 0x80, password 0x40, clean session 0x02.
  const flags = 0xc0 | (options.clean === false ? 0 : 0x02);
  const body = Buffer.concat([
    str('MQTT'),
    Buffer.from([4, flags, 0, 60]),
    str(clientId),
    str(username),
    str(password),
  ]);
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body]);
}

/** A raw TCP connection to the broker from `localAddress` (any 127.x.y.z on loopback). */
export function rawSocket(port: number, localAddress = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ port, host: '127.0.0.1', localAddress });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.on('error', () => undefined);
      resolve(socket);
    });
  });
}

/**
 * Sends a CONNECT on a connected raw socket and resolves with the CONNACK
 * return code (MQTT-3.2.2-3) and how long it took, ms; `closed` when the
 * broker closed without a CONNACK.
 */
export function rawConnect(
  socket: Socket,
  packet: Buffer,
): Promise<{ returnCode: number | 'closed'; ms: number }> {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const ms = () => Number(process.hrtime.bigint() - started) / 1e6;
    const onData = (data: Buffer) => {
      cleanup();
      // CONNACK: 0x20, 0x02, session present, return code.
      resolve({ returnCode: data[0] === 0x20 ? (data[3] ?? -1) : -1, ms: ms() });
    };
    const onClose = () => {
      cleanup();
      resolve({ returnCode: 'closed', ms: ms() });
    };
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('close', onClose);
    };
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.write(packet);
  });
}
