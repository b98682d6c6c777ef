/** `iomt broker|worker|admin|all`: run roles with the configuration from the environment. */
import closeWithGrace from 'close-with-grace';
import { loadConfig } from '../../config.js';
import { createLogger } from '../../logger.js';
import { ROLES, startPipeline, type Role } from '../../pipeline.js';
import { fail, type Program } from '../common.js';

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

export function register(program: Program): void {
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
}
