/**
 * `iomt devices …`: credentials and patient associations, kept apart.
 *   add <id> [--patient <ref> [--at] [--new-patient]] [--gateway]   register; the secret is shown once
 *   list [--json]                                                   devices and their patient now
 *   history <id> [--json]                                           every change, and the periods
 *   assign <id> --patient <ref> [--at] [--new-patient] [--correction] [--note]
 *   unassign <id> [--at] [--correction] [--note]
 *   rotate-secret <id>                                              a new secret; associations stay
 *   remove <id>                                                     credentials gone, history kept
 * Every change records its actor (--actor, default the OS user) and source "cli".
 */
import type { Command, OptionValues } from '@commander-js/extra-typings';
import { loadConfig } from '../../config.js';
import type { DeviceHistory } from '../../devices/index.js';
import { parseInstant } from '../../dlq/index.js';
import { fail, type Program } from '../common.js';
import { cliActor, withDeviceService } from '../device-context.js';

function iso(ms: number | undefined): string {
  return ms === undefined ? '…' : new Date(ms).toISOString();
}

export function printHistory(h: DeviceHistory): void {
  const out = process.stdout;
  for (const w of h.warnings ?? []) process.stderr.write(`iomt: warning: ${w}\n`);
  out.write(
    `${h.device.deviceId} (${h.device.kind}, ${h.device.status}) — ` +
      `now: ${h.currentPatient ? `Patient/${h.currentPatient}` : 'no patient'}` +
      `${h.gateways.length ? `, relayed by ${h.gateways.join(', ')}` : ''}\n`,
  );
  out.write('periods:\n');
  for (const p of h.periods)
    out.write(`  ${iso(p.start)} → ${iso(p.end)}  Patient/${p.patientId}\n`);
  if (h.periods.length === 0) out.write('  (none)\n');
  out.write('records (oldest first, as recorded):\n');
  for (const r of h.records) {
    const what =
      r.kind === 'assign'
        ? `assign Patient/${r.patientId}${r.newPatient ? ' (new patient)' : ''}`
        : r.kind === 'link' || r.kind === 'unlink'
          ? `${r.kind} gateway ${r.gatewayId}`
          : r.kind;
    out.write(
      `  #${r.seq} effective ${iso(r.at)}  ${what}${r.correction ? ' [correction]' : ''}` +
        `  — ${r.actor} via ${r.source} at ${iso(r.recordedAt)}${r.note ? ` (${r.note})` : ''}\n`,
    );
  }
}

