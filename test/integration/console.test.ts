/**
 * The operator console in a real browser (Debian's Chromium through
 * playwright-core) against a whole pipeline (real Redis, HAPI, broker, chdb):
 * signing in and out, CSRF and CSP, the dead-letter page and the devices page.
 * Each test saves a screenshot under .run/screenshots/ and runs axe-core on
 * the pages it visits.
 */
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createRedis } from '../../src/queue-runtime.js';
import { startTcpProxy } from '../support/tcp-proxy.js';
import {
  buildConsole,
  launchChromium,
  screenshot,
  seriousA11yViolations,
} from '../support/browser.js';
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
/** Generous bounds for conditions on a loaded 2-core machine (vitest's default is 1 s). */
const WAIT = { timeout: 20_000, interval: 200 };
let h: Harness;
let browser: Browser;
let base: string;
let mappingsDir: string;

beforeAll(async () => {
  await buildConsole();
  // The templates' own folder, so the workbench's activation changes no one else's.
  mappingsDir = await mkdtemp(path.join(tmpdir(), 'iomt-console-'));
  await cp(path.resolve('mappings'), mappingsDir, { recursive: true });
  h = await startHarness({
    fhirUrl,
    overrides: { mappings: { dir: mappingsDir, reload: 'explicit', reloadPollMs: 500 } },
  });
  base = `http://127.0.0.1:${h.pipeline.admin!.port}`;
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await h?.close();
  if (mappingsDir) await rm(mappingsDir, { recursive: true, force: true });
});

/** A new browser profile with the page open; CSP violations reported by the page are collected. */
async function open(
  hash = '',
): Promise<{ context: BrowserContext; page: Page; cspErrors: string[] }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  const cspErrors: string[] = [];
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspErrors.push(m.text());
  });
  await page.goto(`${base}/console/${hash}`);
  return { context, page, cspErrors };
}

