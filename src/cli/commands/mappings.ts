/** `iomt mappings validate|debug`: the operators' templates. */
import { readFile } from 'node:fs/promises';
import { loadConfig } from '../../config.js';
import { formatProblem, loadMappings, normalizeMessage } from '../../mapping/index.js';
import { fail, type Program } from '../common.js';

export function register(program: Program): void {
  const mappings = program.command('mappings').description('check and try the mapping templates');
  mappings
    .command('validate')
    .option('--dir <dir>', 'mappings folder (default: $MAPPINGS_DIR)')
    .description('validate every template; errors with file, line and column')
    .action(async (opts) => {
      try {
        const dir = opts.dir ?? loadConfig().mappings.dir;
        const result = await loadMappings(dir);
        if (!result.ok) {
          for (const p of result.problems) process.stderr.write(`${formatProblem(p)}\n`);
          process.stderr.write(`${result.problems.length} problem(s)\n`);
          process.exitCode = 1;
          return;
        }
        const m = result.mappings;
        process.stdout.write(
          `ok: ${m.deviceTemplates.length} device template(s), ${m.fhirTemplates.size} FHIR template(s), version ${m.version}\n`,
        );
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
    .description(
      'show what the pipeline makes of one message: matched templates, measurements, Observations',
    )
    .action(async (file, opts) => {
      try {
        const config = loadConfig();
        const result = await loadMappings(opts.dir ?? config.mappings.dir);
        if (!result.ok) {
          for (const p of result.problems) process.stderr.write(`${formatProblem(p)}\n`);
          process.exitCode = 1;
          return;
        }
        const payload = await readFile(file, 'utf8');
        const topic = `devices/${opts.device}/telemetry`;
        const out = await normalizeMessage(result.mappings, {
          payload,
          meta: { deviceId: opts.device, topic, receivedAt: Date.now() },
          patientId: opts.patient,
          identifierSystem: config.fhir.identifierSystem,
        });
        process.stdout.write(
          `matched templates: ${out.matchedTemplates.join(', ')}\n\nmeasurements:\n${JSON.stringify(out.measurements, null, 2)}\n\nobservations:\n${JSON.stringify(
            out.observations.map((o) => o.observation),
            null,
            2,
          )}\n`,
        );
      } catch (err) {
        fail(err);
      }
    });
}
