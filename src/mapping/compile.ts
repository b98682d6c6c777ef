/**
 * Turns parsed template documents into a MappingSet: shapes checked, every
 * expression compiled once, cross-checks done. Pure: documents in, a MappingSet
 * (with notes) or the full list of problems out. The version is a content hash
 * of every file, so it changes whenever any template does.
 */
import { createHash } from 'node:crypto';
import { compileExpression, type CompiledExpression } from './expressions.js';
import { deviceCollectionSchema, fhirCollectionSchema } from './schema.js';
import { readDeviceTemplate, readFhirTemplate, zodFindings, type Path } from './templates.js';
import type {
  DeviceTemplateSpec,
  DeviceValueSpec,
  ExpressionSpec,
  FhirTemplateSpec,
  FhirValueSpec,
} from './types.js';

export type { CompiledExpression };

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
  readonly path: Path;
  readonly message: string;
  /** 0-based offset inside the expression string, for expression syntax errors. */
  readonly expressionPosition?: number;
}

export interface CompiledValue {
  readonly valueName: string;
  readonly required: boolean;
  readonly expression: CompiledExpression;
  /** The device's unit for this value (unitExpression). */
  readonly unitExpression?: CompiledExpression;
  /** Units, special values and sentinels as the template declares them. */
  readonly spec: DeviceValueSpec;
}

export interface CompiledDeviceTemplate {
  readonly spec: DeviceTemplateSpec;
  readonly file: string;
  /** Where the template sits in its file: ["template", i, "template"]. */
  readonly path: Path;
  readonly match: CompiledExpression;
  readonly timestamp?: CompiledExpression;
  readonly deviceId?: CompiledExpression;
  readonly patientId?: CompiledExpression;
  readonly encounterId?: CompiledExpression;
  readonly correlationId?: CompiledExpression;
  readonly values: readonly CompiledValue[];
}

export interface CompiledFhirTemplate {
  readonly spec: FhirTemplateSpec;
  readonly file: string;
  /** JsonataFhir: the compiled Observation expression. */
  readonly observation?: CompiledExpression;
}

export interface MappingSet {
  readonly version: string;
  /** MedTech compatibility mode (`"compatibility": "MedTech"` in the FHIR template files). */
  readonly compatibility?: 'medtech';
  readonly deviceTemplates: readonly CompiledDeviceTemplate[];
  readonly fhirTemplates: ReadonlyMap<string, CompiledFhirTemplate>;
}

/** A template set, or why not; notes either way. Loading adds line and column (load.ts). */
export type CompileResult<P extends MappingProblem = MappingProblem> =
  | {
      readonly ok: true;
      readonly mappings: MappingSet;
      readonly notes: readonly P[];
    }
  | {
      readonly ok: false;
      readonly problems: readonly P[];
      readonly notes: readonly P[];
    };

const LANGUAGE_NAME = { jsonata: 'JSONata', jsonpath: 'JSONPath', jmespath: 'JMESPath' } as const;

function compileOne(
  spec: ExpressionSpec,
  file: string,
  path: Path,
  problems: MappingProblem[],
): CompiledExpression | undefined {
  const r = compileExpression(spec);
  if (r.ok) return r.expression;
  problems.push({
    file,
    path,
    message: `${LANGUAGE_NAME[spec.language]} syntax error: ${r.error.message}`,
    ...(r.error.position !== undefined ? { expressionPosition: r.error.position } : {}),
  });
  return undefined;
}

const OPTIONAL_EXPRESSIONS = [
  ['timestampExpression', 'timestamp'],
  ['deviceIdExpression', 'deviceId'],
  ['patientIdExpression', 'patientId'],
  ['encounterIdExpression', 'encounterId'],
  ['correlationIdExpression', 'correlationId'],
] as const;

/** A MedTech value given as {value, language} sits one level deeper in the file. */
function exprPath(raw: unknown, base: Path, key: string): Path {
  const v = (raw as Record<string, unknown> | undefined)?.[key];
  return typeof v === 'object' && v !== null ? [...base, key, 'value'] : [...base, key];
}

