/**
 * `iomt` — one CLI for every role and every operator task. Each command lives
 * in its own module under commands/ and registers itself here.
 *   iomt broker|worker|admin|all        run roles (config from the environment)
 *   iomt devices add|list|remove        the device registry
 *   iomt simulate --devices N --rate R  simulated bedside monitors
 *   iomt gateways link|unlink|list      devices a gateway may publish for
 *   iomt mappings validate|test|debug|import-medtech   the operators' templates
 *   iomt query "SQL"                    the ClickHouse mirror
 *   iomt mirror backfill [--since]      rebuild the mirror from FHIR
 *   iomt dlq list|show|replay|purge     the dead-letter queue
 */
import { Command } from '@commander-js/extra-typings';
import { register as registerDevices } from './commands/devices.js';
import { register as registerDlq } from './commands/dlq.js';
import { register as registerGateways } from './commands/gateways.js';
import { register as registerMappings } from './commands/mappings.js';
import { register as registerMirror } from './commands/mirror.js';
import { register as registerQuery } from './commands/query.js';
import { register as registerRoles } from './commands/roles.js';
import { register as registerSimulate } from './commands/simulate.js';

const program = new Command('iomt')
  .description('IoMT ingestion pipeline: MQTT → queue → JSONata → FHIR R4 → ClickHouse')
  .showHelpAfterError();

for (const register of [
  registerRoles,
  registerDevices,
  registerGateways,
  registerSimulate,
  registerMappings,
  registerQuery,
  registerMirror,
  registerDlq,
]) {
  register(program);
}

await program.parseAsync(process.argv);
