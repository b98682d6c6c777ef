/**
 * Device administration as operators do it — `iomt devices …` and
 * `iomt gateways …` in a process of their own, and the admin API over real
 * HTTP — against a running pipeline (real Redis, HAPI, broker, mqtt.js):
 * credentials and associations are separate; a change ends the sessions it must;
 * nothing is changed by a refused command; every change is in the history.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { hashSecret } from '../../src/devices/secret.js';
import { createRedis } from '../../src/queue-runtime.js';
import {
  connectDevice,
  enrol,
  HARNESS_ADMIN_TOKEN,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';

const run = promisify(execFile);
const fhirUrl = inject('fhirUrl');
let h: Harness;

beforeAll(async () => {
  h = await startHarness({ fhirUrl });
});
afterAll(async () => {
  await h?.close();
});

/** `iomt …` as an operator runs it, against the harness's Redis prefix and HAPI. */
async function iomt(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run('node', ['bin/iomt.mjs', ...args], {
      env: { ...process.env, QUEUE_PREFIX: h.prefix, FHIR_URL: fhirUrl },
      timeout: 60_000,
    });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: number };
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: e.code ?? 1 };
  }
}

function secretOf(stdout: string): string {
  const m = /secret: (\S+)/.exec(stdout);
  if (!m) throw new Error(`no secret in: ${stdout}`);
  return m[1]!;
}

function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => {
    if (!client.connected) resolve();
    else client.once('close', () => resolve());
  });
}

