/**
 * Fixtures for the security and bad-input tests: a throwaway PKI made with the
 * openssl CLI at test time (a CA, a server certificate for 127.0.0.1, device
 * certificates whose subject CN is the device id, and a rogue CA that nobody
 * trusts), and mapping templates that read deviceId / patientId from payloads.
 */
import { execFile } from 'node:child_process';
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
