/**
 * `iomt mappings validate|test|debug|import-medtech`: the operators' templates.
 *   validate         every problem with file:line:column (and the character inside an expression)
 *   test             every fixture in mappings/fixtures; a readable diff; exit 1 on mismatch
 *   debug <msg>      each stage for one message: matches, expression values, measurements, Observations
 *   import-medtech   check MedTech templates; report what cannot be honoured exactly; --write copies them
 */
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig } from '../../config.js';
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
import { fail, type Program } from '../common.js';

const write = (s: string) => process.stdout.write(`${s}\n`);
const warn = (s: string) => process.stderr.write(`${s}\n`);

function mappingsDir(dir: string | undefined): string {
  return dir ?? loadConfig().mappings.dir;
}

function printNotes(notes: readonly LocatedProblem[], quiet: boolean | undefined): void {
  if (quiet || notes.length === 0) return;
  for (const n of notes) warn(`note: ${formatProblem(n)}`);
}

export function register(program: Program): void {
  const mappings = program.command('mappings').description('check and try the mapping templates');

  mappings
    .command('validate')
    .option('--dir <dir>', 'mappings folder (default: $MAPPINGS_DIR)')
    .option('--quiet', 'do not print notes')
    .description(
      'validate every template: errors with file, line and column; cross-checks device and FHIR templates',
    )
    .action(async (opts) => {
      try {
        const result = await loadMappings(mappingsDir(opts.dir));
        if (!result.ok) {
          for (const p of result.problems) warn(formatProblem(p));
          printNotes(result.notes, opts.quiet);
          warn(`${result.problems.length} problem(s)`);
          process.exitCode = 1;
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
    .description('run every fixture (message → measurements → Observations); exit 1 on a mismatch')
    .action(async (opts) => {
      try {
        const config = loadConfig();
        // The worker's own policy: input limits, plausibility limits, daily-window zone.
        const policy = normalizePolicy(config);
        const dir = opts.dir ?? config.mappings.dir;
        const result = await loadMappings(dir);
        if (!result.ok) {
          for (const p of result.problems) warn(formatProblem(p));
          warn('the templates do not validate; no fixture was run');
          process.exitCode = 1;
          return;
        }
        const fixtures = await readFixtures(dir);
        if (fixtures.length === 0) {
          warn(`no fixtures in ${path.join(dir, 'fixtures')}`);
          process.exitCode = 1;
          return;
        }
        let failed = 0;
        for (const f of fixtures) {
          const outcome = await runFixture(result.mappings, f, policy);
          write(`${outcome.ok ? 'pass' : 'FAIL'}  ${f.name}`);
          for (const d of outcome.differences) write(`      ${d}`);
          if (!outcome.ok) failed++;
          if (opts.show === f.name && outcome.actual)
            write(JSON.stringify(outcome.actual, null, 2));
        }
        write(
          `${fixtures.length - failed} passed, ${failed} failed (templates version ${result.mappings.version})`,
        );
        if (failed > 0) process.exitCode = 1;
      } catch (err) {
        fail(err);
      }
    });

  mappings
    .command('debug')
    .argument('<message.json>', 'a message body as a device would publish it')
    .option('--dir <dir>', 'mappings folder (default: $MAPPINGS_DIR)')
    .option('--device <id>', 'the authenticated device', 'debug-device')
    .option('--patient <id>', 'the patient the device is bound to', 'debug-patient')
    .option(
      '--child <device=patient...>',
      'for a gateway: a device it may speak for, with its patient (repeatable)',
    )
    .option('--received-at <iso>', 'broker receipt time (default: now)')
    .description(
      'show each stage for one message: matched templates, expression values, measurements, Observations, and why anything was rejected',
    )
    .action(async (file, opts) => {
      try {
        const config = loadConfig();
        const result = await loadMappings(opts.dir ?? config.mappings.dir);
        if (!result.ok) {
          for (const p of result.problems) warn(formatProblem(p));
          process.exitCode = 1;
          return;
        }
        const children = new Map(
          (opts.child ?? []).map((c) => {
            const [device = '', patient] = c.split('=');
            return [device, patient] as const;
          }),
        );
        const receivedAt = opts.receivedAt ? Date.parse(opts.receivedAt) : Date.now();
        if (Number.isNaN(receivedAt))
          throw new Error(`--received-at: not a date: ${opts.receivedAt}`);
        const report = await debugMessage(result.mappings, {
          payload: await readFile(file, 'utf8'),
          meta: { deviceId: opts.device, topic: `devices/${opts.device}/telemetry`, receivedAt },
          patientId: opts.patient,
          children,
          identifierSystem: config.fhir.identifierSystem,
          // The same input policy as the worker (limits, device times, plausibility).
          policy: normalizePolicy(config),
        });
        write(report.text);
        if (!report.ok) process.exitCode = 1;
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
          process.exitCode = 1;
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
            process.exitCode = 1;
          }
        }
      } catch (err) {
        fail(err);
      }
    });
}
