/**
 * Device administration, one implementation for the CLI and the admin API (and
 * so for the operator console and an ADT/PCIM feed): register, re-key, remove,
 * associate with patients over time, link to gateways, read the history.
 *
 * Every operation records who did it, from where and when, in the device's
 * append-only history (associations.ts), then has its effects carried out:
 *  - open MQTT sessions of a re-keyed, unassigned or removed device end at once
 *    (revocation.ts → every broker);
 *  - FHIR (Device.patient, DeviceUseStatement per period) and ClickHouse
 *    (device_associations) follow the history through durable queue jobs, so a
 *    FHIR server or ClickHouse that is down catches up (the `sync` port).
 * A reading is never attributed here: the normalize worker reads the history.
 */
import { isPipelineError, PipelineError } from '../errors.js';
import {
  checkChange,
  currentGateways,
  currentPatient,
  patientPeriods,
  type AssociationChange,
  type AssociationPeriod,
  type AssociationRecord,
  type AssociationSource,
} from './associations.js';
import type { AssociationStore } from './association-store.js';
import {
  assertDeviceId,
  parsePatientRef,
  type DeviceKind,
  type DeviceRecord,
  type DeviceRegistry,
} from './registry.js';
import type { Revocation } from './revocation.js';

/** Who made a change, and through what. */
export interface Actor {
  readonly actor: string;
  readonly source: AssociationSource;
}

export interface DeviceServicePorts {
  readonly registry: DeviceRegistry;
  readonly associations: AssociationStore;
  /** Ends the device's open MQTT sessions on every broker. */
  readonly revoke: (revocation: Revocation) => Promise<void>;
  /** Has FHIR and ClickHouse follow the device's history (durable jobs). */
  readonly sync: (deviceId: string, history: readonly AssociationRecord[]) => Promise<void>;
  /** Whether the FHIR server has this Patient (undefined: it cannot be asked). */
  readonly patientExists: (patientId: string) => Promise<boolean>;
  /**
   * FHIR_CREATE_PATIENTS: the pipeline may create any Patient an association
   * names; off, an association must name an existing Patient or say it is new.
   */
  readonly createPatients: boolean;
  /**
   * Associations decide attribution only in IDENTITY_RESOLUTION=Create; in the
   * Lookup modes the FHIR Device does (MedTech's semantics), so assigning here
   * would mislead.
   */
  readonly identityMode: 'Create' | 'Lookup' | 'LookupWithEncounter';
  readonly now?: () => number;
}

export interface AssignOptions extends Actor {
  /** When the association takes effect (epoch ms); default now. */
  readonly at?: number;
  /** The Patient does not exist on the FHIR server yet: the pipeline may create it. */
  readonly newPatient?: boolean;
  /** It replaces what was recorded for that time (see checkChange). */
  readonly correction?: boolean;
  readonly note?: string;
}

export type UnassignOptions = Omit<AssignOptions, 'newPatient'>;

export interface DeviceHistory {
  /** What the operator should know about the change just made (e.g. a Patient that could not be checked). */
  readonly warnings?: readonly string[];
  readonly device: DeviceRecord;
  readonly records: readonly AssociationRecord[];
  readonly periods: readonly AssociationPeriod[];
  readonly currentPatient: string | undefined;
  readonly gateways: readonly string[];
}

/** A device's record as listed: the credential record and who it is with now. */
export interface DeviceSummary extends DeviceRecord {
  readonly currentPatient: string | undefined;
}

function actorText(actor: string): string {
  const a = actor.trim();
  if (a === '' || a.length > 128) {
    throw new PipelineError('InvalidArgument', 'the actor must be 1–128 characters');
  }
  return a;
}

export class DeviceService {
  readonly #p: DeviceServicePorts;
  readonly #now: () => number;

  constructor(ports: DeviceServicePorts) {
    this.#p = ports;
    this.#now = ports.now ?? Date.now;
  }