async function put(resource: { resourceType: string; id: string }): Promise<void> {
  const res = await fetch(`${fhirUrl}/${resource.resourceType}/${resource.id}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/fhir+json' },
    body: JSON.stringify(resource),
  });
  expect(res.ok).toBe(true);
}

describe('iomt devices', () => {
  it('add on an existing id exits non-zero and changes nothing', async () => {
    const device = uniqueId('cli');
    const patient = uniqueId('pcli');
    const added = await iomt(
      'devices',
      'add',
      device,
      '--patient',
      `Patient/${patient}`,
      '--new-patient',
      '--actor',
      'nurse.lee',
    );
    expect(added.code).toBe(0);
    const secret = secretOf(added.stdout);
    const before = await iomt('devices', 'history', device, '--json');

    const again = await iomt(
      'devices',
      'add',
      device,
      '--patient',
      `Patient/${uniqueId('other')}`,
      '--new-patient',
    );
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(
      /^iomt: DeviceExists: device "[^"]+" is already registered; nothing was changed/,
    );
    // Same history, and the device in the field still connects with its secret.
    expect((await iomt('devices', 'history', device, '--json')).stdout).toBe(before.stdout);
    const client = await connectDevice(h.mqttUrl, device, secret);
    client.end(true);
    const history = JSON.parse(before.stdout) as {
      currentPatient: string;
      records: { kind: string; actor: string; source: string }[];
    };
    expect(history.currentPatient).toBe(patient);
    expect(history.records.map((r) => [r.kind, r.actor, r.source])).toEqual([
      ['registered', 'nurse.lee', 'cli'],
      ['assign', 'nurse.lee', 'cli'],
    ]);
  });

  it('rotate-secret keeps the associations, ends the session opened with the old secret, and the old secret stops working', async () => {
    const device = uniqueId('rekey');
    const patient = uniqueId('prekey');
    const secret = secretOf(
      (await iomt('devices', 'add', device, '--patient', patient, '--new-patient')).stdout,
    );
    const client = await connectDevice(h.mqttUrl, device, secret);
    const sessionEnded = closed(client);

    const rotated = await iomt('devices', 'rotate-secret', device);
    expect(rotated.code).toBe(0);
    const fresh = /new secret for \S+: (\S+)/.exec(rotated.stdout)![1]!;
    // 1. The open session ends at once (the broker is told through Redis).
    await sessionEnded;
    client.end(true);
    // 2. The old secret is refused; the new one connects.
    await expect(connectDevice(h.mqttUrl, device, secret)).rejects.toThrow(/Not authorized/);
    (await connectDevice(h.mqttUrl, device, fresh)).end(true);
    // 3. The association is as it was.
    const history = JSON.parse((await iomt('devices', 'history', device, '--json')).stdout) as {
      currentPatient: string;
      records: { kind: string }[];
    };
    expect(history.currentPatient).toBe(patient);
    expect(history.records.map((r) => r.kind)).toEqual(['registered', 'assign', 'secret-rotated']);
  });

  it('unassigning a device ends its open sessions; its history says who had it and when', async () => {
    const device = uniqueId('unas');
    const secret = await enrol(h.pipeline, device, uniqueId('punas'));
    const client = await connectDevice(h.mqttUrl, device, secret);
    const sessionEnded = closed(client);
    const out = await iomt(
      'devices',
      'unassign',
      device,
      '--note',
      'discharged',
      '--actor',
      'nurse.lee',
    );
    expect(out.code).toBe(0);
    expect(out.stdout).toMatch(/now: no patient/);
    expect(out.stdout).toMatch(/unassign {2}— nurse\.lee via cli at .* \(discharged\)/);
    await sessionEnded;
    client.end(true);
  });

  it('assign refuses a Patient the FHIR server does not have, and a back-dated change over charted time unless it is a correction', async () => {
    const device = uniqueId('asg');
    const existing = uniqueId('pexists');
    await put({ resourceType: 'Patient', id: existing });
    await enrol(h.pipeline, device, undefined);
    const typo = await iomt('devices', 'assign', device, '--patient', `Patient/${existing}x`);
    expect(typo.code).not.toBe(0);
    expect(typo.stderr).toMatch(/PatientNotFound: Patient\/\S+x does not exist on the FHIR server/);
    expect(
      (await iomt('devices', 'assign', device, '--patient', existing, '--at', '2h')).code,
    ).toBe(0);
    const over = await iomt(
      'devices',
      'assign',
      device,
      '--patient',
      uniqueId('pnew'),
      '--new-patient',
      '--at',
      '1h',
    );
    expect(over.code).not.toBe(0);
    expect(over.stderr).toMatch(
      /AssociationConflict: .* was already associated with another patient/,
    );
    const noZone = await iomt(
      'devices',
      'assign',
      device,
      '--patient',
      existing,
      '--at',
      '2026-11-26T08:00:00',
    );
    expect(noZone.stderr).toMatch(/InvalidArgument: --at: give a full ISO 8601 time with its zone/);
    const corrected = await iomt(
      'devices',
      'assign',
      device,
      '--patient',
      uniqueId('pright'),
      '--new-patient',
      '--at',
      '1h',
      '--correction',
    );
    expect(corrected.code).toBe(0);
    expect(corrected.stdout).toMatch(/\[correction\]/);
  });

  it('gateways: link with a time, list as JSON, and a gateway takes no patient', async () => {
    const hub = uniqueId('hub');
    const child = uniqueId('child');
    await enrol(h.pipeline, hub, undefined, { gateway: true });
    await enrol(h.pipeline, child, uniqueId('pchild'));
    expect((await iomt('gateways', 'link', hub, child, '--at', '30m')).code).toBe(0);
    expect(JSON.parse((await iomt('gateways', 'list', hub, '--json')).stdout)).toEqual({
      gatewayId: hub,
      devices: [child],
    });
    const refused = await iomt(
      'devices',
      'assign',
      hub,
      '--patient',
      uniqueId('p'),
      '--new-patient',
    );
    expect(refused.stderr).toMatch(/InvalidArgument: .* is a gateway/);
    const listed = JSON.parse((await iomt('devices', 'list', '--json')).stdout) as {
      deviceId: string;
      kind: string;
    }[];
    expect(listed.find((d) => d.deviceId === hub)?.kind).toBe('gateway');
  });
});

describe('the admin API', () => {
  const call = (method: string, path: string, body?: unknown, token = HARNESS_ADMIN_TOKEN) =>
    fetch(`http://127.0.0.1:${h.pipeline.admin!.port}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });

  it('adds, assigns from a feed, rotates and reads the history; refuses without a token and on bad input', async () => {
    const device = uniqueId('api');
    const [p1, p2] = [uniqueId('papi1'), uniqueId('papi2')];
    expect((await call('GET', '/api/devices', undefined, 'wrong-token-0123456789')).status).toBe(
      401,
    );

    const created = await call('POST', '/api/devices', {
      deviceId: device,
      patient: p1,
      newPatient: true,
      actor: 'console:lee',
    });
    expect(created.status).toBe(201);
    const { secret } = (await created.json()) as { secret: string };
    expect((await call('POST', '/api/devices', { deviceId: device })).status).toBe(409);

    // An ADT / PCIM feed reports the move.
    const moved = await call('POST', `/api/devices/${device}/assign`, {
      patient: p2,
      newPatient: true,
      source: 'feed',
      actor: 'adt-gateway',
    });
    expect(moved.status).toBe(200);
    // The answer shows the patient the feed named, and masks the device's earlier one.
    const movedBody = (await moved.json()) as {
      currentPatient: string;
      periods: { patientId: string }[];
      patientMasked: boolean;
    };
    expect(movedBody.currentPatient).toBe(p2);
    expect(movedBody.patientMasked).toBe(true);
    expect(movedBody.periods.map((p) => p.patientId)).toEqual([
      `${p1.slice(0, 2)}•••${p1.slice(-2)}`,
      p2,
    ]);
    expect(JSON.stringify(movedBody)).not.toContain(p1);

    const client = await connectDevice(h.mqttUrl, device, secret);
    const sessionEnded = closed(client);
    const rotated = await call('POST', `/api/devices/${device}/rotate-secret`, {
      actor: 'console:lee',
    });
    expect(rotated.status).toBe(200);
    await sessionEnded;
    client.end(true);

    type Read = {
      periods: { patientId: string }[];
      records: { kind: string; source: string; actor: string; patientId?: string }[];
      currentPatient?: string;
      patientMasked?: boolean;
    };
    // Patient ids masked, as in the list, unless reveal=true (audited).
    const masked = (await (await call('GET', `/api/devices/${device}`)).json()) as Read;
    const m = (id: string) => `${id.slice(0, 2)}•••${id.slice(-2)}`;
    expect(masked.patientMasked).toBe(true);
    expect(masked.periods.map((p) => p.patientId)).toEqual([m(p1), m(p2)]);
    expect(masked.currentPatient).toBe(m(p2));
    expect(masked.records.flatMap((r) => (r.patientId ? [r.patientId] : []))).toEqual([
      m(p1),
      m(p2),
    ]);
    expect(JSON.stringify(masked)).not.toContain(p1);
    const history = (await (
      await call('GET', `/api/devices/${device}?reveal=true`)
    ).json()) as Read;
    expect(history.periods.map((p) => p.patientId)).toEqual([p1, p2]);
    expect(history.currentPatient).toBe(p2);
    expect(history.records.map((r) => [r.kind, r.source, r.actor])).toEqual([
      ['registered', 'api', 'console:lee'],
      ['assign', 'api', 'console:lee'],
      ['assign', 'feed', 'adt-gateway'],
      ['secret-rotated', 'api', 'console:lee'],
    ]);

    // Bad input: a clear code, nothing recorded.
    const bad = await call('POST', `/api/devices/${device}/assign`, {
      patient: p1,
      at: 'yesterday',
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('InvalidArgument');
    const missing = await call('POST', `/api/devices/${device}/assign`, {
      patient: uniqueId('nobody'),
    });
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe(
      'PatientNotFound',
    );
    expect((await call('GET', `/api/devices/${uniqueId('ghost')}`)).status).toBe(404);

    // Unassign names no patient: its answer masks them all, unless reveal=true.
    const released = await call('POST', `/api/devices/${device}/unassign`, { note: 'discharged' });
    expect(released.status).toBe(200);
    const releasedText = await released.text();
    expect(releasedText).not.toContain(p1);
    expect(releasedText).not.toContain(p2);
    const revealed = (await (
      await call('POST', `/api/devices/${device}/assign?reveal=true`, { patient: p2 })
    ).json()) as Read;
    expect(revealed.patientMasked).toBeUndefined();
    expect(revealed.currentPatient).toBe(p2);
    expect(new Set(revealed.periods.map((p) => p.patientId))).toEqual(new Set([p1, p2]));
    const after = (await (await call('GET', `/api/devices/${device}`)).json()) as {
      records: unknown[];
    };
    expect(after.records).toHaveLength(6);

    // Removal ends the association now and keeps the history.
    expect((await call('DELETE', `/api/devices/${device}`)).status).toBe(200);
    const removed = (await (await call('GET', `/api/devices/${device}`)).json()) as {
      device: { status: string };
      currentPatient?: string;
      records: { kind: string }[];
    };
    expect(removed.device.status).toBe('removed');
    expect(removed.currentPatient).toBeUndefined();
    expect(removed.records.map((r) => r.kind).slice(-2)).toEqual(['unassign', 'removed']);
    await waitFor(
      () => h.pipeline.queues.fhir.getJobCountByTypes('waiting', 'active', 'delayed'),
      (n) => n === 0,
      30_000,
      'association syncs written',
    );
  });
});

describe('upgrading a registry with one patient per device', () => {
  it('records each old binding as an association from the registration on, once', async () => {
    const prefix = uniqueId('legacy');
    const device = uniqueId('old');
    const patient = uniqueId('pold');
    const createdAt = new Date(Date.now() - 3 * 24 * 3_600_000).toISOString();
    // 1. What the previous version wrote: a hash with secret and patient, no status.
    const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
    try {
      await redis.hset(`${prefix}:device:${device}`, {
        secretHash: await hashSecret('old-secret-123'),
        patientId: patient,
        createdAt,
      });
      // 2. A worker starts on it (twice: the migration is idempotent).
      for (let k = 0; k < 2; k++) {
        const w = await startHarness({
          fhirUrl,
          roles: ['worker', 'broker'],
          overrides: { redis: { prefix } },
        });
        try {
          const h2 = await w.pipeline.devices.history(device);
          expect(h2.periods.map((p) => [p.patientId, p.start, p.end])).toEqual([
            [patient, Date.parse(createdAt), undefined],
          ]);
          expect(h2.records.map((r) => [r.kind, r.source, r.actor])).toEqual([
            ['registered', 'migration', 'upgrade'],
            ['assign', 'migration', 'upgrade'],
          ]);
          // The device still connects with its secret.
          (await connectDevice(w.mqttUrl, device, 'old-secret-123')).end(true);
        } finally {
          await w.close();
        }
      }
      expect(await redis.hget(`${prefix}:device:${device}`, 'patientId')).toBeNull();
    } finally {
      redis.disconnect();
    }
  });
});
