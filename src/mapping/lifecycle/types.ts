/**
 * The template lifecycle's data: candidates, stored versions, gate reports and
 * audit entries. Plain JSON shapes (they travel through Redis, the admin API
 * and `--json` output unchanged).
 */
import type { Fixture } from '../fixtures.js';
import type { SourceFile } from '../load.js';

/** A template set that may become active: its files, and the fixtures it must pass. */
export interface Candidate {
  readonly files: readonly SourceFile[];
  readonly fixtures: readonly Fixture[];
}

/** Who asked, and why. */
export interface Actor {
  /** A person or a process, e.g. "alice" or "watch@worker-3". */
  readonly actor: string;
  readonly note?: string;
  /** How the request came: cli, admin-api, watch (a worker's folder), worker (first start). */
  readonly via: 'cli' | 'admin-api' | 'watch' | 'worker';
}

/** A proposed version as stored (the files and fixtures are stored beside it). */
export interface VersionRecord {
  readonly version: string;
  readonly author: string;
  readonly note: string;
  readonly via: Actor['via'];
  /** ISO 8601. */
  readonly proposedAt: string;
  readonly files: readonly string[];
  readonly deviceTemplates: number;
  readonly fhirTemplates: number;
  readonly fixtures: number;
}

/**
 * active: running now; rollback-target: what `rollback` restores; previous:
 * active before, further down the rollback history; retired: active once, no
 * longer in the history; proposed: never active.
 */
export type VersionState = 'active' | 'rollback-target' | 'previous' | 'retired' | 'proposed';

export interface VersionInfo extends VersionRecord {
  readonly state: VersionState;
  /** When it last became active (ISO 8601). */
  readonly activatedAt?: string;
}

export interface FixtureResult {
  readonly name: string;
  readonly ok: boolean;
  readonly differences: readonly string[];
}

/** A version's outcome for one shadow-run message. */
export type ShadowFate =
  | { readonly kind: 'matched'; readonly observations: number }
  | { readonly kind: 'unmatched' }
  | { readonly kind: 'dead-lettered'; readonly code: string; readonly reason: string };

export interface FateCounts {
  readonly matched: number;
  readonly unmatched: number;
  readonly deadLettered: number;
}

/** One message whose outcome or Observations differ between the two versions. */
export interface ShadowExample {
  readonly messageId: string;
  readonly deviceId: string;
  readonly receivedAt: string;
  readonly source: 'device_messages' | 'dead-letter';
  readonly active: ShadowFate;
  readonly candidate: ShadowFate;
  /** Readable lines: `observation <id> <path>: <active> → <candidate>`, `- …` removed, `+ …` added. */
  readonly diff: readonly string[];
}

/** The shadow run of one affected device template file. */
export interface TemplateShadow {
  /** The device template file, e.g. "device/vitals.json". */
  readonly file: string;
  /** Why it is affected: "changed", "added", "removed", or "FHIR template <type> changed". */
  readonly reason: string;
  readonly messages: number;
  readonly fromDeviceMessages: number;
  readonly fromDeadLetters: number;
  readonly active: FateCounts;
  readonly candidate: FateCounts;
  /** Mapped by the active version, refused (dead-lettered or unmatched) by the candidate. */
  readonly newlyRefused: number;
  /** Refused by the active version, mapped by the candidate. */
  readonly newlyMapped: number;
  /** Mapped by both, with different Observations. */
  readonly changedMessages: number;
  readonly changedObservations: number;
  /** Error codes of the candidate's refusals, with counts. */
  readonly candidateCodes: Readonly<Record<string, number>>;
  /** The first few differing messages, with their diff. */
  readonly examples: readonly ShadowExample[];
}

export type ShadowReport =
  | {
      readonly status: 'ran';
      readonly active: string;
      readonly candidate: string;
      /** Messages read from ClickHouse and from the dead-letter queue. */
      readonly scanned: { readonly deviceMessages: number; readonly deadLetters: number };
      readonly templates: readonly TemplateShadow[];
    }
  | {
      readonly status: 'skipped';
      readonly active?: string;
      readonly candidate: string;
      readonly reason: string;
    };

/** What the operator accepts beyond the thresholds. */
export interface Acceptance {
  /** Changed Observations (the edit is meant to change them). */
  readonly changes?: boolean;
  /** Activate without the shadow run (ClickHouse unavailable); recorded in the audit. */
  readonly skipShadowRun?: boolean;
}

export interface GateReport {
  readonly candidate: string | undefined;
  readonly active: string | undefined;
  readonly passed: boolean;
  readonly validate: {
    readonly ok: boolean;
    readonly problems: readonly string[];
    readonly notes: readonly string[];
  };
  readonly fixtures: {
    readonly passed: number;
    readonly failed: number;
    readonly results: readonly FixtureResult[];
  };
  readonly shadow: ShadowReport | undefined;
  readonly accepted: Acceptance;
  /** One line per reason the candidate is refused (empty when it passed). */
  readonly refusals: readonly string[];
}

/** The compact gate results kept in the audit (no message contents). */
export interface GateSummary {
  readonly passed: boolean;
  readonly validate: 'ok' | 'failed';
  readonly fixtures: { readonly passed: number; readonly failed: readonly string[] };
  readonly shadow:
    | 'skipped'
    | {
        readonly messages: number;
        readonly newlyRefused: number;
        readonly newlyMapped: number;
        readonly changedObservations: number;
      };
  readonly accepted: Acceptance;
  readonly refusals: readonly string[];
}

export type AuditAction = 'bootstrap' | 'propose' | 'activate' | 'refused' | 'rollback' | 'prune';

export interface AuditEntry {
  /** ISO 8601. */
  readonly at: string;
  readonly action: AuditAction;
  readonly actor: string;
  readonly via: Actor['via'];
  readonly note?: string;
  /** The active version before. */
  readonly from?: string;
  /** The version proposed, activated, refused or restored. */
  readonly to?: string;
  readonly gates?: GateSummary;
  /** prune: the versions removed. */
  readonly removed?: readonly string[];
}

export type ActivationResult =
  | {
      readonly outcome: 'activated' | 'rolled-back';
      readonly from: string | undefined;
      readonly to: string;
      readonly report: GateReport | undefined;
    }
  | { readonly outcome: 'unchanged'; readonly to: string }
  | {
      readonly outcome: 'refused';
      readonly from: string | undefined;
      readonly to: string;
      readonly report: GateReport;
    };
