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
 *
 * A command's module is imported only when that command runs (all of them for
 * help or an unknown command): a role process holds the code of its role, not
 * the mapping CLI or the ClickHouse client (docs/performance.md, memory).
 */
import { Command, CommanderError } from '@commander-js/extra-typings';
import { packageVersion } from '../build-info.js';
import { loadConfig } from '../config.js';
import { connectRedis, EXIT, fail, type Program } from './common.js';

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

type Register = (program: Program) => void;

/** Each command under `iomt`, and the module that registers it. */
const COMMANDS: Readonly<Record<string, () => Promise<{ register: Register }>>> = {
  broker: () => import('./commands/roles.js'),
  worker: () => import('./commands/roles.js'),
  admin: () => import('./commands/roles.js'),
  all: () => import('./commands/roles.js'),
  devices: () => import('./commands/devices.js'),
  gateways: () => import('./commands/gateways.js'),
  simulate: () => import('./commands/simulate.js'),
  mappings: () => import('./commands/mappings.js'),
  query: () => import('./commands/query.js'),
  mirror: () => import('./commands/mirror.js'),
  dlq: () => import('./commands/dlq.js'),
  'fhir-auth': () => import('./commands/fhir-auth.js'),
};

/** The command named on the command line (the first argument that is not an option), if known. */
function namedCommand(argv: readonly string[]): string | undefined {
  const name = argv.slice(2).find((a) => !a.startsWith('-'));
  return name !== undefined && Object.hasOwn(COMMANDS, name) ? name : undefined;
}

const named = namedCommand(process.argv);
const loaders = named !== undefined ? [COMMANDS[named]!] : Object.values(COMMANDS);
// One module may register several commands (roles.js: broker, worker, admin, all): once each.
for (const { register } of new Set(await Promise.all(loaders.map((load) => load()))))
  register(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and --version end with exit code 0; everything else is a usage error.
    process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.invalidInput);
  }
  fail(err);
}
