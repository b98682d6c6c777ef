/**
 * The CLI's conventions, run as operators and CI jobs run it
 * (`node bin/iomt.mjs …`): one exit code per class of failure (docs/cli.md),
 * `--json` output a program can parse, `-` for standard input, `--version`,
 * and one clear line — no ioredis stack trace — when Redis is down.
 */
import { execFile, spawn } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT, exitCodeOf } from '../../src/cli/common.js';
import { PipelineError } from '../../src/errors.js';
import { freePort } from '../support/free-port.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SLOW = 180_000;
let work: string;
let dir: string;
let closedPort: number;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function iomt(args: string[], env: Record<string, string> = {}, stdin?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn('node', [path.join(root, 'bin/iomt.mjs'), ...args], {
      cwd: root,
      env: { ...process.env, IOMT_FROM_SOURCE: '1', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(stdin ?? '');
  });
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'iomt-cli-conv-'));
  dir = path.join(work, 'mappings');
  await cp(path.join(root, 'mappings'), dir, { recursive: true });
  closedPort = await freePort();
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('exit codes', () => {
  it(
    '0: --version prints the version',
    async () => {
      const pkg = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as {
        version: string;
      };
      const r = await iomt(['--version']);
      expect(r).toMatchObject({ code: EXIT.ok, stdout: `iomt ${pkg.version}\n` });
    },
    SLOW,
  );

  it(
    '1: a check failed — problems in the templates, a fixture mismatch, a refused message',
    async () => {
      const file = path.join(dir, 'fhir/weight-scale.json');
      const original = await readFile(file, 'utf8');
      await writeFile(file, original.replace('"display": "Body weight"', '"display": "Weight"'));
      const mismatch = await iomt(['mappings', 'test', '--dir', dir]);
      await writeFile(file, original.replace('"valueName": "kg"', '"valueName": '));
      const invalid = await iomt(['mappings', 'validate', '--dir', dir, '--quiet']);
      await writeFile(file, original);
      expect(mismatch.code).toBe(EXIT.checkFailed);
      expect(mismatch.stdout).toMatch(/^FAIL {2}weight-scale$/m);
      expect(invalid.code).toBe(EXIT.checkFailed);
      expect(invalid.stderr).toMatch(/^fhir\/weight-scale\.json:\d+:\d+: /m);
      const refused = await iomt(
        ['mappings', 'debug', '-', '--dir', dir],
        {},
        JSON.stringify({ kind: 'glucose-meter', time: 'this morning', glucose: 6.1 }),
      );
      expect(refused.code).toBe(EXIT.checkFailed);
      expect(refused.stdout).toContain('REJECTED InvalidTimestamp');
    },
    SLOW,
  );

  it(
    '2: invalid input — unknown option or command, a missing file, a bad argument, bad configuration',
    async () => {
      const unknownOption = await iomt(['mappings', 'validate', '--bogus']);
      expect(unknownOption.code).toBe(EXIT.invalidInput);
      expect(unknownOption.stderr).toContain("error: unknown option '--bogus'");
      expect((await iomt(['no-such-command'])).code).toBe(EXIT.invalidInput);
      const missing = await iomt(['mappings', 'debug', path.join(work, 'nope.json'), '--dir', dir]);
      expect(missing.code).toBe(EXIT.invalidInput);
      expect(missing.stderr).toMatch(/^iomt: ENOENT: no such file or directory/);
      const badDate = await iomt(
        ['mappings', 'debug', '-', '--dir', dir, '--received-at', 'soon'],
        {},
        '{}',
      );
      expect(badDate.code).toBe(EXIT.invalidInput);
      expect(badDate.stderr).toBe('iomt: InvalidArgument: --received-at: not a date: soon\n');
      const badConfig = await iomt(['mappings', 'validate'], { MAPPINGS_RELOAD: 'sometimes' });
      expect(badConfig.code).toBe(EXIT.invalidInput);
      expect(badConfig.stderr).toMatch(
        /^iomt: ConfigInvalid: invalid configuration:\n\s+MAPPINGS_RELOAD: expected one of explicit, watch, off/,
      );
    },
    SLOW,
  );

  it(
    '3: a service is unavailable — Redis down gives one clear line for every command that uses it',
    async () => {
      const env = { REDIS_URL: `redis://:secret@127.0.0.1:${closedPort}` };
      const line = `iomt: QueueUnavailable: Redis at redis://127.0.0.1:${closedPort} does not answer (ECONNREFUSED); check REDIS_URL and that Redis runs\n`;
      for (const args of [
        ['mappings', 'versions'],
        ['mappings', 'propose', '--dir', dir],
        ['mappings', 'rollback'],
        ['devices', 'list'],
        ['gateways', 'list', 'gw-1'],
        ['dlq', 'list'],
      ]) {
        const r = await iomt(args, env);
        expect({ args, code: r.code, stderr: r.stderr }).toEqual({
          args,
          code: EXIT.unavailable,
          stderr: line,
        });
      }
      const admin = await iomt([
        'mappings',
        'activate',
        'abcd1234',
        '--admin-url',
        `http://127.0.0.1:${closedPort}`,
      ]);
      expect(admin.code).toBe(EXIT.unavailable);
      expect(admin.stderr).toBe(
        `iomt: AdminUnavailable: the admin API at http://127.0.0.1:${closedPort} does not answer\n`,
      );
    },
    SLOW,
  );

  it(
    '4: internal error — a bug exits 4 with its message on one line',
    async () => {
      const r = await new Promise<Run>((resolve) => {
        execFile(
          'node',
          [
            '--import',
            'tsx',
            '--input-type=module',
            '-e',
            `import { fail } from ${JSON.stringify(path.join(root, 'src/cli/common.ts'))}; fail(new TypeError('x is undefined'));`,
          ],
          { cwd: root },
          (err, stdout, stderr) =>
            resolve({
              code: err ? (typeof err.code === 'number' ? err.code : -1) : 0,
              stdout,
              stderr,
            }),
        );
      });
      expect(r).toMatchObject({ code: EXIT.internal, stderr: 'iomt: x is undefined\n' });
    },
    SLOW,
  );

  it('maps every error class the same way', () => {
    const pe = (code: ConstructorParameters<typeof PipelineError>[0]) => new PipelineError(code);
    expect(exitCodeOf(pe('GateRefused'))).toBe(EXIT.checkFailed);
    expect(exitCodeOf(pe('TemplateInvalid'))).toBe(EXIT.checkFailed);
    expect(exitCodeOf(pe('RequiredValueMissing'))).toBe(EXIT.checkFailed);
    expect(exitCodeOf(pe('ActivationConflict'))).toBe(EXIT.checkFailed);
    expect(exitCodeOf(pe('ConfigInvalid'))).toBe(EXIT.invalidInput);
    expect(exitCodeOf(pe('MappingVersionNotFound'))).toBe(EXIT.invalidInput);
    expect(exitCodeOf(pe('DeadLetterNotFound'))).toBe(EXIT.invalidInput);
    expect(exitCodeOf(pe('InvalidArgument'))).toBe(EXIT.invalidInput);
    expect(exitCodeOf(pe('QueueUnavailable'))).toBe(EXIT.unavailable);
    expect(exitCodeOf(pe('ClickHouseUnavailable'))).toBe(EXIT.unavailable);
    expect(exitCodeOf(pe('FhirUnavailable'))).toBe(EXIT.unavailable);
    expect(exitCodeOf(pe('AdminUnavailable'))).toBe(EXIT.unavailable);
    expect(
      exitCodeOf(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })),
    ).toBe(EXIT.unavailable);
    expect(exitCodeOf(pe('Internal'))).toBe(EXIT.internal);
    expect(exitCodeOf(new TypeError('bug'))).toBe(EXIT.internal);
  });
});

