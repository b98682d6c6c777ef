/**
 * Reads the operators' templates from the mappings folder (device/ and fhir/,
 * .json or .yaml) and compiles them. The only file I/O of the mapping engine;
 * every problem (and note) comes back with file, line and column — for an
 * expression error, the line and column of the offending character inside the
 * expression, whichever way the string is written (JSON escapes, YAML blocks).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { LineCounter, parseDocument, isNode, isScalar, Scalar, type Document } from 'yaml';
import {
  compileMappings,
  type CompileOptions,
  type CompileResult,
  type MappingProblem,
  type TemplateDocument,
} from './compile.js';
import type { Fixture, FixtureSettings } from './fixtures.js';

export interface LocatedProblem extends MappingProblem {
  readonly line?: number;
  readonly column?: number;
}

export type LoadResult = CompileResult<LocatedProblem>;

/** A template file as read from disk (or from Redis, for hot reload). */
export interface SourceFile {
  readonly file: string;
  readonly kind: 'device' | 'fhir';
  readonly text: string;
}

const EXTENSIONS = new Set(['.json', '.yaml', '.yml']);

async function listTemplates(dir: string): Promise<string[]> {
  try {
    const names = await readdir(dir);
    return names.filter((n) => EXTENSIONS.has(path.extname(n))).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Every template file under dir/device and dir/fhir, sorted by name. */
export async function readMappingDocuments(dir: string): Promise<SourceFile[]> {
  const out: SourceFile[] = [];
  for (const kind of ['device', 'fhir'] as const) {
    for (const name of await listTemplates(path.join(dir, kind))) {
      out.push({
        file: `${kind}/${name}`,
        kind,
        text: await readFile(path.join(dir, kind, name), 'utf8'),
      });
    }
  }
  return out;
}

interface Parsed {
  readonly doc: Document;
  readonly lines: LineCounter;
  readonly text: string;
}

/** Offset in the source of the `pos`-th character of a JSON double-quoted string starting at `at`. */
function doubleQuoted(text: string, at: number, pos: number): number {
  let i = at + 1;
  for (let n = 0; n < pos && i < text.length; n++) {
    if (text[i] === '\\') i += text[i + 1] === 'u' ? 6 : 2;
    else i += 1;
  }
  return i;
}

function singleQuoted(text: string, at: number, pos: number): number {
  let i = at + 1;
  for (let n = 0; n < pos && i < text.length; n++) i += text[i] === "'" ? 2 : 1;
  return i;
}

/** Block scalars (`|`, `>`): value line k, column c → source line after the header, plus the indent. */
function block(text: string, at: number, value: string, pos: number): number {
  const before = value.slice(0, pos);
  const k = before.split('\n').length - 1;
  const c = pos - (before.lastIndexOf('\n') + 1);
  let i = text.indexOf('\n', at) + 1;
  for (let line = 0; line < k && i > 0; line++) i = text.indexOf('\n', i) + 1;
  const indent = /^[ ]*/.exec(text.slice(i))?.[0].length ?? 0;
  return i + indent + c;
}

function offsetInside(p: Parsed, node: Scalar, pos: number): number {
  const at = node.range![0];
  const value = String(node.value);
  const clamped = Math.max(0, Math.min(pos, value.length));
  switch (node.type) {
    case Scalar.QUOTE_DOUBLE:
      return doubleQuoted(p.text, at, clamped);
    case Scalar.QUOTE_SINGLE:
      return singleQuoted(p.text, at, clamped);
    case Scalar.BLOCK_LITERAL:
    case Scalar.BLOCK_FOLDED:
      return block(p.text, at, value, clamped);
    default:
      return at + clamped;
  }
}

function locate(parsed: Parsed | undefined, p: MappingProblem): LocatedProblem {
  if (!parsed) return p;
  // Walk to the deepest node of the path that exists; point at it.
  for (let n = p.path.length; n >= 0; n--) {
    const node: unknown =
      n === 0 ? parsed.doc.contents : parsed.doc.getIn(p.path.slice(0, n), true);
    if (isNode(node) && node.range) {
      const offset =
        p.expressionPosition !== undefined && n === p.path.length && isScalar(node)
          ? offsetInside(parsed, node, p.expressionPosition)
          : node.range[0];
      const pos = parsed.lines.linePos(offset);
      return { ...p, line: pos.line, column: pos.col };
    }
  }
  return p;
}

/** Adds line and column to problems found in `source` (by their paths). */
export function locateIn(
  source: SourceFile,
  problems: readonly MappingProblem[],
): LocatedProblem[] {
  const lines = new LineCounter();
  const doc = parseDocument(source.text, { lineCounter: lines, prettyErrors: false });
  const parsed = doc.errors.length === 0 ? { doc, lines, text: source.text } : undefined;
  return problems.map((p) => locate(parsed, p));
}

/** Parses and compiles template files: the pure half of loadMappings. */
export function compileSources(
  sources: readonly SourceFile[],
  from = 'mappings',
  options: CompileOptions = {},
): LoadResult {
  const documents: TemplateDocument[] = [];
  const parsedByFile = new Map<string, Parsed>();
  const problems: LocatedProblem[] = [];
  for (const { file, kind, text } of sources) {
    const lines = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        const pos = lines.linePos(e.pos[0]);
        problems.push({
          file,
          path: [],
          message: e.message.split('\n')[0] ?? e.message,
          line: pos.line,
          column: pos.col,
        });
      }
      continue;
    }
    parsedByFile.set(file, { doc, lines, text });
    documents.push({ file, kind, text, data: doc.toJS() as unknown });
  }
  if (documents.length === 0 && problems.length === 0) {
    problems.push({
      file: from,
      path: [],
      message: 'no templates found (expected device/*.json and fhir/*.json)',
    });
  }
  const result = compileMappings(documents, options);
  const notes = result.notes.map((p) => locate(parsedByFile.get(p.file), p));
  if (!result.ok) problems.push(...result.problems.map((p) => locate(parsedByFile.get(p.file), p)));
  if (problems.length > 0 || !result.ok) return { ok: false, problems, notes };
  return { ok: true, mappings: result.mappings, notes };
}

