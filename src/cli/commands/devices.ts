/** `iomt devices add|list|remove`: the device registry. */
import { loadConfig } from '../../config.js';
import { fail, withRegistry, type Program } from '../common.js';

export function register(program: Program): void {
  const devices = program.command('devices').description('manage the device registry');
  devices
    .command('add')
    .argument('<deviceId>', 'device id (its MQTT username)')
    .requiredOption('--patient <ref>', 'FHIR Patient the readings belong to (Patient/<id> or <id>)')
    .option('--secret <secret>', 'use this secret instead of a generated one')
    .description('register a device and print its secret (shown once, stored hashed)')
    .action(async (deviceId, opts) => {
      try {
        const config = loadConfig();
        const { secret, record } = await withRegistry(config, (r) =>
          r.add(deviceId, opts.patient, opts.secret),
        );
        process.stdout.write(
          `device ${record.deviceId} bound to Patient/${record.patientId}\nsecret: ${secret}\n(store it now: it cannot be shown again)\n`,
        );
      } catch (err) {
        fail(err);
      }
    });
  devices
    .command('list')
    .description('list registered devices')
    .action(async () => {
      try {
        const list = await withRegistry(loadConfig(), (r) => r.list());
        for (const d of list)
          process.stdout.write(`${d.deviceId}\tPatient/${d.patientId}\t${d.createdAt}\n`);
        process.stdout.write(`${list.length} device(s)\n`);
      } catch (err) {
        fail(err);
      }
    });
  devices
    .command('remove')
    .argument('<deviceId>')
    .description('remove a device (it can no longer connect)')
    .action(async (deviceId) => {
      try {
        const removed = await withRegistry(loadConfig(), (r) => r.remove(deviceId));
        process.stdout.write(removed ? `removed ${deviceId}\n` : `no device ${deviceId}\n`);
        if (!removed) process.exitCode = 1;
      } catch (err) {
        fail(err);
      }
    });
}