describe('--json output', () => {
  it(
    'validate --json: the version and template counts, or every problem with file, line and column',
    async () => {
      const ok = await iomt(['mappings', 'validate', '--dir', dir, '--json']);
      expect(ok.code).toBe(EXIT.ok);
      const good = JSON.parse(ok.stdout) as {
        ok: boolean;
        version: string;
        deviceTemplates: number;
      };
      expect(good).toMatchObject({
        ok: true,
        version: expect.stringMatching(/^[0-9a-f]{12}$/) as string,
      });
      expect(good.deviceTemplates).toBeGreaterThan(0);
      const file = path.join(dir, 'device/weight-scale.json');
      const original = await readFile(file, 'utf8');
      await writeFile(
        file,
        original.replace('"valueExpression": "bmi"', '"valueExpression": "bmi *"'),
      );
      const bad = await iomt(['mappings', 'validate', '--dir', dir, '--json']);
      await writeFile(file, original);
      expect(bad.code).toBe(EXIT.checkFailed);
      const parsed = JSON.parse(bad.stdout) as {
        ok: boolean;
        problems: { file: string; line: number; column: number; message: string }[];
      };
      expect(parsed.ok).toBe(false);
      expect(parsed.problems).toHaveLength(1);
      expect(parsed.problems[0]).toMatchObject({ file: 'device/weight-scale.json' });
      expect(parsed.problems[0]!.line).toBeGreaterThan(0);
      expect(parsed.problems[0]!.message).toMatch(/JSONata syntax error/);
    },
    SLOW,
  );

  it(
    'test --json: every fixture with its differences',
    async () => {
      const file = path.join(dir, 'fhir/weight-scale.json');
      const original = await readFile(file, 'utf8');
      await writeFile(file, original.replace('"display": "Body weight"', '"display": "Weight"'));
      const r = await iomt(['mappings', 'test', '--dir', dir, '--json']);
      await writeFile(file, original);
      expect(r.code).toBe(EXIT.checkFailed);
      const parsed = JSON.parse(r.stdout) as {
        ok: boolean;
        failed: number;
        fixtures: { name: string; ok: boolean; differences: string[] }[];
      };
      expect(parsed.ok).toBe(false);
      // weight-scale, and the gateway fixture that maps a scale's reading too.
      expect(parsed.fixtures.filter((f) => !f.ok).map((f) => f.name)).toEqual([
        'gateway',
        'weight-scale',
      ]);
      expect(parsed.failed).toBe(2);
      expect(parsed.fixtures.find((f) => f.name === 'weight-scale')).toEqual({
        name: 'weight-scale',
        ok: false,
        differences: [
          'observations[0].code.coding[0].display: expected "Body weight", got "Weight"',
          'observations[0].code.text: expected "Body weight", got "Weight"',
        ],
      });
    },
    SLOW,
  );

  it(
    'debug - --json: the message from standard input, every stage as one object',
    async () => {
      const message = {
        kind: 'glucose-meter',
        time: '2026-11-26T07:00:00Z',
        glucose: 6.1,
        unit: 'mmol/L',
        meal: 'before',
      };
      const r = await iomt(
        // Received just after the reading: debug checks device times as the worker does.
        [
          'mappings',
          'debug',
          '-',
          '--dir',
          dir,
          '--device',
          'g-1',
          '--patient',
          'p-1',
          '--received-at',
          '2026-11-26T07:00:05Z',
          '--json',
        ],
        {},
        JSON.stringify(message),
      );
      expect(r.code).toBe(EXIT.ok);
      const parsed = JSON.parse(r.stdout) as {
        ok: boolean;
        templates: {
          template: string;
          matched: number;
          expressions: { field: string; value: unknown }[];
        }[];
        measurements: { type: string; values: Record<string, number> }[];
        observations: { resourceType: string; subject: { reference: string } }[];
      };
      expect(parsed.ok).toBe(true);
      const glucose = parsed.templates.find((t) => t.template === 'bloodglucose')!;
      expect(glucose.matched).toBe(1);
      // The meter's 6.1 mmol/L, converted to mg/dL with UCUM (issue 10).
      expect(glucose.expressions).toContainEqual(
        expect.objectContaining({ field: 'value "mgdl"', value: 6.1 }),
      );
      expect(parsed.measurements).toEqual([
        expect.objectContaining({ values: expect.objectContaining({ mgdl: 110 }) as unknown }),
      ]);
      expect(parsed.measurements).toEqual([expect.objectContaining({ type: 'bloodglucose' })]);
      expect(parsed.observations[0]).toMatchObject({
        resourceType: 'Observation',
        subject: { reference: 'Patient/p-1' },
      });
      const refused = await iomt(
        ['mappings', 'debug', '-', '--dir', dir, '--json'],
        {},
        JSON.stringify({ kind: 'glucose-meter', time: 'this morning', glucose: 6.1 }),
      );
      expect(refused.code).toBe(EXIT.checkFailed);
      expect(JSON.parse(refused.stdout)).toMatchObject({
        ok: false,
        error: { code: 'InvalidTimestamp', stage: 'normalize' },
      });
    },
    SLOW,
  );
});
