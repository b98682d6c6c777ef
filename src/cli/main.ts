/**
 * `iomt` — one CLI for every role and every operator task.
 *   iomt broker|worker|admin|all        run roles (config from the environment)
 *   iomt devices add|list|remove        the device registry
 *   iomt simulate --devices N --rate R  simulated bedside monitors
 *   iomt mappings validate|debug        the operators' templates
 */
import { readFile } from 'node:fs/promises';
import { Command, Option } from '@commander-js/extra-typings';
import closeWithGrace from 'close-with-grace';
import { loadConfig, type Config } from '../config.js';
import { DeviceRegistry } from '../devices/registry.js';
import { isPipelineError } from '../errors.js';
import { createLogger } from '../logger.js';
import { formatProblem, loadMappings, normalizeMessage } from '../mapping/index.js';
import { ROLES, startPipeline, type Role } from '../pipeline.js';
import { createRedis } from '../queue-runtime.js';
import { simulate } from '../simulator/run.js';

function fail(err: unknown): never {
  const message = isPipelineError(err)
    ? `${err.code}: ${err.message}`
    : err instanceof Error
      ? err.message
      : String(err);
  process.stderr.write(`iomt: ${message}\n`);
  process.exit(1);
}

async function withRegistry<T>(
  config: Config,
  fn: (registry: DeviceRegistry) => Promise<T>,
): Promise<T> {
  const redis = createRedis(config.redis.url);
  try {
    return await fn(new DeviceRegistry(redis, config.redis.prefix));
  } finally {
    redis.disconnect();
  }
}

async function runRoles(roles: readonly Role[]): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.log.level);
  const pipeline = await startPipeline(config, roles, log);
  closeWithGrace({ delay: 15_000 }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'shutting down after an error');
    else log.info({ signal }, 'shutting down');
    await pipeline.close();
  });
}

const program = new Command('iomt')
  .description('IoMT ingestion pipeline: MQTT → queue → JSONata → FHIR R4 → ClickHouse')
  .showHelpAfterError();

for (const role of ROLES) {
  program
    .command(role)
    .description(`run the ${role} role`)
    .action(() => runRoles([role]).catch(fail));
}
program
  .command('all')
  .description('run broker, worker and admin in one process')
  .action(() => runRoles(ROLES).catch(fail));

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

program
  .command('simulate')
  .description('register simulated bedside monitors and publish vitals over MQTT (QoS 1)')
  .addOption(
    new Option('--devices <n>', 'number of devices')
      .argParser((v) => Number.parseInt(v, 10))
      .default(5),
  )
  .addOption(
    new Option('--rate <r>', 'messages per second per device')
      .argParser(Number.parseFloat)
      .default(1),
  )
  .addOption(
    new Option('--duration <s>', 'stop after this many seconds').argParser(Number.parseFloat),
  )
  .option('--mqtt-url <url>', 'broker URL (default: mqtt://127.0.0.1:$MQTT_PORT)')
  .option('--prefix <p>', 'device and patient id prefix', 'sim')
  .action(async (opts) => {
    try {
      const config = loadConfig();
      const mqttUrl = opts.mqttUrl ?? `mqtt://127.0.0.1:${config.mqtt.port}`;
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      process.once('SIGTERM', () => controller.abort());
      const result = await withRegistry(config, (registry) =>
        simulate({
          registry,
          mqttUrl,
          devices: opts.devices,
          rate: opts.rate,
          prefix: opts.prefix,
          signal: controller.signal,
          progress: (line) => process.stdout.write(`${line}\n`),
          ...(opts.duration !== undefined ? { durationSec: opts.duration } : {}),
        }),
      );
      if (result.failed > 0) process.exitCode = 1;
    } catch (err) {
      fail(err);
    }
  });

program
  .command('query')
  .argument('<sql>', 'one read-only statement')
  .addOption(
    new Option('--format <f>', 'output format')
      .choices(['table', 'csv', 'json'] as const)
      .default('table' as const),
  )
  .option(
    '--admin-url <url>',
    'admin API of the process owning the analytics store (default: http://127.0.0.1:$ADMIN_PORT)',
  )
  .description('query the ClickHouse mirror through the admin API')
  .action(async (sql, opts) => {
    try {
      const config = loadConfig();
      const base = opts.adminUrl ?? `http://127.0.0.1:${config.admin.port}`;
      const format = { table: 'PrettyCompact', csv: 'CSV', json: 'JSONEachRow' }[opts.format];
      const res = await fetch(`${base}/api/analytics/query`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(config.admin.token ? { authorization: `Bearer ${config.admin.token}` } : {}),
        },
        body: JSON.stringify({ sql, format }),
      });
      const text = await res.text();
      if (!res.ok) {
        const err = (JSON.parse(text) as { error?: { code: string; message: string } }).error;
        throw new Error(err ? `${err.code}: ${err.message}` : `HTTP ${res.status}`);
      }
      process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    } catch (err) {
      fail(err);
    }
  });

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

await program.parseAsync(process.argv);
