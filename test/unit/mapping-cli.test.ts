/**
 * The operators' commands as operators run them (`node bin/iomt.mjs mappings …`):
 * their output and exit codes — validate, test, debug, import-medtech.
 */
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const medtech = path.join(root, 'test/fixtures/medtech');
let work: string;

function iomt(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'node',
      [path.join(root, 'bin/iomt.mjs'), 'mappings', ...args],
      { cwd: root, env: { ...process.env, IOMT_FROM_SOURCE: '1' }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'iomt-cli-'));
  await cp(path.join(root, 'mappings'), path.join(work, 'mappings'), { recursive: true });
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('iomt mappings', () => {
  it('validate: ok with the version; a broken template gives file:line:column and exit 1', async () => {
    const dir = path.join(work, 'mappings');
    const ok = await iomt('validate', '--dir', dir, '--quiet');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(
      /^ok: \d+ device template\(s\), \d+ FHIR template\(s\), version [0-9a-f]{12}\n$/,
    );
    const file = path.join(dir, 'device/weight-scale.json');
    const original = await readFile(file, 'utf8');
    await writeFile(
      file,
      original.replace('"valueExpression": "bmi"', '"valueExpression": "bmi *"'),
    );
    const bad = await iomt('validate', '--dir', dir, '--quiet');
    await writeFile(file, original);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(
      /^device\/weight-scale\.json:\d+:\d+: JSONata syntax error: .+ \[expression character 5\]/m,
    );
    expect(bad.stderr).toMatch(/1 problem\(s\)/);
  });

  it('test: every fixture passes; a changed template shows the readable difference and exit 1', async () => {
    const dir = path.join(work, 'mappings');
    const pass = await iomt('test', '--dir', dir);
    expect(pass.code).toBe(0);
    expect(pass.stdout).toMatch(/^pass {2}weight-scale$/m);
    expect(pass.stdout).toMatch(/\d+ passed, 0 failed/);
    const file = path.join(dir, 'fhir/weight-scale.json');
    const original = await readFile(file, 'utf8');
    await writeFile(file, original.replace('"display": "Body weight"', '"display": "Weight"'));
    const fail = await iomt('test', '--dir', dir);
    await writeFile(file, original);
    expect(fail.code).toBe(1);
    expect(fail.stdout).toMatch(/^FAIL {2}weight-scale$/m);
    expect(fail.stdout).toContain(
      'observations[0].code.coding[0].display: expected "Body weight", got "Weight"',
    );
  });

  it('debug: each stage, and why a message is rejected', async () => {
    const msg = path.join(work, 'glucose.json');
    await writeFile(
      msg,
      JSON.stringify({
        kind: 'glucose-meter',
        time: '2026-11-26T07:00:00Z',
        glucose: 6.1,
        unit: 'mmol/L',
        meal: 'before',
      }),
    );
    const ok = await iomt(
      'debug',
      msg,
      '--dir',
      path.join(work, 'mappings'),
      '--device',
      'g-1',
      '--patient',
      'p-1',
      '--received-at',
      '2026-11-26T07:00:05Z',
    );
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('+ bloodglucose (device/glucose-meter.yaml): matched 1 time(s)');
    expect(ok.stdout).toContain('value "mgdl" [jsonata, direct read] = 6.1');
    expect(ok.stdout).toContain('value "mgdl": 6.1 mmol/L → 110 mg/dL (UCUM)');
    expect(ok.stdout).toContain('device g-1 → Patient/p-1, Device/dev-g-1');
    expect(ok.stdout).toMatch(/4\. observations \(1\)/);
    await writeFile(
      msg,
      JSON.stringify({ kind: 'glucose-meter', time: 'this morning', glucose: 6.1 }),
    );
    const rejected = await iomt('debug', msg, '--dir', path.join(work, 'mappings'));
    expect(rejected.code).toBe(1);
    expect(rejected.stdout).toContain(
      'REJECTED InvalidTimestamp (stage normalize): template "bloodglucose"',
    );
  });

  it('import-medtech: documented templates load unchanged, with every difference listed; --write copies them', async () => {
    const dir = path.join(work, 'import');
    const r = await iomt(
      'import-medtech',
      path.join(medtech, 'calculatedcontent-jsonpath/devicecontent.json'),
      path.join(medtech, 'calculatedcontent-jsonpath/fhirmapping.json'),
      '--dir',
      dir,
      '--name',
      'heartrate',
      '--write',
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('loads unchanged: 1 device template(s), 1 FHIR template(s)');
    expect(r.stdout).toMatch(
      /device\/heartrate\.json:9:\d+: the device id read from the payload must be the authenticated MQTT device/,
    );
    expect(r.stdout).toContain('IDENTITY_RESOLUTION');
    expect(await readFile(path.join(dir, 'device/heartrate.json'), 'utf8')).toBe(
      await readFile(path.join(medtech, 'calculatedcontent-jsonpath/devicecontent.json'), 'utf8'),
    );
    const mismatch = await iomt(
      'import-medtech',
      path.join(medtech, 'jsonpathcontent/devicecontent.json'),
      path.join(medtech, 'fhir-destination/fhirmapping-sampleddata.json'),
    );
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toMatch(
      /device\/medtech\.json:\d+:\d+: device type "stepcount" has no FHIR template/,
    );
  });
});
