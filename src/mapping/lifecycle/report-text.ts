/**
 * The lifecycle's reports as an operator reads them in a terminal. PURE: data
 * in, lines out. This is operator output, not a log: a shadow-run diff may show
 * values of real messages.
 */
import type {
  ActivationResult,
  AuditEntry,
  FateCounts,
  GateReport,
  GateSummary,
  ShadowReport,
  VersionInfo,
} from './types.js';
import type { VersionDiff } from './version-diff.js';

const pad = (s: string | number, n: number) => String(s).padStart(n);

function counts(label: string, c: FateCounts): string {
  return `      ${label.padEnd(10)}${pad(c.matched, 9)}${pad(c.unmatched, 11)}${pad(c.deadLettered, 15)}`;
}

export function shadowLines(s: ShadowReport | undefined): string[] {
  if (!s) return [];
  if (s.status === 'skipped') return [`shadow run: skipped (${s.reason})`];
  const out = [
    `shadow run: active ${s.active} vs candidate ${s.candidate} over ${s.scanned.deviceMessages} recent device_messages and ${s.scanned.deadLetters} dead letter(s)`,
  ];
  if (s.templates.length === 0) out.push('  no device template is affected by the change');
  for (const t of s.templates) {
    out.push(
      `  ${t.file} (${t.reason}): ${t.messages} message(s) (${t.fromDeviceMessages} recent, ${t.fromDeadLetters} dead letter(s))`,
    );
    if (t.messages === 0) {
      out.push('      no recent traffic for this template');
      continue;
    }
    out.push(
      `      ${''.padEnd(10)}${pad('matched', 9)}${pad('unmatched', 11)}${pad('dead-lettered', 15)}`,
    );
    out.push(counts('active', t.active), counts('candidate', t.candidate));
    const refused = t.candidate.unmatched + t.candidate.deadLettered;
    if (t.newlyRefused > 0) {
      out.push(
        `      ${refused} of ${t.messages} recent messages would be dead-lettered (${t.newlyRefused} that the active version maps)`,
      );
    }
    if (t.newlyMapped > 0)
      out.push(`      ${t.newlyMapped} message(s) refused now would be mapped`);
    if (t.changedObservations > 0) {
      out.push(
        `      ${t.changedObservations} Observation(s) from ${t.changedMessages} message(s) would change`,
      );
    }
    for (const e of t.examples) {
      out.push(
        `      message ${e.messageId} (device ${e.deviceId}, received ${e.receivedAt}, ${e.source}):`,
      );
      for (const d of e.diff) out.push(`        ${d}`);
    }
  }
  return out;
}

export function gateLines(r: GateReport): string[] {
  const out: string[] = [];
  if (!r.validate.ok) {
    out.push(`validate: ${r.validate.problems.length} problem(s)`);
    for (const p of r.validate.problems) out.push(`  ${p}`);
  } else out.push('validate: ok');
  if (r.validate.ok) {
    out.push(`fixtures: ${r.fixtures.passed} passed, ${r.fixtures.failed} failed`);
    for (const f of r.fixtures.results.filter((x) => !x.ok)) {
      out.push(`  FAIL  ${f.name}`);
      for (const d of f.differences) out.push(`        ${d}`);
    }
  }
  out.push(...shadowLines(r.shadow));
  const accepted = [
    ...(r.accepted.changes ? ['changed Observations'] : []),
    ...(r.accepted.skipShadowRun ? ['no shadow run'] : []),
  ];
  if (accepted.length > 0) out.push(`accepted by the operator: ${accepted.join(', ')}`);
  if (r.refusals.length > 0) {
    out.push('refused because:');
    for (const x of r.refusals) out.push(`  - ${x}`);
  }
  return out;
}

export function activationLines(r: ActivationResult): string[] {
  if (r.outcome === 'unchanged') return [`${r.to} is already the active version; nothing changed`];
  if (r.outcome === 'rolled-back') return [`rolled back: ${r.to} is active again (was ${r.from})`];
  if (r.outcome === 'refused') {
    return [
      `REFUSED: ${r.to} was not activated; the active version stays ${r.from ?? '(none)'} and no worker changed`,
      ...gateLines(r.report),
    ];
  }
  return [
    ...(r.report ? gateLines(r.report) : []),
    `activated: ${r.to} is the active version (was ${r.from ?? '(none)'}); workers follow within seconds`,
  ];
}

function gatesShort(g: GateSummary | undefined): string {
  if (!g) return '';
  const shadow =
    g.shadow === 'skipped'
      ? 'shadow skipped'
      : `shadow ${g.shadow.messages} msg, ${g.shadow.newlyRefused} newly refused, ${g.shadow.changedObservations} changed`;
  const fixtures = `fixtures ${g.fixtures.passed} ok${g.fixtures.failed.length ? `, failed ${g.fixtures.failed.join(' ')}` : ''}`;
  const accepted = g.accepted.changes
    ? ', changes accepted'
    : g.accepted.skipShadowRun
      ? ', shadow run waived'
      : '';
  return ` [${g.passed ? 'passed' : 'refused'}: validate ${g.validate}, ${fixtures}, ${shadow}${accepted}]`;
}

export function auditLines(entries: readonly AuditEntry[]): string[] {
  return entries.map((e) => {
    const what =
      e.action === 'prune'
        ? `removed ${e.removed?.join(' ') ?? ''}`
        : e.action === 'propose'
          ? `${e.to}`
          : `${e.from ?? '(none)'} → ${e.to}`;
    return `${e.at}  ${e.action.padEnd(9)} ${what}  by ${e.actor} (${e.via})${e.note ? ` "${e.note}"` : ''}${gatesShort(e.gates)}`;
  });
}

export function versionLines(list: readonly VersionInfo[]): string[] {
  const out = list.map(
    (v) =>
      `${v.version}  ${v.state.padEnd(15)} ${v.proposedAt}  ${v.author}${v.activatedAt ? `  activated ${v.activatedAt}` : ''}${v.note ? `  "${v.note}"` : ''}`,
  );
  out.push(`${list.length} version(s)`);
  return out;
}

export function diffLines(d: VersionDiff): string[] {
  const out = [`${d.a} → ${d.b}`];
  if (d.files.length === 0) out.push('no difference');
  for (const t of d.templates)
    out.push(`${t.kind} template ${t.typeName} (${t.file}): ${t.change}`);
  for (const f of d.files) {
    out.push(`--- a/${f.file}`, `+++ b/${f.file}`);
    out.push(...f.diff);
  }
  return out;
}
