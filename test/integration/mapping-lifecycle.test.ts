/**
 * Template changes operators can trust, on two pipelines sharing one Redis (as
 * two machines would): A runs everything and owns the embedded ClickHouse, B a
 * worker and an admin API. Vitals flow from a monitor the whole time.
 *
 *  - the heartRate → heartrate edit is refused at activation, naming the failing
 *    fixture with its diff and the shadow run's counts over the real recent
 *    messages; no worker changes, vitals keep reaching FHIR;
 *  - a correct edit passes the gates (its changed Observations accepted
 *    explicitly) and is in force on both within 5 s; rollback restores the
 *    previous version on both within 5 s; the audit shows every step;
 *  - a worker restarted with an older folder does not change the active version.
 */
import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { readCandidate } from '../../src/mapping/index.js';
import type {
  ActivationResult,
  AuditEntry,
  Candidate,
  GateReport,
  VersionInfo,
} from '../../src/mapping/lifecycle/index.js';
import {
  connectDevice,
  enrol,
  fhirSearch,
  HARNESS_ADMIN_TOKEN,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';

const fhirUrl = inject('fhirUrl');
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const library = path.join(root, 'mappings');
const prefix = uniqueId('lc');
const monitor = uniqueId('mon');
const patient = uniqueId('plc');

let dirA: string;
let dirB: string;
let a: Harness;
let b: Harness;
let client: MqttClient;
let v1Candidate: Candidate;

const common = (dir: string) => ({
  redis: { prefix },
  mappings: { dir, reload: 'explicit' as const, reloadPollMs: 500 },
});

async function api<T>(
  h: Harness,
  method: 'GET' | 'POST',
  url: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const res = await h.pipeline.admin!.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${HARNESS_ADMIN_TOKEN}` },
    ...(body !== undefined ? { payload: body as object } : {}),
  });
  return { status: res.statusCode, body: res.json() };
}

function iomt(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'node',
      [path.join(root, 'bin/iomt.mjs'), 'mappings', ...args],
      {
        cwd: root,
        env: {
          ...process.env,
          IOMT_FROM_SOURCE: '1',
          QUEUE_PREFIX: prefix,
          ADMIN_TOKEN: HARNESS_ADMIN_TOKEN,
        },
        timeout: 120_000,
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

function edited(
  c: Candidate,
  edits: readonly { file: string; from: string; to: string }[],
  fixtureEdit?: { name: string; from: string; to: string },
): Candidate {
  return {
    files: c.files.map((f) => {
      const e = edits.find((x) => x.file === f.file);
      return e ? { ...f, text: f.text.replace(e.from, e.to) } : f;
    }),
    // A fixture's expectations are parsed JSON: edited in their compact form.
    fixtures: c.fixtures.map((f) =>
      fixtureEdit && f.name === fixtureEdit.name
        ? (JSON.parse(JSON.stringify(f).replace(fixtureEdit.from, fixtureEdit.to)) as typeof f)
        : f,
    ),
  };
}

const active = (h: Harness) => h.pipeline.templates!.status().active;

async function bothAt(version: string, what: string): Promise<number> {
  const started = Date.now();
  await waitFor(
    () => Promise.resolve([active(a), active(b)]),
    (v) => v[0] === version && v[1] === version,
    20_000,
    what,
  );
  return Date.now() - started;
}

/** Vitals from the monitor: one message every `everyMs`, each at its own device time. */
function vitalsStream(everyMs: number) {
  const sent: string[] = [];
  let n = 0;
  let stopped = false;
  const base = Date.now() - 600_000;
  const loop = (async () => {
    while (!stopped) {
      const timestamp = new Date(base + n++ * 1000).toISOString();
      await publish(client, `devices/${monitor}/telemetry`, {
        timestamp,
        heartRate: 60 + (n % 30),
        spo2: 97,
      });
      sent.push(timestamp);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    sent,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

interface ObservationJson {
  effectiveDateTime: string;
  meta: { tag: { system: string; code: string }[] };
}

async function heartRates(): Promise<ObservationJson[]> {
  const bundle = await fhirSearch(fhirUrl, 'Observation', {
    subject: `Patient/${patient}`,
    code: '8867-4',
    _count: '1000',
  });
  return (bundle.entry ?? []).map((e) => e.resource as unknown as ObservationJson);
}

const versionOf = (o: ObservationJson) =>
  o.meta.tag.find((t) => t.system === 'urn:iomt:template')?.code.split('@')[1];

beforeAll(async () => {
  dirA = await mkdtemp(path.join(tmpdir(), 'iomt-lc-a-'));
  dirB = await mkdtemp(path.join(tmpdir(), 'iomt-lc-b-'));
  await cp(library, dirA, { recursive: true });
  await cp(library, dirB, { recursive: true });
  v1Candidate = await readCandidate(library);
  a = await startHarness({ fhirUrl, overrides: common(dirA) });
  b = await startHarness({
    fhirUrl,
    roles: ['worker', 'admin'],
    overrides: { ...common(dirB), worker: { stages: ['normalize', 'fhir'] } },
  });
  const secret = await enrol(a.pipeline, monitor, `Patient/${patient}`);
  client = await connectDevice(a.mqttUrl, monitor, secret);
});

afterAll(async () => {
  client?.end(true);
  await b?.close();
  await a?.close();
  await rm(dirA, { recursive: true, force: true });
  await rm(dirB, { recursive: true, force: true });
});

describe('template lifecycle', () => {
  it('gates refuse a breaking edit, a correct one is activated explicitly and rolled back on both pipelines, and a restart changes nothing', async () => {
    // 0. The lifecycle routes need the admin token, like every admin route.
    const anonymous = await a.pipeline.admin!.app.inject({
      method: 'POST',
      url: '/api/mappings/rollback',
      payload: {},
    });
    expect(anonymous.statusCode).toBe(401);

    // 1. The first worker's folder became the fleet's version (audited); both run it.
    const v1 = active(a);
    expect(active(b)).toBe(v1);
    const audit0 = (await api<{ entries: AuditEntry[] }>(a, 'GET', '/api/mappings/audit')).body
      .entries;
    const bootstrap = audit0.filter((e) => e.action === 'bootstrap');
    expect(bootstrap).toHaveLength(1);
    expect(bootstrap[0]).toMatchObject({ to: v1, via: 'worker', gates: { passed: true } });

    // 2. Real traffic: vitals reach FHIR and device_messages in ClickHouse.
    const stream = vitalsStream(150);
    await waitFor(
      () =>
        a.pipeline.analyticsStore!.queryRows<{ n: string }>(
          `SELECT count() AS n FROM device_messages FINAL WHERE mqtt_device_id = '${monitor}'`,
        ),
      (r) => Number(r[0]?.n) >= 20,
      60_000,
      '20 vitals messages in device_messages',
    );

    // 3. The heartRate → heartrate edit: proposed, then refused at activation.
    const broken = edited(v1Candidate, [
      {
        file: 'device/vitals.json',
        from: '"valueExpression": "heartRate"',
        to: '"valueExpression": "heartrate"',
      },
    ]);
    const proposed = await api<{ version: string; created: boolean }>(
      a,
      'POST',
      '/api/mappings/propose',
      {
        ...broken,
        actor: 'alice',
        note: 'rename the heart-rate field',
      },
    );
    expect(proposed.status).toBe(201);
    const vBroken = proposed.body.version;
    const refused = await api<{
      error: { code: string; message: string };
      result: ActivationResult;
    }>(a, 'POST', '/api/mappings/activate', { version: vBroken, actor: 'alice' });
    expect(refused.status).toBe(422);
    expect(refused.body.error.code).toBe('GateRefused');
    const result = refused.body.result;
    if (result.outcome !== 'refused') throw new Error(`expected a refusal, got ${result.outcome}`);
    const failing = result.report.fixtures.results.filter((f) => !f.ok);
    expect(failing.map((f) => f.name)).toEqual(['vitals']);
    expect(failing[0]!.differences.join('\n')).toMatch(/RequiredValueMissing/);
    if (result.report.shadow?.status !== 'ran') throw new Error('no shadow run');
    const vitalsShadow = result.report.shadow.templates.find(
      (t) => t.file === 'device/vitals.json',
    )!;
    expect(vitalsShadow.messages).toBeGreaterThanOrEqual(20);
    expect(vitalsShadow.candidate.deadLettered).toBe(vitalsShadow.messages);
    expect(vitalsShadow.active.matched).toBe(vitalsShadow.messages);
    const n = vitalsShadow.messages;
    expect(result.report.refusals).toContain(
      `device/vitals.json: ${n} of ${n} recent messages would be dead-lettered (0 with the active version): RequiredValueMissing ${n}`,
    );
    // The same refusal from the CLI, through the admin API of the process owning ClickHouse.
    const cli = await iomt(
      'activate',
      vBroken.slice(0, 8),
      '--admin-url',
      `http://127.0.0.1:${a.pipeline.admin!.port}`,
      '--author',
      'bob',
    );
    expect(cli.code).toBe(1);
    expect(cli.stdout).toContain(
      `REFUSED: ${vBroken} was not activated; the active version stays ${v1}`,
    );
    expect(cli.stdout).toMatch(/FAIL {2}vitals\n\s+.*RequiredValueMissing/);
    expect(cli.stdout).toMatch(
      /device\/vitals\.json: (\d+) of \1 recent messages would be dead-lettered/,
    );
    // Nothing changed on any worker.
    expect([active(a), active(b)]).toEqual([v1, v1]);

    // Vitals kept reaching FHIR throughout, with the running version.
    await new Promise((r) => setTimeout(r, 1000)); // a little more traffic after the refusal
    await stream.stop();
    const arrived = await waitFor(
      heartRates,
      (list) => list.length === stream.sent.length,
      60_000,
      `${stream.sent.length} heart-rate Observations`,
    );
    expect(new Set(arrived.map(versionOf))).toEqual(new Set([v1]));
    expect(new Set(arrived.map((o) => o.effectiveDateTime))).toEqual(
      new Set(stream.sent.map((t) => new Date(t).toISOString())),
    );

    // 4. A correct edit (the heart-rate unit text, fixture updated with it): the shadow
    //    run shows the changed Observations; activation needs them accepted.
    const unit = { from: '"unit": "beats/minute"', to: '"unit": "beats per minute"' };
    const fixed = edited(v1Candidate, [{ file: 'fhir/vitals.json', ...unit }], {
      name: 'vitals',
      from: '"unit":"beats/minute"',
      to: '"unit":"beats per minute"',
    });
    const tested = await api<{ ok: boolean }>(b, 'POST', '/api/mappings/test', fixed);
    expect(tested.body.ok).toBe(true);
    const v2 = (
      await api<{ version: string }>(b, 'POST', '/api/mappings/propose', {
        ...fixed,
        actor: 'alice',
        note: 'unit text',
      })
    ).body.version;
    const shadow = await api<GateReport>(a, 'POST', '/api/mappings/shadow-run', { version: v2 });
    expect(shadow.body.passed).toBe(false);
    if (shadow.body.shadow?.status !== 'ran') throw new Error('no shadow run');
    const changed = shadow.body.shadow.templates[0]!;
    expect(changed).toMatchObject({ file: 'device/vitals.json', newlyRefused: 0 });
    expect(changed.changedObservations).toBeGreaterThanOrEqual(20);
    expect(changed.examples[0]!.diff).toContainEqual(
      expect.stringMatching(/valueQuantity\.unit: "beats\/minute" → "beats per minute"$/),
    );
    const activated = await api<ActivationResult>(a, 'POST', '/api/mappings/activate', {
      version: v2,
      actor: 'alice',
      note: 'reviewed the diff',
      acceptChanges: true,
    });
    expect(activated.status).toBe(200);
    expect(activated.body).toMatchObject({ outcome: 'activated', from: v1, to: v2 });
    expect(await bothAt(v2, 'v2 on both pipelines')).toBeLessThan(5_000);
    await publish(client, `devices/${monitor}/telemetry`, {
      timestamp: new Date().toISOString(),
      heartRate: 70,
    });
    const latest = await waitFor(
      heartRates,
      (l) => l.some((o) => versionOf(o) === v2),
      30_000,
      'a v2 Observation',
    );
    expect(latest.filter((o) => versionOf(o) === v2)).toHaveLength(1);

    // 5. Rollback (from B's admin API this time): v1 on both within 5 s.
    const back = await api<ActivationResult>(b, 'POST', '/api/mappings/rollback', {
      actor: 'carol',
      note: 'paged at 3 a.m.',
    });
    expect(back.body).toMatchObject({ outcome: 'rolled-back', from: v2, to: v1 });
    expect(await bothAt(v1, 'v1 on both pipelines again')).toBeLessThan(5_000);

    // The audit shows each step with who, when, what and the gate results.
    const audit = (await api<{ entries: AuditEntry[] }>(a, 'GET', '/api/mappings/audit')).body
      .entries;
    const steps = audit.filter((e) => ['activate', 'refused', 'rollback'].includes(e.action));
    expect(steps.map((e) => [e.action, e.actor, e.from, e.to])).toEqual([
      ['refused', 'alice', v1, vBroken],
      ['refused', 'bob', v1, vBroken],
      ['activate', 'alice', v1, v2],
      ['rollback', 'carol', v2, v1],
    ]);
    expect(steps[0]!.gates).toMatchObject({ passed: false, fixtures: { failed: ['vitals'] } });
    expect(steps[2]!.gates).toMatchObject({ passed: true, accepted: { changes: true } });
    expect(steps.every((e) => !Number.isNaN(Date.parse(e.at)))).toBe(true);
    // … and from the CLI, as JSON.
    const cliAudit = await iomt('audit', '--json');
    expect(cliAudit.code).toBe(0);
    const parsed = JSON.parse(cliAudit.stdout) as AuditEntry[];
    expect(parsed.filter((e) => e.action === 'rollback')).toEqual([
      expect.objectContaining({ actor: 'carol', note: 'paged at 3 a.m.', from: v2, to: v1 }),
    ]);
    const versions = JSON.parse((await iomt('versions', '--json')).stdout) as VersionInfo[];
    expect(Object.fromEntries(versions.map((v) => [v.version, v.state]))).toEqual({
      [v1]: 'active',
      [v2]: 'retired',
      [vBroken]: 'proposed',
    });

    // 6. v2 again; then B restarts with its older folder (v1): the fleet stays on v2.
    await api(a, 'POST', '/api/mappings/activate', {
      version: v2,
      actor: 'alice',
      acceptChanges: true,
    });
    await bothAt(v2, 'v2 on both pipelines again');
    await b.close();
    b = await startHarness({
      fhirUrl,
      roles: ['worker', 'admin'],
      overrides: { ...common(dirB), worker: { stages: ['normalize', 'fhir'] } },
    });
    expect(active(b)).toBe(v2);
    const fleet = await api<{ active: string }>(a, 'GET', '/api/mappings/versions');
    expect(fleet.body.active).toBe(v2);
    expect(b.pipeline.templates!.status().folder).toEqual({ version: v1, differs: true });
    const ready = await api<{
      status: string;
      templates: { active: string; folder: { differs: boolean } };
    }>(b, 'GET', '/readyz');
    expect(ready.body.status).toBe('ready');
    expect(ready.body.templates).toMatchObject({
      active: v2,
      folder: { version: v1, differs: true },
    });
    expect(
      b.logs.some(
        (l) => l.event === 'mappings-folder-differs' && l.folder === v1 && l.active === v2,
      ),
    ).toBe(true);
    expect(
      await b.pipeline.metrics.registry.getSingleMetricAsString('iomt_mapping_folder_differs'),
    ).toMatch(/iomt_mapping_folder_differs 1/);
    const after = (await api<{ entries: AuditEntry[] }>(a, 'GET', '/api/mappings/audit')).body
      .entries;
    expect(after.at(-1)).toMatchObject({ action: 'activate', to: v2 });

    // Per-template counts by version: the dead letters of a bad version would show at once.
    const counts = await a.pipeline.metrics.registry.getSingleMetricAsString(
      'iomt_template_messages_total',
    );
    expect(counts).toMatch(
      new RegExp(
        `iomt_template_messages_total\\{template="heartrate",version="${v1}",outcome="matched"\\} \\d+`,
      ),
    );
  });
});