function compileDeviceTemplate(
  spec: DeviceTemplateSpec,
  raw: unknown,
  file: string,
  base: Path,
  problems: MappingProblem[],
): CompiledDeviceTemplate | undefined {
  const before = problems.length;
  const match = compileOne(
    spec.typeMatchExpression,
    file,
    exprPath(raw, base, 'typeMatchExpression'),
    problems,
  );
  const optional: Partial<Record<(typeof OPTIONAL_EXPRESSIONS)[number][1], CompiledExpression>> =
    {};
  for (const [key, name] of OPTIONAL_EXPRESSIONS) {
    const source = spec[key];
    if (source === undefined) continue;
    const expr = compileOne(source, file, exprPath(raw, base, key), problems);
    if (expr) optional[name] = expr;
  }
  const rawValues = (raw as { values?: unknown[] } | undefined)?.values ?? [];
  const values: CompiledValue[] = [];
  spec.values.forEach((v, i) => {
    const path = exprPath(rawValues[i], [...base, 'values', i], 'valueExpression');
    const expr = compileOne(v.valueExpression, file, path, problems);
    const unit =
      v.unitExpression === undefined
        ? undefined
        : compileOne(
            v.unitExpression,
            file,
            exprPath(rawValues[i], [...base, 'values', i], 'unitExpression'),
            problems,
          );
    if (expr) {
      values.push({
        valueName: v.valueName,
        required: v.required,
        expression: expr,
        ...(unit ? { unitExpression: unit } : {}),
        spec: v,
      });
    }
  });
  if (problems.length > before || !match) return undefined;
  return { spec, file, path: base, match, ...optional, values };
}

/** Value names a CodeValueFhir template reads (CodeableConcept values ignore the reading). */
function fhirValueNames(t: FhirTemplateSpec): string[] {
  if (t.kind !== 'CodeValueFhir') return [];
  return [t.value, ...(t.components ?? []).map((c) => c.value)]
    .filter((v) => v !== undefined && v.valueType !== 'CodeableConcept')
    .flatMap((v) => {
      const named = v as { valueName: string; periodName?: string };
      return named.periodName !== undefined
        ? [named.valueName, named.periodName]
        : [named.valueName];
    });
}

/** The UCUM code a CodeValueFhir template writes a value in (Quantity code, SampledData origin code). */
function fhirUnitOf(t: FhirTemplateSpec, valueName: string): string | undefined {
  if (t.kind !== 'CodeValueFhir') return undefined;
  const specs: (FhirValueSpec | undefined)[] = [
    t.value,
    ...(t.components ?? []).map((c) => c.value),
  ];
  for (const v of specs) {
    if (
      (v?.valueType === 'Quantity' || v?.valueType === 'SampledData') &&
      v.valueName === valueName
    )
      return v.code;
  }
  return undefined;
}

export interface CompileOptions {
  /**
   * Default true: a device type without a FHIR template is an error. False
   * checks device templates on their own (the debugger, MedTech import).
   */
  readonly requireFhirTemplates?: boolean;
}

