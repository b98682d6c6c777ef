/**
 * `iomt mappings validate|test|debug|import-medtech`: the operators' templates.
 *   validate         every problem with file:line:column (and the character inside an expression)
 *   test             every fixture in mappings/fixtures; a readable diff; exit 1 on mismatch
 *   debug <msg|->    each stage for one message: matches, expression values, measurements, Observations
 *   import-medtech   check MedTech templates; report what cannot be honoured exactly; --write copies them
 * validate, test and debug print one JSON object with --json. The lifecycle
 * (propose, activate, rollback, …) is in mapping-lifecycle.ts.
 */
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig } from '../../config.js';
import { PipelineError } from '../../errors.js';
import {
  checkMedTechTemplates,
  debugMessage,
  formatProblem,
  loadMappings,
  normalizePolicy,
  readFixtures,
  runFixture,
  type LocatedProblem,
} from '../../mapping/index.js';
import { checkFailed, fail, type Program } from '../common.js';
import { debugJson } from '../../mapping/index.js';
import { registerLifecycle } from './mapping-lifecycle.js';

const write = (s: string): void => void process.stdout.write(`${s}\n`);
const warn = (s: string) => process.stderr.write(`${s}\n`);
const json = (v: unknown) => write(JSON.stringify(v, null, 2));

function mappingsDir(dir: string | undefined): string {
  return dir ?? loadConfig().mappings.dir;
}

function printNotes(notes: readonly LocatedProblem[], quiet: boolean | undefined): void {
  if (quiet || notes.length === 0) return;
  for (const n of notes) warn(`note: ${formatProblem(n)}`);
}

const problemJson = (p: LocatedProblem) => ({
  file: p.file,
  line: p.line ?? null,
  column: p.column ?? null,
  path: p.path,
  message: p.message,
  text: formatProblem(p),
});