  async #known(deviceId: string): Promise<DeviceRecord> {
    const device = await this.#p.registry.get(assertDeviceId(deviceId));
    if (!device)
      throw new PipelineError('DeviceNotFound', `device "${deviceId}" is not registered`);
    return device;
  }

  async #record(
    deviceId: string,
    change: AssociationChange,
    who: Actor & { at?: number; correction?: boolean; note?: string },
  ): Promise<readonly AssociationRecord[]> {
    const recordedAt = this.#now();
    const draft = {
      ...change,
      at: who.at ?? recordedAt,
      recordedAt,
      source: who.source,
      actor: actorText(who.actor),
      ...(who.correction ? { correction: true } : {}),
      ...(who.note ? { note: who.note.slice(0, 500) } : {}),
    };
    const { history } = await this.#p.associations.append(deviceId, draft, (h) =>
      checkChange(h, draft, { now: recordedAt }),
    );
    return history;
  }

  /**
   * Registers a device and returns its secret (shown once, stored hashed).
   * Refuses an id that is registered (DeviceExists) and changes nothing then.
   * With `patient`, associates it from `at` (default now).
   */
  async add(
    deviceId: string,
    options: Actor & { kind?: DeviceKind; secret?: string; patient?: string } & Omit<
        AssignOptions,
        keyof Actor
      >,
  ): Promise<{ secret: string; device: DeviceRecord; history: DeviceHistory }> {
    // Check the association first: a refused patient must not leave a half-made device.
    if (options.patient !== undefined) await this.#checkPatient(options.patient, options);
    const { secret, record } = await this.#p.registry.create(deviceId, {
      ...(options.kind ? { kind: options.kind } : {}),
      ...(options.secret ? { secret: options.secret } : {}),
    });
    await this.#record(deviceId, { kind: 'registered' }, options);
    if (options.patient !== undefined) await this.assign(deviceId, options.patient, options);
    return { secret, device: record, history: await this.history(deviceId) };
  }

  /** The Patient's id, and a warning when the FHIR server could not be asked. */
  async #checkPatient(
    patientRef: string,
    options: AssignOptions,
  ): Promise<{ patientId: string; warning?: string }> {
    if (this.#p.identityMode !== 'Create') {
      throw new PipelineError(
        'InvalidArgument',
        `IDENTITY_RESOLUTION=${this.#p.identityMode}: the FHIR Device names the patient (Device.patient); ` +
          'change it on the FHIR server, not here (docs/associations.md)',
      );
    }
    const patientId = parsePatientRef(patientRef);
    if (options.newPatient || this.#p.createPatients) return { patientId };
    let exists: boolean;
    try {
      exists = await this.#p.patientExists(patientId);
    } catch (err) {
      if (!isPipelineError(err) || !err.retryable) throw err;
      // The association is a fact at the bedside: record it even while the FHIR
      // server is down. Nothing is guessed: if the Patient does not exist, the
      // writer holds its readings as PatientNotFound instead of creating it.
      return {
        patientId,
        warning:
          `the FHIR server could not be asked whether Patient/${patientId} exists (${err.code}); ` +
          'the association is recorded, and its readings are held as PatientNotFound if it does not',
      };
    }
    if (!exists) {
      throw new PipelineError(
        'PatientNotFound',
        `Patient/${patientId} does not exist on the FHIR server: check the id, or, if the patient ` +
          'is new, say so (--new-patient / "newPatient": true) and the pipeline will create it',
      );
    }
    return { patientId };
  }

  /** Associates the device with a patient from `at` (default now) on. */
  async assign(
    deviceId: string,
    patientRef: string,
    options: AssignOptions,
  ): Promise<DeviceHistory> {
    const device = await this.#known(deviceId);
    if (device.kind === 'gateway') {
      throw new PipelineError(
        'InvalidArgument',
        `"${deviceId}" is a gateway: it relays readings of its linked devices and has no patient; ` +
          'associate those devices instead',
      );
    }
    const { patientId, warning } = await this.#checkPatient(patientRef, options);
    const history = await this.#record(
      deviceId,
      { kind: 'assign', patientId, ...(options.newPatient ? { newPatient: true } : {}) },
      options,
    );
    await this.#p.sync(deviceId, history);
    return { ...this.#view(device, history), ...(warning ? { warnings: [warning] } : {}) };
  }

  /** Ends the device's association from `at` (default now); its sessions end. */
  async unassign(deviceId: string, options: UnassignOptions): Promise<DeviceHistory> {
    const device = await this.#known(deviceId);
    const history = await this.#record(deviceId, { kind: 'unassign' }, options);
    await this.#p.sync(deviceId, history);
    await this.#p.revoke({ deviceId, reason: 'unassigned', at: this.#now() });
    return this.#view(device, history);
  }

  /** A new secret; associations stay, sessions made with the old one end. */
  async rotateSecret(
    deviceId: string,
    who: Actor,
  ): Promise<{ secret: string; device: DeviceRecord }> {
    await this.#known(deviceId);
    const result = await this.#p.registry.rotateSecret(deviceId);
    await this.#record(deviceId, { kind: 'secret-rotated' }, who);
    await this.#p.revoke({ deviceId, reason: 'rotated', at: this.#now() });
    return { secret: result.secret, device: result.record };
  }

  /**
   * Removes the device's credentials and ends its association now; the history
   * stays, so readings it took before still belong to the patients of their time.
   */
  async remove(deviceId: string, who: Actor): Promise<boolean> {
    const device = await this.#p.registry.get(assertDeviceId(deviceId));
    if (device?.status !== 'active') return false;
    await this.#p.registry.remove(deviceId);
    const before = await this.#p.associations.history(deviceId);
    if (currentPatient(before, this.#now()) !== undefined) {
      const history = await this.#record(deviceId, { kind: 'unassign' }, who);
      await this.#p.sync(deviceId, history);
    }
    await this.#record(deviceId, { kind: 'removed' }, who);
    await this.#p.revoke({ deviceId, reason: 'removed', at: this.#now() });
    return true;
  }

  /** Lets `gatewayId` relay readings of `deviceId` from `at` (default now) on. */
  async link(gatewayId: string, deviceId: string, who: Actor & { at?: number }): Promise<void> {
    if (gatewayId === deviceId) {
      throw new PipelineError('InvalidArgument', 'a device cannot be its own gateway');
    }
    const gateway = await this.#known(gatewayId);
    await this.#known(deviceId);
    if (gateway.kind !== 'gateway') {
      const own = currentPatient(await this.#p.associations.history(gatewayId), this.#now());
      if (own !== undefined) {
        throw new PipelineError(
          'InvalidArgument',
          `"${gatewayId}" is associated with a patient: unassign it before making it a gateway ` +
            '(a gateway has no patient of its own)',
        );
      }
      await this.#p.registry.markGateway(gatewayId);
    }
    await this.#record(deviceId, { kind: 'link', gatewayId }, who);
  }

  async unlink(
    gatewayId: string,
    deviceId: string,
    who: Actor & { at?: number },
  ): Promise<boolean> {
    const history = await this.#p.associations.history(assertDeviceId(deviceId));
    if (!currentGateways(history, this.#now()).includes(gatewayId)) return false;
    await this.#record(deviceId, { kind: 'unlink', gatewayId }, who);
    return true;
  }

  /** Devices the gateway relays for now. */
  async children(gatewayId: string): Promise<string[]> {
    const devices = await this.#p.registry.list();
    const histories = await this.#p.associations.histories(devices.map((d) => d.deviceId));
    const now = this.#now();
    return devices
      .filter((d) => currentGateways(histories.get(d.deviceId) ?? [], now).includes(gatewayId))
      .map((d) => d.deviceId);
  }

  async history(deviceId: string): Promise<DeviceHistory> {
    const device = await this.#known(deviceId);
    return this.#view(device, await this.#p.associations.history(deviceId));
  }

  #view(device: DeviceRecord, records: readonly AssociationRecord[]): DeviceHistory {
    const now = this.#now();
    return {
      device,
      records,
      periods: patientPeriods(records),
      currentPatient: currentPatient(records, now),
      gateways: currentGateways(records, now),
    };
  }

  async list(): Promise<DeviceSummary[]> {
    const devices = await this.#p.registry.list();
    const histories = await this.#p.associations.histories(devices.map((d) => d.deviceId));
    const now = this.#now();
    return devices.map((d) => ({
      ...d,
      currentPatient: currentPatient(histories.get(d.deviceId) ?? [], now),
    }));
  }

  /**
   * Records the one-patient bindings of a registry written before associations
   * as associations from the device's registration on (source "migration").
   * Idempotent: a device whose history has records is left as it is.
   */
  async migrateLegacyBindings(): Promise<number> {
    let migrated = 0;
    for (const b of await this.#p.registry.legacyBindings()) {
      const history = await this.#p.associations.history(b.deviceId);
      if (history.length === 0) {
        const at = Date.parse(b.createdAt);
        const who = { actor: 'upgrade', source: 'migration' as const, at };
        await this.#record(b.deviceId, { kind: 'registered' }, who);
        // The old pipeline created Patients as needed: keep that for these.
        const h = await this.#record(
          b.deviceId,
          { kind: 'assign', patientId: b.patientId, newPatient: true },
          who,
        );
        await this.#p.sync(b.deviceId, h);
        migrated++;
      }
      await this.#p.registry.dropLegacyBinding(b.deviceId);
    }
    return migrated;
  }
}