/** Compiles documents into a MappingSet, or returns every problem found. */
export function compileMappings(
  documents: readonly TemplateDocument[],
  options: CompileOptions = {},
): CompileResult {
  const problems: MappingProblem[] = [];
  const notes: MappingProblem[] = [];
  const deviceTemplates: CompiledDeviceTemplate[] = [];
  const fhirTemplates = new Map<string, CompiledFhirTemplate>();
  const modes = new Map<string, 'medtech' | 'own'>();

  for (const doc of documents) {
    const collection = (
      doc.kind === 'device' ? deviceCollectionSchema : fhirCollectionSchema
    ).safeParse(doc.data);
    if (!collection.success) {
      problems.push(...zodFindings([], collection.error).map((f) => ({ file: doc.file, ...f })));
      continue;
    }
    if (doc.kind === 'fhir') {
      const mode = (collection.data as { compatibility?: 'medtech' }).compatibility;
      modes.set(doc.file, mode ?? 'own');
    }
    collection.data.template.forEach((entry, i) => {
      const base: Path = ['template', i, 'template'];
      const read =
        doc.kind === 'device'
          ? readDeviceTemplate(entry.templateType, entry.template, base)
          : readFhirTemplate(entry.templateType, entry.template, base);
      problems.push(...read.problems.map((f) => ({ file: doc.file, ...f })));
      notes.push(...read.notes.map((f) => ({ file: doc.file, ...f })));
      if (!read.spec) return;
      if (doc.kind === 'device') {
        const compiled = compileDeviceTemplate(
          read.spec as DeviceTemplateSpec,
          entry.template,
          doc.file,
          base,
          problems,
        );
        if (compiled) deviceTemplates.push(compiled);
        return;
      }
      const spec = read.spec as FhirTemplateSpec;
      const earlier = fhirTemplates.get(spec.typeName);
      if (earlier) {
        problems.push({
          file: doc.file,
          path: [...base, 'typeName'],
          message: `FHIR template for type "${spec.typeName}" is defined twice (also in ${earlier.file})`,
        });
        return;
      }
      let observation: CompiledExpression | undefined;
      if (spec.kind === 'JsonataFhir') {
        observation = compileOne(
          { value: spec.observationExpression, language: 'jsonata' },
          doc.file,
          [...base, 'observationExpression'],
          problems,
        );
        if (!observation) return;
      }
      fhirTemplates.set(spec.typeName, {
        spec,
        file: doc.file,
        ...(observation ? { observation } : {}),
      });
    });
  }

  // Cross-checks: each device type has a FHIR template, and the value names agree.
  const producedTypes = new Set<string>();
  for (const d of deviceTemplates) {
    producedTypes.add(d.spec.typeName);
    const f = fhirTemplates.get(d.spec.typeName);
    if (!f) {
      (options.requireFhirTemplates === false ? notes : problems).push({
        file: d.file,
        path: [...d.path, 'typeName'],
        message: `device type "${d.spec.typeName}" has no FHIR template`,
      });
      continue;
    }
    const produced = new Set(d.values.map((v) => v.valueName));
    const used = fhirValueNames(f.spec);
    for (const v of d.values) {
      const target = v.spec.unit;
      const written = fhirUnitOf(f.spec, v.valueName);
      if (target !== undefined && written !== undefined && written !== target) {
        problems.push({
          file: f.file,
          path: [],
          message: `FHIR template "${f.spec.typeName}" writes value "${v.valueName}" in "${written}", but the device template in ${d.file} converts it to "${target}"`,
        });
      }
    }
    for (const name of used) {
      if (!produced.has(name)) {
        problems.push({
          file: f.file,
          path: [],
          message: `FHIR template "${f.spec.typeName}" uses value "${name}", which the device template in ${d.file} (${d.path.join('.')}) never produces`,
        });
      }
    }
    if (f.spec.kind === 'CodeValueFhir' && f.spec.value?.valueType !== 'CodeableConcept') {
      for (const name of produced) {
        if (!used.includes(name)) {
          notes.push({
            file: d.file,
            path: [...d.path, 'values'],
            message: `value "${name}" of type "${d.spec.typeName}" is not used by its FHIR template`,
          });
        }
      }
    }
  }
  for (const f of fhirTemplates.values()) {
    if (!producedTypes.has(f.spec.typeName)) {
      notes.push({
        file: f.file,
        path: [],
        message: `FHIR template "${f.spec.typeName}" has no device template producing its type`,
      });
    }
  }

  // One template set, one mode: every FHIR file says MedTech, or none does.
  const medtech = [...modes.entries()].filter(([, m]) => m === 'medtech').map(([f]) => f);
  if (medtech.length > 0 && medtech.length < modes.size) {
    const others = [...modes.entries()].filter(([, m]) => m === 'own').map(([f]) => f);
    for (const f of others) {
      problems.push({
        file: f,
        path: [],
        message: `the template set is in MedTech compatibility mode (${medtech.join(', ')}): this file needs "compatibility": "MedTech" too`,
      });
    }
  }
  if (problems.length > 0) return { ok: false, problems, notes };
  const hash = createHash('sha256');
  for (const doc of [...documents].sort((a, b) => a.file.localeCompare(b.file))) {
    hash.update(doc.file).update('\0').update(doc.text).update('\0');
  }
  return {
    ok: true,
    notes,
    mappings: {
      version: hash.digest('hex').slice(0, 12),
      ...(medtech.length > 0 ? { compatibility: 'medtech' as const } : {}),
      deviceTemplates,
      fhirTemplates,
    },
  };
}
