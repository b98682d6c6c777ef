/**
 * Turns parsed template documents into a MappingSet: shapes checked, every
 * JSONata expression compiled once, cross-checks done. Pure: documents in,
 * a MappingSet or the full list of problems out.
 */
import { createHash } from 'node:crypto';
import jsonata from 'jsonata';
import type { z } from 'zod';
import { deviceCollectionSchema, fhirCollectionSchema } from './schema.js';
import type { DeviceTemplateSpec, FhirTemplateSpec } from './types.js';

export type Expression = ReturnType<typeof jsonata>;

export interface TemplateDocument {
  /** Path relative to the mappings folder, e.g. "device/vitals.json". */
  readonly file: string;
  readonly kind: 'device' | 'fhir';
  /** Raw file text: hashed into the version. */
  readonly text: string;
  readonly data: unknown;
}

export interface MappingProblem {
  readonly file: string;
  /** Path inside the document, e.g. ["template", 0, "template", "values", 1]. */
  readonly path: readonly (string | number)[];
  readonly message: string;
  /** Offset inside the expression string, for JSONata syntax errors. */
  readonly expressionPosition?: number;
}

export interface CompiledValue {
  readonly valueName: string;
  readonly required: boolean;
  readonly expression: Expression;
}

export interface CompiledDeviceTemplate {
  readonly spec: DeviceTemplateSpec;
  readonly file: string;
  readonly match: Expression;
  readonly timestamp?: Expression;
  readonly deviceId?: Expression;
  readonly patientId?: Expression;
  readonly encounterId?: Expression;
  readonly correlationId?: Expression;
  readonly values: readonly CompiledValue[];
}

export interface MappingSet {
  /** Content hash of every template file: changes whenever any template does. */
  readonly version: string;
  readonly deviceTemplates: readonly CompiledDeviceTemplate[];
  readonly fhirTemplates: ReadonlyMap<string, FhirTemplateSpec>;
}

export type CompileResult =
  | { readonly ok: true; readonly mappings: MappingSet }
  | { readonly ok: false; readonly problems: readonly MappingProblem[] };

function zodProblems(file: string, error: z.ZodError): MappingProblem[] {
  return error.issues.map((issue) => ({
    file,
    path: issue.path.filter((p): p is string | number => typeof p !== 'symbol'),
    message: issue.message,
  }));
}

function compileExpression(
  source: string,
  file: string,
  path: readonly (string | number)[],
  problems: MappingProblem[],
): Expression | undefined {
  try {
    return jsonata(source);
  } catch (err) {
    const e = err as { message?: string; position?: number; token?: string };
    problems.push({
      file,
      path,
      message: `JSONata syntax error: ${e.message ?? String(err)}`,
      ...(typeof e.position === 'number' ? { expressionPosition: e.position } : {}),
    });
    return undefined;
  }
}

const OPTIONAL_EXPRESSIONS = [
  ['timestampExpression', 'timestamp'],
  ['deviceIdExpression', 'deviceId'],
  ['patientIdExpression', 'patientId'],
  ['encounterIdExpression', 'encounterId'],
  ['correlationIdExpression', 'correlationId'],
] as const;

function compileDeviceTemplate(
  spec: DeviceTemplateSpec,
  file: string,
  base: readonly (string | number)[],
  problems: MappingProblem[],
): CompiledDeviceTemplate | undefined {
  const before = problems.length;
  const match = compileExpression(
    spec.typeMatchExpression,
    file,
    [...base, 'typeMatchExpression'],
    problems,
  );
  const optional: Partial<Record<(typeof OPTIONAL_EXPRESSIONS)[number][1], Expression>> = {};
  for (const [key, name] of OPTIONAL_EXPRESSIONS) {
    const source = spec[key];
    if (source === undefined) continue;
    const expr = compileExpression(source, file, [...base, key], problems);
    if (expr) optional[name] = expr;
  }
  const values: CompiledValue[] = [];
  spec.values.forEach((v, i) => {
    const expr = compileExpression(
      v.valueExpression,
      file,
      [...base, 'values', i, 'valueExpression'],
      problems,
    );
    if (expr)
      values.push({ valueName: v.valueName, required: v.required ?? false, expression: expr });
  });
  if (problems.length > before || !match) return undefined;
  return { spec, file, match, ...optional, values };
}

function fhirValueNames(t: FhirTemplateSpec): string[] {
  return [t.value?.valueName, ...(t.components ?? []).map((c) => c.value.valueName)].filter(
    (n): n is string => n !== undefined,
  );
}

/** Compiles documents into a MappingSet, or returns every problem found. */
export function compileMappings(documents: readonly TemplateDocument[]): CompileResult {
  const problems: MappingProblem[] = [];
  const deviceTemplates: CompiledDeviceTemplate[] = [];
  const fhirTemplates = new Map<string, FhirTemplateSpec>();
  const fhirSources = new Map<string, string>();

  for (const doc of documents) {
    if (doc.kind === 'device') {
      const parsed = deviceCollectionSchema.safeParse(doc.data);
      if (!parsed.success) {
        problems.push(...zodProblems(doc.file, parsed.error));
        continue;
      }
      parsed.data.template.forEach((entry, i) => {
        const compiled = compileDeviceTemplate(
          entry.template,
          doc.file,
          ['template', i, 'template'],
          problems,
        );
        if (compiled) deviceTemplates.push(compiled);
      });
    } else {
      const parsed = fhirCollectionSchema.safeParse(doc.data);
      if (!parsed.success) {
        problems.push(...zodProblems(doc.file, parsed.error));
        continue;
      }
      parsed.data.template.forEach((entry, i) => {
        const t = entry.template as FhirTemplateSpec;
        const earlier = fhirSources.get(t.typeName);
        if (earlier !== undefined) {
          problems.push({
            file: doc.file,
            path: ['template', i, 'template', 'typeName'],
            message: `FHIR template for type "${t.typeName}" is defined twice (also in ${earlier})`,
          });
          return;
        }
        fhirTemplates.set(t.typeName, t);
        fhirSources.set(t.typeName, doc.file);
      });
    }
  }

  // Cross-checks: each device type has a FHIR template, and the value names agree.
  for (const d of deviceTemplates) {
    const f = fhirTemplates.get(d.spec.typeName);
    const base = d.file;
    if (!f) {
      problems.push({
        file: base,
        path: [],
        message: `device type "${d.spec.typeName}" has no FHIR template`,
      });
      continue;
    }
    const produced = new Set(d.values.map((v) => v.valueName));
    for (const name of fhirValueNames(f)) {
      if (!produced.has(name)) {
        problems.push({
          file: fhirSources.get(f.typeName) ?? base,
          path: [],
          message: `FHIR template "${f.typeName}" uses value "${name}", which device type "${d.spec.typeName}" never produces`,
        });
      }
    }
  }

  if (problems.length > 0) return { ok: false, problems };
  const hash = createHash('sha256');
  for (const doc of [...documents].sort((a, b) => a.file.localeCompare(b.file))) {
    hash.update(doc.file).update('\0').update(doc.text).update('\0');
  }
  return {
    ok: true,
    mappings: { version: hash.digest('hex').slice(0, 12), deviceTemplates, fhirTemplates },
  };
}