async function signIn(page: Page, token = HARNESS_ADMIN_TOKEN, name = 'Night operator') {
  await page.getByLabel('Your name').fill(name);
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

async function expectAccessible(page: Page) {
  expect(await seriousA11yViolations(page)).toEqual([]);
}

/** Signs in over HTTP: the session cookie and the CSRF token. */
async function httpSession(): Promise<{ cookie: string; csrf: string }> {
  const res = await fetch(`${base}/console/api/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token: HARNESS_ADMIN_TOKEN, name: 'http-client' }),
  });
  expect(res.status).toBe(200);
  const cookie = res.headers.getSetCookie()[0]!.split(';')[0]!;
  return { cookie, csrf: ((await res.json()) as { csrfToken: string }).csrfToken };
}

describe('signing in', () => {
  it('refuses a wrong token, admits the right one, and signs out', async () => {
    const { context, page, cspErrors } = await open();
    await expectAccessible(page);
    await signIn(page, 'not-the-admin-token-at-all');
    await expect
      .poll(() => page.getByRole('alert').textContent(), WAIT)
      .toContain('Sign-in refused');
    expect(await context.cookies()).toEqual([]);
    await screenshot(page, 'console-sign-in-refused');

    await signIn(page);
    await page.getByText('Signed in as').waitFor();
    expect(await page.getByText('Night operator').count()).toBeGreaterThan(0);
    const [cookie] = await context.cookies();
    expect(cookie).toMatchObject({ name: 'iomt_console', httpOnly: true, sameSite: 'Strict' });
    // The page cannot read its own session cookie.
    expect(await page.evaluate('document.cookie')).toBe('');
    await screenshot(page, 'console-signed-in');

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Admin token').waitFor();
    // The old cookie opens nothing any more.
    const res = await fetch(`${base}/api/devices`, {
      headers: { cookie: `${cookie!.name}=${cookie!.value}` },
    });
    expect(res.status).toBe(401);
    await screenshot(page, 'console-signed-out');
    expect(cspErrors).toEqual([]);
    await context.close();
  });

  it('serves the page under a strict Content-Security-Policy, with no inline code', async () => {
    const res = await fetch(`${base}/console/`);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("style-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('unsafe-eval');
    const html = await res.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/https?:\/\//);
  });

  it('keeps a session in Redis no longer than the idle timeout, renewed by each request', async () => {
    const { cookie } = await httpSession();
    const redis = createRedis(h.pipeline.config.redis.url);
    try {
      const keys = await redis.keys(`${h.prefix}:console:session:*`);
      expect(keys.length).toBeGreaterThan(0);
      // Only a hash of the session id is stored: the cookie's value is nowhere in Redis.
      expect(keys.join()).not.toContain(cookie.split('=')[1]!);
      for (const k of keys) {
        const ttl = await redis.pttl(k);
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(h.pipeline.config.admin.consoleIdleMs);
      }
    } finally {
      redis.disconnect();
    }
  });

  it('refuses a change without the CSRF token, and audits the one made with it', async () => {
    const { cookie, csrf } = await httpSession();
    const deviceId = uniqueId('csrf');
    const body = JSON.stringify({ deviceId, actor: 'http-client' });
    const refused = await fetch(`${base}/api/devices`, {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/json' },
      body,
    });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('CsrfRefused');
    const wrong = await fetch(`${base}/api/devices`, {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/json', 'x-csrf-token': `${csrf.slice(1)}x` },
      body,
    });
    expect(wrong.status).toBe(403);
    const list = (await (await fetch(`${base}/api/devices`, { headers: { cookie } })).json()) as {
      devices: { deviceId: string }[];
    };
    expect(list.devices.map((d) => d.deviceId)).not.toContain(deviceId);

    const made = await fetch(`${base}/api/devices`, {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/json', 'x-csrf-token': csrf },
      body,
    });
    expect(made.status).toBe(201);
    const audit = await waitFor(
      async () =>
        (
          (await (await fetch(`${base}/console/api/audit`, { headers: { cookie } })).json()) as {
            entries: { actor: string; action: string; status: number }[];
          }
        ).entries,
      (e) => e.some((x) => x.action === 'POST /api/devices' && x.status === 201),
      10_000,
      'the audit entry of the change',
    );
    expect(audit.find((x) => x.action === 'POST /api/devices')).toMatchObject({
      actor: 'http-client',
      status: 201,
    });
    // The audit names the change, never its body.
    expect(JSON.stringify(audit)).not.toContain('"deviceId"');
  });

  it('answers repeated wrong tokens with 429 and a clear message, the right token too until the window ends', async () => {
    const limit = h.pipeline.config.admin.consoleSignInFailures;
    const attempt = (token: string) =>
      fetch(`${base}/console/api/session`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token, name: 'guesser' }),
      });
    const redis = createRedis(h.pipeline.config.redis.url);
    const budgetKeys = () => redis.keys(`${h.prefix}:console:sign-in-failures*`);
    try {
      // 1. This address starts with its whole budget (earlier tests' failures forgotten).
      for (const k of await budgetKeys()) await redis.del(k);
      const statuses: number[] = [];
      for (let i = 0; i <= limit; i++)
        statuses.push((await attempt(`wrong-token-${i}-0123456789`)).status);
      // 2. `limit` wrong tokens are answered 401, the next one 429.
      expect(statuses).toEqual([...Array<number>(limit).fill(401), 429]);
      const refused = await attempt(HARNESS_ADMIN_TOKEN);
      expect(refused.status).toBe(429);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      const body = (await refused.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('RateLimited');
      expect(body.error.message).toMatch(/too many wrong admin tokens from this address/);
      expect(refused.headers.getSetCookie()).toEqual([]);

      // 3. The page says so in words.
      const { context, page } = await open();
      await signIn(page);
      await expect
        .poll(() => page.getByRole('alert').textContent(), WAIT)
        .toMatch(/Sign-in refused: too many wrong admin tokens .*Wait, then try again/);
      expect(await context.cookies()).toEqual([]);
      await expectAccessible(page);
      await screenshot(page, 'console-sign-in-rate-limited');
      await context.close();

      // 4. The refusals are audited; once the window is over (here: its key gone) the right token works.
      const trail = await waitFor(
        async () =>
          (
            (await (
              await fetch(`${base}/console/api/audit`, {
                headers: { authorization: `Bearer ${HARNESS_ADMIN_TOKEN}` },
              })
            ).json()) as { entries: { actor: string; action: string; status: number }[] }
          ).entries,
        (e) => e.some((x) => x.action === 'sign-in' && x.status === 429),
        10_000,
        'the 429 sign-in in the audit',
      );
      expect(trail.find((x) => x.status === 429)).toMatchObject({ action: 'sign-in' });
      for (const k of await budgetKeys()) await redis.del(k);
      expect((await attempt(HARNESS_ADMIN_TOKEN)).status).toBe(200);
    } finally {
      for (const k of await budgetKeys()) await redis.del(k);
      redis.disconnect();
    }
  });
});

describe('dead letters page', () => {
  it('lists by code with counts, opens one with its payload, replays and purges', async () => {
    const deviceId = uniqueId('dl');
    const secret = await enrol(h.pipeline, deviceId, uniqueId('pdl'));
    const client = await connectDevice(h.mqttUrl, deviceId, secret);
    try {
      await publish(client, `devices/${deviceId}/telemetry`, '{"not": json}');
      await publish(client, `devices/${deviceId}/telemetry`, {
        timestamp: new Date().toISOString(),
        kind: 'infusion-pump',
        rate: 12.5,
      });
    } finally {
      await client.endAsync();
    }
    const { context, page, cspErrors } = await open('#/dead-letters');
    await signIn(page);
    await page.getByRole('heading', { name: 'Dead letters' }).waitFor();
    await page.getByLabel('Device', { exact: true }).fill(deviceId);
    // Both dead letters arrive (the workers are asynchronous): filter until they show.
    await expect
      .poll(
        async () => {
          await page.getByRole('button', { name: 'Filter' }).click();
          return page.locator('table.list tbody tr').count();
        },
        { timeout: 30_000, interval: 500 },
      )
      .toBe(2);
    await expect
      .poll(() => page.locator('.counts').textContent(), WAIT)
      .toMatch(/InvalidPayload: 1.*TemplateNotMatched: 1/s);
    await expectAccessible(page);
    await screenshot(page, 'console-dead-letters');

    // Time filters: none failed before the test began, both in the last 10 minutes.
    await page.getByLabel('Failed before').fill(new Date(Date.now() - 3_600_000).toISOString());
    await page.getByRole('button', { name: 'Filter' }).click();
    await expect.poll(() => page.locator('table.list tbody tr').count(), WAIT).toBe(0);
    await page.getByLabel('Failed before').fill('');
    await page.getByLabel('Failed since').fill('10m');
    await page.getByRole('button', { name: 'Filter' }).click();
    await expect.poll(() => page.locator('table.list tbody tr').count(), WAIT).toBe(2);
    await screenshot(page, 'console-dead-letters-since');
    await page.getByLabel('Failed since').fill('');

    // Filter by code, open the entry.
    await page.getByRole('button', { name: /TemplateNotMatched/ }).click();
    await expect.poll(() => page.locator('table.list tbody tr').count(), WAIT).toBe(1);
    await page.locator('tbody tr a').first().click();
    const detail = page.locator('article.detail');
    await detail.getByText('TemplateNotMatched').first().waitFor();
    await expect
      .poll(() => detail.locator('pre.payload').textContent(), WAIT)
      .toContain('infusion-pump');
    await page.getByLabel('Base64').check();
    const b64 = (await detail.locator('pre.payload').textContent()) ?? '';
    expect(Buffer.from(b64, 'base64').toString('utf8')).toContain('infusion-pump');
    await expectAccessible(page);
    await screenshot(page, 'console-dead-letter-open');

    // Replay it: no template matches still, so it fails again, as a new dead letter.
    await detail.getByRole('button', { name: 'Replay this dead letter' }).click();
    await expect
      .poll(() => page.locator('table.results td.result').first().textContent(), {
        timeout: 15_000,
      })
      .toContain('replayed into normalize');
    await screenshot(page, 'console-dead-letter-replayed');

    // Purge everything of the device, after confirming.
    await page.getByLabel('Code', { exact: true }).fill('');
    await expect
      .poll(
        async () => {
          await page.getByRole('button', { name: 'Filter' }).click();
          return page.locator('table.list tbody tr').allTextContents();
        },
        { timeout: 30_000, interval: 500 },
      )
      .toHaveLength(2);
    await page.getByRole('button', { name: /^Purge all 2 shown/ }).click();
    const dialog = page.getByRole('alertdialog');
    await dialog.getByText('Purge 2 dead letter(s) for good?').waitFor();
    await expectAccessible(page);
    await screenshot(page, 'console-dead-letters-purge-confirm');
    await dialog.getByRole('button', { name: 'Purge 2' }).click();
    await page.getByText('Purged 2 dead letter(s).').waitFor();
    // The list reloads after the purge.
    await expect.poll(() => page.locator('table.list tbody tr').count(), WAIT).toBe(0);
    const left = await fetch(`${base}/api/dlq?device=${deviceId}`, {
      headers: { authorization: `Bearer ${HARNESS_ADMIN_TOKEN}` },
    });
    expect(((await left.json()) as { total: number }).total).toBe(0);
    expect(cspErrors).toEqual([]);
    await context.close();
  });
});

describe('devices page', () => {
  it('adds a device whose secret, shown once, connects; rotates it; reassigns its patient with history', async () => {
    const deviceId = uniqueId('ui');
    const first = uniqueId('pa');
    const second = uniqueId('pb');
    const { context, page, cspErrors } = await open('#/devices');
    await context.grantPermissions(['clipboard-read', 'clipboard-write']);
    await signIn(page);
    await page.getByRole('heading', { name: 'Devices' }).waitFor();
    await page.getByText('Add a device').click();
    await page.getByLabel('Device id').fill(deviceId);
    await page.getByLabel('Patient (optional)').fill(first);
    await page.getByLabel('The patient is new').check();
    await page.getByRole('button', { name: 'Add device' }).click();
    const secretBox = page.locator('.secret code');
    await secretBox.waitFor();
    const secret = (await secretBox.textContent()) ?? '';
    expect(secret.length).toBeGreaterThan(16);
    await page.getByRole('button', { name: 'Copy secret' }).click();
    await page.getByText('Copied.').waitFor();
    expect(await page.evaluate('navigator.clipboard.readText()')).toBe(secret);
    await expectAccessible(page);
    await screenshot(page, 'console-device-added');

    // The device connects with the secret the page showed.
    const client = await connectDevice(h.mqttUrl, deviceId, secret);
    await client.endAsync();

    // The list masks the patient id until it is revealed.
    const row = page.locator('table.list tbody tr', { hasText: deviceId });
    await row.waitFor();
    expect(await row.textContent()).not.toContain(first);
    await row.getByRole('button', { name: `Reveal the patient of ${deviceId}` }).click();
    await expect.poll(() => row.textContent(), WAIT).toContain(first);

    // Shown once: opening the device again shows no secret.
    await row.getByRole('link', { name: deviceId }).click();
    const detail = page.locator('article.detail');
    await detail.getByRole('heading', { name: `Device ${deviceId}` }).waitFor();
    expect(await detail.locator('.secret').count()).toBe(0);

    // Rotate: the new secret works, the old one is refused.
    await detail.getByRole('button', { name: 'Rotate secret' }).click();
    const rotated = detail.locator('.secret code');
    await rotated.waitFor();
    const newSecret = (await rotated.textContent()) ?? '';
    expect(newSecret).not.toBe(secret);
    await expect(connectDevice(h.mqttUrl, deviceId, secret)).rejects.toThrow();
    const again = await connectDevice(h.mqttUrl, deviceId, newSecret);
    await again.endAsync();

    // Reassign to another patient; the timeline shows both, in order.
    await detail.getByLabel('Patient', { exact: true }).fill(second);
    await detail.getByLabel('The patient is new').check();
    await detail.getByLabel('Note').fill('moved to bed 12');
    await detail.getByRole('button', { name: 'Assign from now' }).click();
    const timeline = detail.getByRole('list', { name: 'Association history' });
    await expect
      .poll(() => timeline.locator('li').allTextContents(), WAIT)
      .toEqual([
        expect.stringContaining('registered'),
        expect.stringMatching(/assigned to patient .*by Night operator/),
        expect.stringContaining('secret rotated'),
        expect.stringMatching(/assigned to patient .*moved to bed 12/),
      ]);
    // Masked in the timeline too, until revealed.
    expect(await timeline.textContent()).not.toContain(second);
    await detail.getByRole('button', { name: 'Reveal patient id' }).click();
    await expect.poll(() => detail.locator('.patient-now').textContent(), WAIT).toBe(second);
    await expect.poll(() => timeline.textContent(), WAIT).toContain(second);
    await expectAccessible(page);
    await screenshot(page, 'console-device-history');

    // The pipeline agrees: the device is with the second patient now.
    expect((await h.pipeline.devices.history(deviceId)).currentPatient).toBe(second);
    // Each change and each reveal is in the audit trail, with who did it.
    await page.getByRole('link', { name: 'Audit' }).click();
    const audit = page.locator('table tbody');
    await expect.poll(() => audit.textContent(), WAIT).toMatch(/reveal — patient ids of device /);
    const text = (await audit.textContent()) ?? '';
    expect(text).toContain(`POST /api/devices/${deviceId}/rotate-secret`);
    expect(text).toContain(`POST /api/devices/${deviceId}/assign`);
    expect(text).toContain('Night operator');
    await expectAccessible(page);
    await screenshot(page, 'console-audit');
    expect(cspErrors).toEqual([]);
    await context.close();
  });
});

describe('devices page: gateways, disabling, masked lists', () => {
  it('links a device to a gateway, disables a device that then cannot connect, and masks patient ids in the API list', async () => {
    const deviceId = uniqueId('gwchild');
    const gatewayId = uniqueId('gw');
    const patient = uniqueId('pgw');
    const auth = { authorization: `Bearer ${HARNESS_ADMIN_TOKEN}` };
    const secret = await enrol(h.pipeline, deviceId, patient);
    await h.pipeline.devices.add(gatewayId, { actor: 'test', source: 'api', kind: 'gateway' });

    // 1. The API's list masks the patient id; ?reveal=true shows it and is audited.
    type Listed = { deviceId: string; currentPatient?: string; patientMasked?: boolean };
    const listed = async (q = '') =>
      (
        (await (await fetch(`${base}/api/devices${q}`, { headers: auth })).json()) as {
          devices: Listed[];
        }
      ).devices.find((d) => d.deviceId === deviceId);
    const masked = await listed();
    expect(masked).toMatchObject({ patientMasked: true });
    expect(masked?.currentPatient).not.toBe(patient);
    expect(masked?.currentPatient).toBe(`${patient.slice(0, 2)}•••${patient.slice(-2)}`);
    expect(await listed('?reveal=true')).toMatchObject({ currentPatient: patient });
    const audit = (await (await fetch(`${base}/console/api/audit`, { headers: auth })).json()) as {
      entries: { action: string; detail?: string }[];
    };
    expect(audit.entries).toContainEqual(
      expect.objectContaining({ action: 'reveal', detail: 'patient ids of the device list' }),
    );

    // 2. Link the device to the gateway from its page.
    const { context, page, cspErrors } = await open(`#/devices/${deviceId}`);
    await signIn(page);
    const detail = page.locator('article.detail');
    await detail.getByRole('heading', { name: `Device ${deviceId}` }).waitFor();
    await detail.getByLabel('Gateway id').fill(gatewayId);
    await detail.getByRole('button', { name: 'Link to this gateway' }).click();
    await expect
      .poll(
        () => detail.getByRole('list', { name: 'Gateways relaying for this device' }).textContent(),
        WAIT,
      )
      .toContain(gatewayId);
    await expect
      .poll(() => detail.getByRole('list', { name: 'Association history' }).textContent(), WAIT)
      .toContain(`linked to gateway ${gatewayId}`);
    expect((await h.pipeline.devices.history(deviceId)).gateways).toEqual([gatewayId]);
    expect(await h.pipeline.devices.children(gatewayId)).toEqual([deviceId]);
    await expectAccessible(page);
    await screenshot(page, 'console-device-gateway-linked');
    // The gateway's page names the devices it relays for.
    await page.goto(`${base}/console/#/devices/${gatewayId}`);
    await expect
      .poll(() => page.locator('article.detail .relays').textContent(), WAIT)
      .toContain(deviceId);

    // 3. Disable the device after a confirmation: it can no longer connect.
    const before = await connectDevice(h.mqttUrl, deviceId, secret);
    await before.endAsync();
    await page.goto(`${base}/console/#/devices/${deviceId}`);
    await detail.getByRole('heading', { name: `Device ${deviceId}` }).waitFor();
    await detail.getByRole('button', { name: 'Disable device' }).click();
    const dialog = page.getByRole('alertdialog');
    await dialog.getByText(`Disable ${deviceId}?`).waitFor();
    await expectAccessible(page);
    await dialog.getByRole('button', { name: `Disable ${deviceId}` }).click();
    await detail.locator('.status-disabled').waitFor();
    await expect
      .poll(() => detail.getByRole('list', { name: 'Association history' }).textContent(), WAIT)
      .toContain('disabled (credentials removed)');
    await expect(connectDevice(h.mqttUrl, deviceId, secret)).rejects.toThrow();
    const row = page.locator('table.list tbody tr', { hasText: deviceId });
    await expect.poll(() => row.textContent(), WAIT).toContain('removed');
    await expectAccessible(page);
    await screenshot(page, 'console-device-disabled');
    expect(cspErrors).toEqual([]);
    await context.close();
  });
});