export async function loadMappings(dir: string, options: CompileOptions = {}): Promise<LoadResult> {
  return compileSources(await readMappingDocuments(dir), dir, options);
}

export function formatProblem(p: LocatedProblem): string {
  const where = p.line !== undefined ? `${p.file}:${p.line}:${p.column ?? 1}` : p.file;
  const at = p.path.length > 0 ? ` (at ${p.path.join('.')})` : '';
  const inside =
    p.expressionPosition !== undefined ? ` [expression character ${p.expressionPosition + 1}]` : '';
  return `${where}: ${p.message}${inside}${at}`;
}

async function readOptionalJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as unknown;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`${file}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The fixtures under dir/fixtures: one folder each, holding message.json,
 * fixture.json (device, patient, receipt time) and expected-measurements.json /
 * expected-observations.json, or expected-error.json ({"code": …}).
 */
export async function readFixtures(dir: string): Promise<Fixture[]> {
  const root = path.join(dir, 'fixtures');
  let names: string[];
  try {
    names = (await readdir(root, { withFileTypes: true }))
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: Fixture[] = [];
  for (const name of names) {
    const at = (f: string) => path.join(root, name, f);
    const settings = (await readOptionalJson(at('fixture.json'))) as FixtureSettings | undefined;
    if (!settings) throw new Error(`${at('fixture.json')}: missing (device, patient, receivedAt)`);
    const expectedError = (await readOptionalJson(at('expected-error.json'))) as
      { code?: string } | undefined;
    const expectedMeasurements = await readOptionalJson(at('expected-measurements.json'));
    const expectedObservations = await readOptionalJson(at('expected-observations.json'));
    out.push({
      name,
      settings,
      message: await readFile(at('message.json'), 'utf8'),
      ...(expectedMeasurements !== undefined ? { expectedMeasurements } : {}),
      ...(expectedObservations !== undefined ? { expectedObservations } : {}),
      ...(expectedError?.code ? { expectedError: expectedError.code } : {}),
    });
  }
  return out;
}

/** A folder as a lifecycle candidate: its template files and its fixtures. */
export async function readCandidate(
  dir: string,
): Promise<{ files: SourceFile[]; fixtures: Fixture[] }> {
  return { files: await readMappingDocuments(dir), fixtures: await readFixtures(dir) };
}
