/**
 * Reads the operators' templates from the mappings folder (device/ and fhir/,
 * .json or .yaml) and compiles them. The only I/O of the mapping engine; every
 * problem comes back with file, line and column.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import {
  compileMappings,
  type MappingProblem,
  type MappingSet,
  type TemplateDocument,
} from './compile.js';

export interface LocatedProblem extends MappingProblem {
  readonly line?: number;
  readonly column?: number;
}

export type LoadResult =
  | { readonly ok: true; readonly mappings: MappingSet }
  | { readonly ok: false; readonly problems: readonly LocatedProblem[] };

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

interface Parsed {
  readonly doc: Document;
  readonly lines: LineCounter;
}

function locate(parsed: Parsed | undefined, p: MappingProblem): LocatedProblem {
  if (!parsed) return p;
  // Walk to the deepest node of the path that exists; point at it.
  for (let n = p.path.length; n >= 0; n--) {
    const node: unknown =
      n === 0 ? parsed.doc.contents : parsed.doc.getIn(p.path.slice(0, n), true);
    if (isNode(node) && node.range) {
      // For an expression error, point inside the string (+1 for the opening quote).
      const offset =
        node.range[0] +
        (p.expressionPosition !== undefined && n === p.path.length ? p.expressionPosition : 0);
      const pos = parsed.lines.linePos(offset);
      return { ...p, line: pos.line, column: pos.col };
    }
  }
  return p;
}

export async function loadMappings(dir: string): Promise<LoadResult> {
  const documents: TemplateDocument[] = [];
  const parsedByFile = new Map<string, Parsed>();
  const problems: LocatedProblem[] = [];
  for (const kind of ['device', 'fhir'] as const) {
    for (const name of await listTemplates(path.join(dir, kind))) {
      const file = `${kind}/${name}`;
      const text = await readFile(path.join(dir, kind, name), 'utf8');
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
      parsedByFile.set(file, { doc, lines });
      documents.push({ file, kind, text, data: doc.toJS() as unknown });
    }
  }
  if (documents.length === 0 && problems.length === 0) {
    problems.push({
      file: dir,
      path: [],
      message: 'no templates found (expected device/*.json and fhir/*.json)',
    });
  }
  const result = compileMappings(documents);
  if (!result.ok) problems.push(...result.problems.map((p) => locate(parsedByFile.get(p.file), p)));
  if (problems.length > 0) return { ok: false, problems };
  if (!result.ok) throw new Error('unreachable');
  return result;
}

export function formatProblem(p: LocatedProblem): string {
  const where = p.line !== undefined ? `${p.file}:${p.line}:${p.column ?? 1}` : p.file;
  const at = p.path.length > 0 ? ` (at ${p.path.join('.')})` : '';
  return `${where}: ${p.message}${at}`;
}