describe('mapping workbench', () => {
  it('after a bad template change: fixes the template against a dead letter, checks it, activates it through the gates, and the replayed readings reach FHIR and ClickHouse', async () => {
    const call = async <T>(method: string, url: string, body?: unknown): Promise<T> => {
      const res = await fetch(`${base}${url}`, {
        method,
        headers: {
          authorization: `Bearer ${HARNESS_ADMIN_TOKEN}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const data = (await res.json()) as T;
      if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${JSON.stringify(data)}`);
      return data;
    };
    type Stored = {
      files: { file: string; text: string }[];
      fixtures: { name: string; message?: string }[];
    };
    const good = (await call<{ active: string }>('GET', '/api/mappings/versions')).active;
    const goodSet = await call<Stored>('GET', `/api/mappings/versions/${good}`);

    // 1. A bad change goes live through the lifecycle API: the heart-rate value now reads
    //    "heart_rate" (a field renamed on paper, not on the monitors). It validates; the
    //    fixtures it breaks are dropped and the shadow run skipped — the slip under test.
    const brokenFiles = goodSet.files.map((f) =>
      f.file === 'device/vitals.json'
        ? {
            file: f.file,
            text: f.text.replace(
              '"valueExpression": "heartRate"',
              '"valueExpression": "heart_rate"',
            ),
          }
        : { file: f.file, text: f.text },
    );
    expect(brokenFiles.find((f) => f.file === 'device/vitals.json')!.text).toContain('heart_rate');
    const tested = await call<{ results: { name: string; ok: boolean }[] }>(
      'POST',
      '/api/mappings/test',
      { files: brokenFiles, fixtures: goodSet.fixtures },
    );
    const passing = new Set(tested.results.filter((r) => r.ok).map((r) => r.name));
    expect(passing.size).toBeLessThan(goodSet.fixtures.length);
    const broken = await call<{ version: string }>('POST', '/api/mappings/propose', {
      files: brokenFiles,
      fixtures: goodSet.fixtures.filter((f) => passing.has(f.name)),
      actor: 'day shift',
      note: 'rename heartRate to heart_rate',
    });
    const activated = await call<{ outcome: string }>('POST', '/api/mappings/activate', {
      version: broken.version,
      actor: 'day shift',
      withoutShadowRun: true,
    });
    expect(activated.outcome).toBe('activated');
    const deviceId = uniqueId('hr');
    const patient = uniqueId('pwb');
    let fixedVersion: string | undefined;
    try {
      await waitFor(
        () => Promise.resolve(h.pipeline.templates!.status().active),
        (v) => v === broken.version,
        20_000,
        'the workers on the broken version',
      );

      // The monitor's readings are dead-lettered from now on.
      const client = await connectDevice(
        h.mqttUrl,
        deviceId,
        await enrol(h.pipeline, deviceId, patient),
      );
      try {
        for (const [ago, hr] of [
          [60_000, 72],
          [30_000, 74],
        ] as const)
          await publish(client, `devices/${deviceId}/telemetry`, {
            timestamp: new Date(Date.now() - ago).toISOString(),
            heartRate: hr,
          });
      } finally {
        await client.endAsync();
      }
      const dead = await waitFor(
        () =>
          call<{ entries: { id: string; code: string }[] }>('GET', `/api/dlq?device=${deviceId}`),
        (r) => r.entries.length === 2,
        30_000,
        'two dead letters',
      );
      expect(dead.entries.map((e) => e.code)).toEqual([
        'RequiredValueMissing',
        'RequiredValueMissing',
      ]);

      // 2. The operator opens one in the workbench and sees the refusal.
      const { context, page, cspErrors } = await open(`#/dead-letters/${dead.entries[0]!.id}`);
      await signIn(page);
      await page.getByRole('link', { name: 'Open in the mapping workbench' }).click();
      await page.getByRole('heading', { name: 'Mapping workbench' }).waitFor();
      await expect
        .poll(() => page.getByLabel('Message', { exact: true }).inputValue(), WAIT)
        .toContain('"heartRate"');
      await expect.poll(() => page.locator('main').textContent(), WAIT).toContain(broken.version);
      await page.getByRole('button', { name: 'Run the templates on this message' }).click();
      await expect
        .poll(() => page.locator('.debug-error').textContent(), WAIT)
        .toContain('RequiredValueMissing');

      // The same messages as the pipeline stored them (device_messages in ClickHouse).
      await expect
        .poll(
          async () => {
            await page.getByRole('button', { name: 'Recent messages of this device' }).click();
            return page.locator('select[name="recent"] option').allTextContents();
          },
          { timeout: 60_000, interval: 1000 },
        )
        .toEqual([
          expect.stringContaining('choose one of 2'),
          expect.stringContaining('RequiredValueMissing'),
          expect.stringContaining('RequiredValueMissing'),
        ]);
      await page.getByLabel('Message', { exact: true }).fill('{}');
      await page.locator('select[name="recent"]').selectOption({ index: 1 });
      // Newest first: the reading of 74.
      await expect
        .poll(() => page.getByLabel('Message', { exact: true }).inputValue(), WAIT)
        .toContain('74');
      await screenshot(page, 'console-workbench-recent-message');

      // The template as it is live: a slip first (diagnostic at line and column), then the fix.
      await page.getByLabel('Template file').selectOption('device/vitals.json');
      const editor = page.getByLabel('Template text');
      await expect.poll(() => editor.inputValue(), WAIT).toContain('"heart_rate"');
      const live = await editor.inputValue();
      await editor.fill(live.replace('"typeName": "heartrate",', '"typeName": "heartrate"'));
      await expect
        .poll(() => page.locator('#diagnostics').textContent(), WAIT)
        .toMatch(/device\/vitals\.json:\d+:\d+/);
      await screenshot(page, 'console-workbench-diagnostics');
      await editor.fill(
        live.replace('"valueExpression": "heart_rate"', '"valueExpression": "heartRate"'),
      );
      await page.locator('#diagnostics').getByText('The templates validate').waitFor();
      await page.getByRole('button', { name: 'Run the templates on this message' }).click();
      await expect
        .poll(() => page.locator('.debug-ok').textContent(), { timeout: 30_000 })
        .toContain('Mapped: 1 Observation(s)');
      const observation = page.getByRole('article', { name: 'Observation 1' });
      // A fresh HAPI loads its validation support on the first $validate and may answer
      // late: the page says so, and the operator runs it again.
      await expect
        .poll(
          async () => {
            const v = (await observation.locator('.validate-result').textContent()) ?? '';
            if (v.includes('did not answer'))
              await page.getByRole('button', { name: 'Run the templates on this message' }).click();
            return v;
          },
          { timeout: 120_000, interval: 2000 },
        )
        .toMatch(/\$validate: valid/);
      const obsJson = (await observation.locator('pre').textContent()) ?? '';
      expect(obsJson).toContain('8867-4');
      expect(obsJson).toContain('74');
      await expectAccessible(page);
      await screenshot(page, 'console-workbench-observation');

      // 3. Keep this input and its output as a fixture of the fix.
      await page.getByLabel('Fixture name').fill('heart-rate-field-name');
      await page
        .getByRole('button', { name: 'Save this input and its output as a fixture' })
        .click();
      await expect
        .poll(() => page.locator('.fixture-saved').textContent(), WAIT)
        .toContain('Saved fixture heart-rate-field-name');

      // 4. Propose, read the shadow-run report, then activate through the gates.
      await page.getByLabel('Note for the audit').fill('heart rate reads "heartRate" again');
      await page.getByRole('button', { name: 'Propose these templates' }).click();
      await expect
        .poll(() => page.locator('.lifecycle-result').textContent(), WAIT)
        .toContain('Proposed version');
      fixedVersion = /Proposed version (\S+?)[. ]/.exec(
        (await page.locator('.lifecycle-result').textContent()) ?? '',
      )![1]!;
      await page.getByLabel('Accept changed Observations in the shadow run').check();
      await page.getByRole('button', { name: 'Run the gates and the shadow run' }).click();
      const report = page.locator('pre.shadow-report');
      await expect
        .poll(() => report.textContent(), { timeout: 60_000 })
        .toContain('shadow run: active');
      const reportText = (await report.textContent()) ?? '';
      expect(reportText).toContain(`active ${broken.version} vs candidate ${fixedVersion}`);
      // The dead letters the bad version made are mapped by the fix.
      expect(reportText).toMatch(/message\(s\) refused now would be mapped/);
      expect(reportText).toMatch(/fixtures: \d+ passed, 0 failed/);
      expect(await page.locator('.shadow-verdict').textContent()).toContain('The gates pass');
      await expectAccessible(page);
      await screenshot(page, 'console-workbench-shadow-run');

      await page.getByRole('button', { name: /^Activate version/ }).click();
      await expect
        .poll(() => page.locator('.lifecycle-result').textContent(), { timeout: 60_000 })
        .toContain(`Version ${fixedVersion}: activated`);
      await screenshot(page, 'console-workbench-activated');
      const fixedSet = await call<Stored>('GET', `/api/mappings/versions/${fixedVersion}`);
      expect(fixedSet.fixtures.find((f) => f.name === 'heart-rate-field-name')?.message).toContain(
        '"heartRate"',
      );
      await waitFor(
        () => Promise.resolve(h.pipeline.templates!.status().active),
        (v) => v === fixedVersion,
        20_000,
        'the workers on the fixed version',
      );

      // 5. Replay the device's dead letters from the dead-letters page.
      await page
        .getByRole('navigation', { name: 'Pages' })
        .getByRole('link', { name: 'Dead letters' })
        .click();
      await page.getByLabel('Device', { exact: true }).fill(deviceId);
      await page.getByRole('button', { name: 'Filter' }).click();
      await expect.poll(() => page.locator('table.list tbody tr').count(), WAIT).toBe(2);
      await page.getByRole('button', { name: 'Replay all 2 shown' }).click();
      await expect
        .poll(() => page.locator('table.results td.result').allTextContents(), { timeout: 30_000 })
        .toEqual(['replayed into normalize', 'replayed into normalize']);
      await screenshot(page, 'console-workbench-replayed');

      // The readings are in FHIR and in ClickHouse, made by the fixed version.
      const inFhir = await waitFor(
        () => fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${patient}`, code: '8867-4' }),
        (b) => (b.entry ?? []).length === 2,
        60_000,
        'two heart-rate Observations in FHIR',
      );
      const values = (inFhir.entry ?? [])
        .map((e) => (e.resource.valueQuantity as { value: number }).value)
        .sort();
      expect(values).toEqual([72, 74]);
      const rows = await waitFor(
        () =>
          h.pipeline.analyticsStore!.queryRows<{ value: number; template_version: string }>(
            `SELECT value_num AS value, template_version FROM observations FINAL WHERE patient_id = '${patient}' AND code = '8867-4' ORDER BY value`,
          ),
        (r) => r.length === 2,
        60_000,
        'two heart-rate rows in ClickHouse',
      );
      expect(rows.map((r) => Number(r.value))).toEqual([72, 74]);
      expect(rows.map((r) => r.template_version)).toEqual([fixedVersion, fixedVersion]);
      await expect.poll(() => page.locator('table.list tbody tr').count(), WAIT).toBe(0);
      expect(cspErrors).toEqual([]);
      await context.close();
    } finally {
      // Never leave the broken version live for the tests that follow.
      if (h.pipeline.templates!.status().active === broken.version)
        await call('POST', '/api/mappings/activate', {
          version: good,
          actor: 'test cleanup',
          withoutShadowRun: true,
        }).catch(() => undefined);
    }
  });
});

describe('pipeline page', () => {
  it('shows the FHIR queue rising while the FHIR server is unreachable, and falling after it is back', async () => {
    // A pipeline of its own whose FHIR server sits behind a proxy the test takes down.
    const proxy = await startTcpProxy(new URL(fhirUrl));
    // A loaded 2-core machine can take HAPI past the 2 s readiness bound: a slow answer is not "down".
    const p = await startHarness({
      fhirUrl: proxy.url,
      overrides: { admin: { readyTimeoutMs: 20_000 } },
    });
    const deviceId = uniqueId('pipe');
    const patient = uniqueId('pp');
    const client = await connectDevice(
      p.mqttUrl,
      deviceId,
      await enrol(p.pipeline, deviceId, patient),
    );
    const context = await browser.newContext();
    const page = await context.newPage();
    try {
      await page.goto(`http://127.0.0.1:${p.pipeline.admin!.port}/console/#/pipeline`);
      await signIn(page);
      await page.getByRole('heading', { name: 'Pipeline' }).waitFor();
      const fhirDepth = page.locator('tr[data-queue="fhir"] td.depth');
      const fhirCheck = page.locator('tr[data-check="fhir"] td').nth(1);
      await expect.poll(() => fhirCheck.textContent(), { timeout: 90_000 }).toBe('ok');
      await expectAccessible(page);

      await proxy.down();
      let n = 0;
      const send = async (count: number) => {
        for (let i = 0; i < count; i++)
          await publish(client, `devices/${deviceId}/telemetry`, {
            timestamp: new Date(Date.now() - 60_000 + n++ * 10).toISOString(),
            heartRate: 60 + (n % 40),
          });
      };
      await expect
        .poll(
          async () => {
            await send(5);
            return Number(await fhirDepth.textContent());
          },
          { timeout: 60_000, interval: 1000 },
        )
        .toBeGreaterThan(0);
      await expect.poll(() => fhirCheck.textContent(), { timeout: 20_000 }).not.toBe('ok');
      await screenshot(page, 'console-pipeline-fhir-down');

      await proxy.up();
      await expect
        .poll(async () => Number(await fhirDepth.textContent()), {
          timeout: 120_000,
          interval: 1000,
        })
        .toBe(0);
      await expect.poll(() => fhirCheck.textContent(), { timeout: 90_000 }).toBe('ok');
      // Everything acknowledged while FHIR was down is there now.
      await waitFor(
        () => fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${patient}`, _count: '1000' }),
        (b) => (b.entry ?? []).length === n,
        60_000,
        `all ${n} readings in FHIR`,
      );
      await expectAccessible(page);
      await screenshot(page, 'console-pipeline-fhir-back');
    } finally {
      await context.close();
      await client.endAsync();
      await p.close();
      await proxy.close();
    }
  });
});

describe('patient chart', () => {
  it('shows a reading published over MQTT within 5 s of its PUBACK, marked when out of range', async () => {
    const deviceId = uniqueId('bed');
    const patient = uniqueId('pchart');
    const client = await connectDevice(
      h.mqttUrl,
      deviceId,
      await enrol(h.pipeline, deviceId, patient),
    );
    const { context, page, cspErrors } = await open(`#/patient/${patient}`);
    try {
      await signIn(page);
      await page.getByRole('heading', { name: 'Patient vitals' }).waitFor();
      await page.getByText('No readings in the last hour.').waitFor();
      // The clock starts at the PUBACK (publish resolves on it: QoS 1) and stops when the
      // page shows the value; polled every 50 ms, so the figure is at most 50 ms late.
      await publish(client, `devices/${deviceId}/telemetry`, {
        timestamp: new Date().toISOString(),
        heartRate: 131,
      });
      const acked = performance.now();
      const latest = page.locator('tr[data-code="8867-4"] td.latest-value');
      await expect
        .poll(() => latest.textContent(), { timeout: 30_000, interval: 50 })
        .toContain('131');
      const shownAfterMs = performance.now() - acked;
      console.info(
        `patient chart: PUBACK to the point on screen in ${Math.round(shownAfterMs)} ms`,
      );
      expect(shownAfterMs).toBeLessThan(5000);
      expect(await latest.textContent()).toContain('(out of range)');
      expect(await page.getByRole('img', { name: 'Heart rate over the last hour' }).count()).toBe(
        1,
      );
      await expectAccessible(page);
      await screenshot(page, 'console-patient-chart');
      // Opening the chart is audited like a reveal.
      const res = await fetch(`${base}/console/api/audit`, {
        headers: { authorization: `Bearer ${HARNESS_ADMIN_TOKEN}` },
      });
      const entries = ((await res.json()) as { entries: { action: string; detail?: string }[] })
        .entries;
      expect(entries).toContainEqual(
        expect.objectContaining({ action: 'reveal', detail: `vitals chart of ${patient}` }),
      );
      expect(cspErrors).toEqual([]);
    } finally {
      await context.close();
      await client.endAsync();
    }
  });
});
