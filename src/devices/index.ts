/**
 * The devices module: credentials (registry.ts), association history
 * (associations.ts, association-store.ts), administration (service.ts) and the
 * revocation of open sessions (revocation.ts). `createDeviceService` wires the
 * service to Redis, the queues and the FHIR server, the same way for the
 * pipeline's admin API and for the CLI.
 */
import { randomUUID } from 'node:crypto';
import type { RedisConnection } from '../redis.js';
import { deviceAssociationRows } from '../clickhouse/associations.js';
import type { Config } from '../config.js';
import type { FhirStore } from '../fhir/store.js';
import type { Queues } from '../queue-runtime.js';
import type { AssociationRecord } from './associations.js';
import { AssociationStore } from './association-store.js';
import { DeviceRegistry } from './registry.js';
import { publishRevocation } from './revocation.js';
import { DeviceService } from './service.js';

export { AssociationStore, type AssociationReader } from './association-store.js';
export * from './associations.js';
export { DeviceRegistry, parsePatientRef, assertDeviceId, type DeviceRecord } from './registry.js';
export { DeviceService, type Actor, type DeviceHistory, type DeviceSummary } from './service.js';
export {
  publishRevocation,
  revocationChannel,
  parseRevocation,
  type Revocation,
} from './revocation.js';

/**
 * FHIR and ClickHouse follow a device's history through durable jobs: the FHIR
 * writer re-reads the history when it runs (fhir/associations.ts); the mirror
 * gets the rows computed now, versioned by the history's length (so the latest
 * wins whatever order jobs run in).
 */
export function queueAssociationSync(queues: Pick<Queues, 'fhir' | 'analytics'>) {
  return async (deviceId: string, history: readonly AssociationRecord[]): Promise<void> => {
    const traceId = randomUUID();
    await queues.fhir.add('associations', {
      traceId,
      patients: [],
      devices: [],
      observations: [],
      associations: [deviceId],
    });
    await queues.analytics.add('associations', {
      traceId,
      committedAt: Date.now(),
      observations: [],
      associations: deviceAssociationRows(deviceId, history),
    });
  };
}

export function createDeviceService(
  config: Config,
  redis: RedisConnection,
  queues: Pick<Queues, 'fhir' | 'analytics'>,
  fhir: Pick<FhirStore, 'patientExists'>,
): DeviceService {
  const prefix = config.redis.prefix;
  return new DeviceService({
    registry: new DeviceRegistry(redis, prefix),
    associations: new AssociationStore(redis, prefix),
    revoke: (r) => publishRevocation(redis, prefix, r),
    sync: queueAssociationSync(queues),
    patientExists: (id) => fhir.patientExists(id),
    createPatients: config.fhir.createPatients,
    identityMode: config.fhir.identityResolution,
  });
}
