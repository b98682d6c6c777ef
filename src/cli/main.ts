/**
 * `iomt` — one CLI for every role and every operator task. Each command lives
 * in its own module under commands/ and registers itself here.
 *   iomt broker|worker|admin|all        run roles (config from the environment)
 *   iomt devices add|list|remove        the device registry
 *   iomt simulate --devices N --rate R  simulated bedside monitors
 *   iomt gateways link|unlink|list      devices a gateway may publish for
 *   iomt mappings validate|test|debug|import-medtech   the operators' templates
 *   iomt mappings propose|diff|shadow-run|activate|rollback|versions|audit|prune
 *                                       the template lifecycle
 *   iomt query "SQL"                    the ClickHouse mirror
 *   iomt mirror backfill [--since]      rebuild the mirror from FHIR
 *   iomt dlq list|show|replay|purge     the dead-letter queue
 *   iomt fhir-auth jwks|check           FHIR server credentials (FHIR_AUTH)
 *   iomt --version
 * Exit codes are the same for every command (common.ts, docs/cli.md).
 */
import { Command, CommanderError } from '@commander-js/extra-typings';
import { packageVersion } from '../build-info.js';
import { loadConfig } from '../config.js';
import { connectRedis, EXIT, fail } from './common.js';
import { register as registerDevices } from './commands/devices.js';
import { register as registerDlq } from './commands/dlq.js';
import { register as registerFhirAuth } from './commands/fhir-auth.js';
import { register as registerGateways } from './commands/gateways.js';
import { register as registerMappings } from './commands/mappings.js';
import { register as registerMirror } from './commands/mirror.js';
import { register as registerQuery } from './commands/query.js';
import { register as registerRoles } from './commands/roles.js';
import { register as registerSimulate } from './commands/simulate.js';

/** Commands that work on Redis: when it does not answer, one line and exit 3 before they start. */
const NEEDS_REDIS = new Set(['devices', 'gateways', 'dlq']);

const program = new Command('iomt')
  .description('IoMT ingestion pipeline: MQTT → queue → JSONata → FHIR R4 → ClickHouse')
  .version(`iomt ${packageVersion()}`, '-V, --version', 'print the version')
  .showHelpAfterError()
  // Usage errors throw instead of exiting 1, so they get the invalid-input code (2).
  .exitOverride();

program.hook('preAction', async (_root, action) => {
  let top = action;
  while (top.parent?.parent) top = top.parent; // up to the command right under `iomt`
  if (NEEDS_REDIS.has(top.name())) (await connectRedis(loadConfig().redis.url)).disconnect();
});

for (const register of [
  registerRoles,
  registerDevices,
  registerGateways,
  registerSimulate,
  registerMappings,
  registerQuery,
  registerMirror,
  registerDlq,
  registerFhirAuth,
]) {
  register(program);
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and --version end with exit code 0; everything else is a usage error.
    process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.invalidInput);
  }
  fail(err);
}
