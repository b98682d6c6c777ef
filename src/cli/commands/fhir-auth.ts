/**
 * `iomt fhir-auth`: the FHIR server credentials (FHIR_AUTH, docs/deployment.md).
 *   jwks    the public key set of FHIR_PRIVATE_KEY_FILE, to register with the
 *           authorization server or publish at FHIR_JWKS_URL (no private part)
 *   check   obtains a token and reads the server's CapabilityStatement with it;
 *           prints where it succeeded, never a secret or a token
 */
import { loadConfig } from '../../config.js';
import { publicJwks } from '../../fhir/auth.js';
import { createConfiguredFhirGateway } from '../../fhir/gateway.js';
import { fail, type Program } from '../common.js';

export function register(program: Program): void {
  const cmd = program
    .command('fhir-auth')
    .description('FHIR server credentials: print the public key set, check the settings');
  cmd
    .command('jwks')
    .description(
      'print the public JWKS of FHIR_PRIVATE_KEY_FILE (FHIR_KEY_ALG, FHIR_KEY_ID) to register or publish',
    )
    .action(async () => {
      try {
        const config = loadConfig();
        process.stdout.write(`${JSON.stringify(await publicJwks(config.fhirAuth), null, 2)}\n`);
      } catch (err) {
        fail(err);
      }
    });
  cmd
    .command('check')
    .description('obtain a token (FHIR_AUTH) and read FHIR_URL/metadata with it')
    .action(async () => {
      try {
        const config = loadConfig();
        const fhir = createConfiguredFhirGateway(config);
        await fhir.checkAuth();
        await fhir.capabilities();
        process.stdout.write(
          `ok: FHIR_AUTH=${config.fhirAuth.mode}, ${new URL(config.fhir.url).origin} answered its CapabilityStatement\n`,
        );
      } catch (err) {
        fail(err);
      }
    });
}