function json(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function register(program: Program): void {
  const devices = program
    .command('devices')
    .description('device credentials and their patient associations over time');

  devices
    .command('add')
    .argument('<deviceId>', 'device id (its MQTT username)')
    .option('--patient <ref>', 'associate it with this Patient (Patient/<id> or <id>)')
    .option(
      '--at <time>',
      'when the association starts (ISO 8601 with zone, epoch ms, or 15m/2h ago); default now',
    )
    .option(
      '--new-patient',
      'the Patient does not exist on the FHIR server yet: let the pipeline create it',
    )
    .option('--gateway', 'a gateway: relays readings of linked devices, has no patient of its own')
    .option('--secret <secret>', 'use this secret instead of a generated one')
    .option('--actor <name>', 'who makes the change (default: the OS user)')
    .option('--json', 'print JSON')
    .description(
      'register a device and print its secret (shown once, stored hashed); refuses an existing id',
    )
    .action(async (deviceId, opts) => {
      try {
        const config = loadConfig();
        const result = await withDeviceService(config, (d) =>
          d.add(deviceId, {
            ...cliActor(opts.actor),
            ...(opts.gateway ? { kind: 'gateway' as const } : {}),
            ...(opts.secret ? { secret: opts.secret } : {}),
            ...(opts.patient !== undefined ? { patient: opts.patient } : {}),
            ...(opts.at !== undefined ? { at: parseInstant(opts.at, '--at') } : {}),
            ...(opts.newPatient ? { newPatient: true } : {}),
          }),
        );
        if (opts.json) {
          json({ deviceId, secret: result.secret, currentPatient: result.history.currentPatient });
          return;
        }
        const patient = result.history.currentPatient;
        process.stdout.write(
          `device ${deviceId} registered${patient ? `, associated with Patient/${patient}` : ' (no patient yet: iomt devices assign)'}\n` +
            `secret: ${result.secret}\n(store it now: it cannot be shown again)\n`,
        );
      } catch (err) {
        fail(err);
      }
    });

  devices
    .command('list')
    .option('--json', 'print JSON')
    .description('list registered devices with the patient each is associated with now')
    .action(async (opts) => {
      try {
        const list = await withDeviceService(loadConfig(), (d) => d.list());
        if (opts.json) {
          json(list);
          return;
        }
        for (const d of list)
          process.stdout.write(
            `${d.deviceId}\t${d.kind}\t${d.status}\t${d.currentPatient ? `Patient/${d.currentPatient}` : '-'}\t${d.createdAt}\n`,
          );
        process.stdout.write(`${list.length} device(s)\n`);
      } catch (err) {
        fail(err);
      }
    });

  devices
    .command('history')
    .argument('<deviceId>')
    .option('--json', 'print JSON')
    .description('every recorded change of the device, and its association periods')
    .action(async (deviceId, opts) => {
      try {
        const h = await withDeviceService(loadConfig(), (d) => d.history(deviceId));
        if (opts.json) json(h);
        else printHistory(h);
      } catch (err) {
        fail(err);
      }
    });

  /** What every association change takes: when, whether it corrects, why, who. */
  const change = <A extends unknown[], O extends OptionValues>(cmd: Command<A, O>) =>
    cmd
      .option(
        '--at <time>',
        'when it takes effect (ISO 8601 with zone, epoch ms, or 15m/2h ago); default now',
      )
      .option(
        '--correction',
        'it replaces what was recorded for that time (readings already charted do not move)',
      )
      .option('--note <text>', 'why, e.g. "barcode scan at bed 12", "discharged"')
      .option('--actor <name>', 'who makes the change (default: the OS user)');
  const changeOf = (opts: {
    at?: string;
    correction?: boolean;
    note?: string;
    actor?: string;
  }) => ({
    ...cliActor(opts.actor),
    ...(opts.at !== undefined ? { at: parseInstant(opts.at, '--at') } : {}),
    ...(opts.correction ? { correction: true } : {}),
    ...(opts.note ? { note: opts.note } : {}),
  });
  const printing = (run: () => Promise<DeviceHistory>) => async () => {
    try {
      printHistory(await run());
    } catch (err) {
      fail(err);
    }
  };

  change(
    devices
      .command('assign')
      .argument('<deviceId>')
      .requiredOption('--patient <ref>', 'the Patient (Patient/<id> or <id>)')
      .option(
        '--new-patient',
        'the Patient does not exist on the FHIR server yet: let the pipeline create it',
      ),
  )
    .description('associate the device with a patient from a time on')
    .action((deviceId, opts) =>
      printing(() =>
        withDeviceService(loadConfig(), (d) =>
          d.assign(deviceId, opts.patient, {
            ...changeOf(opts),
            ...(opts.newPatient ? { newPatient: true } : {}),
          }),
        ),
      )(),
    );

  change(devices.command('unassign').argument('<deviceId>'))
    .description('end the device’s association (its open MQTT sessions end)')
    .action((deviceId, opts) =>
      printing(() =>
        withDeviceService(loadConfig(), (d) => d.unassign(deviceId, changeOf(opts))),
      )(),
    );

  devices
    .command('rotate-secret')
    .argument('<deviceId>')
    .option('--actor <name>', 'who makes the change (default: the OS user)')
    .option('--json', 'print JSON')
    .description('give the device a new secret; associations stay, sessions with the old one end')
    .action(async (deviceId, opts) => {
      try {
        const { secret } = await withDeviceService(loadConfig(), (d) =>
          d.rotateSecret(deviceId, cliActor(opts.actor)),
        );
        if (opts.json) json({ deviceId, secret });
        else
          process.stdout.write(
            `new secret for ${deviceId}: ${secret}\n(store it now: it cannot be shown again; the old one no longer works)\n`,
          );
      } catch (err) {
        fail(err);
      }
    });

  devices
    .command('remove')
    .argument('<deviceId>')
    .option('--actor <name>', 'who makes the change (default: the OS user)')
    .description('remove the device’s credentials and end its association now (its history stays)')
    .action(async (deviceId, opts) => {
      try {
        const removed = await withDeviceService(loadConfig(), (d) =>
          d.remove(deviceId, cliActor(opts.actor)),
        );
        process.stdout.write(removed ? `removed ${deviceId}\n` : `no active device ${deviceId}\n`);
        if (!removed) process.exitCode = 1;
      } catch (err) {
        fail(err);
      }
    });
}