/** A message file, or standard input for "-". */
async function readMessage(file: string): Promise<string> {
  if (file !== '-') return readFile(file, 'utf8');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function register(program: Program): void {
  const mappings = program
    .command('mappings')
    .description('check, try, propose and activate the mapping templates');

  mappings
    .command('validate')
    .option('--dir <dir>', 'mappings folder (default: $MAPPINGS_DIR)')
    .option('--quiet', 'do not print notes')
    .option('--json', 'print the result as one JSON object')
    .description(
      'validate every template: errors with file, line and column; cross-checks device and FHIR templates',
    )
    .action(async (opts) => {
      try {
        const result = await loadMappings(mappingsDir(opts.dir));
        if (opts.json) {
          json(
            result.ok
              ? {
                  ok: true,
                  version: result.mappings.version,
                  deviceTemplates: result.mappings.deviceTemplates.length,
                  fhirTemplates: result.mappings.fhirTemplates.size,
                  problems: [],
                  notes: result.notes.map(problemJson),
                }
              : {
                  ok: false,
                  problems: result.problems.map(problemJson),
                  notes: result.notes.map(problemJson),
                },
          );
          if (!result.ok) checkFailed();
          return;
        }
        if (!result.ok) {
          for (const p of result.problems) warn(formatProblem(p));
          printNotes(result.notes, opts.quiet);
          warn(`${result.problems.length} problem(s)`);
          checkFailed();
          return;
        }
        printNotes(result.notes, opts.quiet);
        const m = result.mappings;
        write(
          `ok: ${m.deviceTemplates.length} device template(s), ${m.fhirTemplates.size} FHIR template(s), version ${m.version}`,
        );
      } catch (err) {
        fail(err);
      }
    });

  mappings
    .command('test')
    .option('--dir <dir>', 'mappings folder (default: $MAPPINGS_DIR)')
    .option('--show <fixture>', 'print what the templates produce for this fixture')
    .option('--json', 'print the results as one JSON object')
    .description('run every fixture (message → measurements → Observations); exit 1 on a mismatch')
    .action(async (opts) => {
      try {
        const config = loadConfig();
        // The worker's own policy: input limits, plausibility limits, daily-window zone.
        const policy = normalizePolicy(config);
        const dir = opts.dir ?? config.mappings.dir;
        const result = await loadMappings(dir);
        if (!result.ok) {
          if (opts.json)
            json({ ok: false, problems: result.problems.map(problemJson), fixtures: [] });
          else {
            for (const p of result.problems) warn(formatProblem(p));
            warn('the templates do not validate; no fixture was run');
          }
          checkFailed();
          return;
        }
        const fixtures = await readFixtures(dir);
        if (fixtures.length === 0) {
          throw new PipelineError(
            'InvalidArgument',
            `no fixtures in ${path.join(dir, 'fixtures')}`,
          );
        }
        const outcomes = [];
        for (const f of fixtures) outcomes.push(await runFixture(result.mappings, f, policy));
        const failed = outcomes.filter((o) => !o.ok).length;
        if (opts.json) {
          json({
            ok: failed === 0,
            version: result.mappings.version,
            passed: outcomes.length - failed,
            failed,
            fixtures: outcomes.map((o) => ({
              name: o.name,
              ok: o.ok,
              differences: o.differences,
              ...(opts.show === o.name && o.actual ? { actual: o.actual } : {}),
            })),
          });
        } else {
          for (const o of outcomes) {
            write(`${o.ok ? 'pass' : 'FAIL'}  ${o.name}`);
            for (const d of o.differences) write(`      ${d}`);
            if (opts.show === o.name && o.actual) write(JSON.stringify(o.actual, null, 2));
          }
          write(
            `${outcomes.length - failed} passed, ${failed} failed (templates version ${result.mappings.version})`,
          );
        }
        if (failed > 0) checkFailed();
      } catch (err) {
        fail(err);
      }
    });

  mappings
    .command('debug')
    .argument('<message.json>', 'a message body as a device would publish it ("-": standard input)')
    .option('--dir <dir>', 'mappings folder (default: $MAPPINGS_DIR)')
    .option('--device <id>', 'the authenticated device', 'debug-device')
    .option('--patient <id>', 'the patient the device is bound to', 'debug-patient')
    .option(
      '--child <device=patient...>',
      'for a gateway: a device it may speak for, with its patient (repeatable)',
    )
    .option('--received-at <iso>', 'broker receipt time (default: now)')
    .option('--json', 'print every stage as one JSON object')
    .description(
      'show each stage for one message: matched templates, expression values, measurements, Observations, and why anything was rejected',
    )
    .action(async (file, opts) => {
      try {
        const config = loadConfig();
        const receivedAt = opts.receivedAt ? Date.parse(opts.receivedAt) : Date.now();
        if (Number.isNaN(receivedAt))
          throw new PipelineError(
            'InvalidArgument',
            `--received-at: not a date: ${opts.receivedAt}`,
          );
        const children = new Map(
          (opts.child ?? []).map((c) => {
            const [device = '', patient] = c.split('=');
            if (!device || !patient)
              throw new PipelineError(
                'InvalidArgument',
                `--child: expected device=patient, got "${c}"`,
              );
            return [device, patient] as const;
          }),
        );
        const payload = await readMessage(file);
        const result = await loadMappings(opts.dir ?? config.mappings.dir);
        if (!result.ok) {
          if (opts.json) json({ ok: false, problems: result.problems.map(problemJson) });
          else for (const p of result.problems) warn(formatProblem(p));
          checkFailed();
          return;
        }
        const input = {
          payload,
          meta: { deviceId: opts.device, topic: `devices/${opts.device}/telemetry`, receivedAt },
          patientId: opts.patient,
          children,
          identifierSystem: config.fhir.identifierSystem,
          // The same input policy as the worker (limits, device times, plausibility).
          policy: normalizePolicy(config),
        };
        if (opts.json) {
          const report = await debugJson(result.mappings, input);
          json(report);
          if (!report.ok) checkFailed();
          return;
        }
        const report = await debugMessage(result.mappings, input);
        write(report.text);
        if (!report.ok) checkFailed();
      } catch (err) {
        fail(err);
      }
    });

  mappings
    .command('import-medtech')
    .argument('<devicecontent.json>', 'the MedTech device mapping (CollectionContent)')
    .argument('<fhirmapping.json>', 'the MedTech FHIR destination mapping (CollectionFhir)')
    .option('--name <name>', 'file name in mappings/device and mappings/fhir', 'medtech')
    .option('--dir <dir>', 'mappings folder (default: $MAPPINGS_DIR)')
    .option('--write', 'copy both files, unchanged, into the mappings folder when they load')
    .description(
      'check MedTech templates: whether they load unchanged, and everything that behaves differently here',
    )
    .action(async (deviceFile, fhirFile, opts) => {
      try {
        const name = `${opts.name.replace(/\.json$/, '')}.json`;
        const report = checkMedTechTemplates({
          deviceName: name,
          deviceText: await readFile(deviceFile, 'utf8'),
          fhirName: name,
          fhirText: await readFile(fhirFile, 'utf8'),
        });
        for (const p of report.problems) warn(formatProblem(p));
        if (report.differences.length > 0) {
          write(`${report.differences.length} difference(s) from the MedTech service:`);
          for (const d of report.differences) write(`  - ${formatProblem(d)}`);
        }
        if (!report.ok) {
          warn(`${report.problems.length} problem(s): the templates do not load`);
          checkFailed();
          return;
        }
        const m = report.mappings!;
        write(
          `loads unchanged: ${m.deviceTemplates.length} device template(s), ${m.fhirTemplates.size} FHIR template(s)`,
        );
        if (opts.write) {
          const dir = mappingsDir(opts.dir);
          await mkdir(path.join(dir, 'device'), { recursive: true });
          await mkdir(path.join(dir, 'fhir'), { recursive: true });
          await copyFile(deviceFile, path.join(dir, 'device', name));
          await copyFile(fhirFile, path.join(dir, 'fhir', name));
          write(`copied to ${path.join(dir, 'device', name)} and ${path.join(dir, 'fhir', name)}`);
          const all = await loadMappings(dir);
          if (!all.ok) {
            for (const p of all.problems) warn(formatProblem(p));
            warn('with the templates already there, the folder no longer validates: see above');
            checkFailed();
          }
        }
      } catch (err) {
        fail(err);
      }
    });

  registerLifecycle(mappings);
}
