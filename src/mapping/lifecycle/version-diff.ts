/**
 * What differs between two template versions: which templates changed (by type
 * and file), and a unified diff of each changed file. PURE.
 */
import type { MappingSet } from '../compile.js';
import { compileSources, type SourceFile } from '../load.js';

export interface TemplateChange {
  readonly kind: 'device' | 'fhir';
  readonly typeName: string;
  readonly file: string;
  readonly change: 'added' | 'removed' | 'changed';
}

export interface FileChange {
  readonly file: string;
  readonly change: 'added' | 'removed' | 'changed';
  /** Unified diff lines (`@@ … @@`, ` `, `-`, `+`). */
  readonly diff: readonly string[];
}

export interface VersionDiff {
  readonly a: string;
  readonly b: string;
  readonly templates: readonly TemplateChange[];
  readonly files: readonly FileChange[];
}

const CONTEXT = 3;
/** Beyond this many line pairs a file is reported as replaced, not diffed. */
const MAX_CELLS = 16_000_000;

type Op = readonly [' ' | '-' | '+', string];

/** Longest common subsequence, then the edit script. */
function editScript(a: readonly string[], b: readonly string[]): Op[] {
  const n = a.length;
  const m = b.length;
  if (n * m > MAX_CELLS) return [...a.map((l) => ['-', l] as Op), ...b.map((l) => ['+', l] as Op)];
  const w = m + 1;
  const lcs = new Uint32Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i * w + j] =
        a[i] === b[j]
          ? lcs[(i + 1) * w + j + 1]! + 1
          : Math.max(lcs[(i + 1) * w + j]!, lcs[i * w + j + 1]!);
    }
  }
  const ops: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      ops.push([' ', a[i]!]);
      i++;
      j++;
    } else if (lcs[(i + 1) * w + j]! >= lcs[i * w + j + 1]!) ops.push(['-', a[i++]!]);
    else ops.push(['+', b[j++]!]);
  }
  while (i < n) ops.push(['-', a[i++]!]);
  while (j < m) ops.push(['+', b[j++]!]);
  return ops;
}

/** Unified diff hunks with three lines of context. */
export function unifiedDiff(aText: string, bText: string): string[] {
  const split = (t: string) => (t === '' ? [] : t.replace(/\n$/, '').split('\n'));
  const ops = editScript(split(aText), split(bText));
  const out: string[] = [];
  const changed = ops.map((o) => o[0] !== ' ');
  let k = 0;
  while (k < ops.length) {
    if (!changed[k]) {
      k++;
      continue;
    }
    // A hunk: from CONTEXT lines before this change to CONTEXT lines after the last
    // change that is closer than 2 × CONTEXT to the previous one.
    const start = Math.max(0, k - CONTEXT);
    let end = k;
    while (end < ops.length) {
      let next = end + 1;
      while (next < ops.length && !changed[next]) next++;
      if (next < ops.length && next - end <= 2 * CONTEXT) end = next;
      else break;
    }
    const stop = Math.min(ops.length, end + CONTEXT + 1);
    let aLine = 1;
    let bLine = 1;
    for (let x = 0; x < start; x++) {
      if (ops[x]![0] !== '+') aLine++;
      if (ops[x]![0] !== '-') bLine++;
    }
    const hunk = ops.slice(start, stop);
    const aCount = hunk.filter((o) => o[0] !== '+').length;
    const bCount = hunk.filter((o) => o[0] !== '-').length;
    out.push(`@@ -${aLine},${aCount} +${bLine},${bCount} @@`);
    for (const [op, line] of hunk) out.push(`${op}${line}`);
    k = stop;
  }
  return out;
}

function templateKeys(
  m: MappingSet,
): Map<string, { kind: 'device' | 'fhir'; typeName: string; file: string; spec: string }> {
  const out = new Map<
    string,
    { kind: 'device' | 'fhir'; typeName: string; file: string; spec: string }
  >();
  for (const t of m.deviceTemplates) {
    let key = `device ${t.file} ${t.spec.typeName}`;
    for (let n = 2; out.has(key); n++) key = `device ${t.file} ${t.spec.typeName} #${n}`;
    out.set(key, {
      kind: 'device',
      typeName: t.spec.typeName,
      file: t.file,
      spec: JSON.stringify(t.spec),
    });
  }
  for (const [typeName, t] of m.fhirTemplates) {
    out.set(`fhir ${typeName}`, {
      kind: 'fhir',
      typeName,
      file: t.file,
      spec: JSON.stringify(t.spec),
    });
  }
  return out;
}

export function diffVersions(
  a: { readonly version: string; readonly files: readonly SourceFile[] },
  b: { readonly version: string; readonly files: readonly SourceFile[] },
): VersionDiff {
  const ma = new Map(a.files.map((f) => [f.file, f.text]));
  const mb = new Map(b.files.map((f) => [f.file, f.text]));
  const files: FileChange[] = [];
  for (const file of [...new Set([...ma.keys(), ...mb.keys()])].sort()) {
    const x = ma.get(file);
    const y = mb.get(file);
    if (x === y) continue;
    files.push({
      file,
      change: x === undefined ? 'added' : y === undefined ? 'removed' : 'changed',
      diff: unifiedDiff(x ?? '', y ?? ''),
    });
  }
  const templates: TemplateChange[] = [];
  const ca = compileSources(a.files, a.version);
  const cb = compileSources(b.files, b.version);
  if (ca.ok && cb.ok) {
    const ta = templateKeys(ca.mappings);
    const tb = templateKeys(cb.mappings);
    for (const key of new Set([...ta.keys(), ...tb.keys()])) {
      const x = ta.get(key);
      const y = tb.get(key);
      const t = (y ?? x)!;
      if (x && y && x.spec === y.spec) continue;
      templates.push({
        kind: t.kind,
        typeName: t.typeName,
        file: t.file,
        change: !x ? 'added' : !y ? 'removed' : 'changed',
      });
    }
  }
  return { a: a.version, b: b.version, templates, files };
}
