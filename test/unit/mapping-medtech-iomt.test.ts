/**
 * MedTech's own test inputs (microsoft/iomt-fhir, copied into
 * test/fixtures/medtech/iomt-fhir; its README names each source) give the
 * results MedTech's C# tests assert. docs/mappings.md lists every case.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  compileSources,
  DEFAULT_POLICY,
  normalizeMessage,
  type MappingSet,
} from '../../src/mapping/index.js';

const dir = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '../fixtures/medtech/iomt-fhir',
);
const text = (f: string) => readFileSync(path.join(dir, f), 'utf8');

/** A single template file of MedTech's tests, inside a collection as a mapping file holds it. */
function collection(kind: 'device' | 'fhir', ...files: string[]): string {
  return JSON.stringify({
    templateType: kind === 'device' ? 'CollectionContent' : 'CollectionFhir',
    template: files.map((f) => JSON.parse(text(f)) as unknown),
  });
}

function load(
  sources: { kind: 'device' | 'fhir'; text: string; file?: string }[],
  requireFhirTemplates = true,
) {
  return compileSources(
    sources.map((s, i) => ({ file: s.file ?? `${s.kind}/${i}.json`, kind: s.kind, text: s.text })),
    dir,
    { requireFhirTemplates },
  );
}

function loaded(sources: Parameters<typeof load>[0], requireFhirTemplates = true): MappingSet {
  const r = load(sources, requireFhirTemplates);
  if (!r.ok) throw new Error(JSON.stringify(r.problems, null, 2));
  return r.mappings;
}

const ANY_TIME = {
  ...DEFAULT_POLICY,
  input: {
    ...DEFAULT_POLICY.input,
    maxAgeMs: Number.MAX_SAFE_INTEGER,
    maxFutureMs: Number.MAX_SAFE_INTEGER,
  },
};

const meta = (deviceId: string, receivedAt = '2026-01-01T00:00:00Z') => ({
  deviceId,
  topic: `devices/${deviceId}/telemetry`,
  receivedAt: Date.parse(receivedAt),
});

/** A device template producing `type` with the given values from the body. */
function deviceFor(type: string, values: string[]): string {
  return JSON.stringify({
    templateType: 'CollectionContent',
    template: [
      {
        templateType: 'JsonPathContent',
        template: {
          typeName: type,
          typeMatchExpression: '$..[?(@type)]',
          timestampExpression: '$.time',
          values: values.map((v) => ({ valueName: v, valueExpression: `$.${v}` })),
        },
      },
    ],
  });
}

describe('what MedTech loads, loads (CodeValueFhirTemplateFactoryTests, CollectionContentTemplateFactoryTests)', () => {
  it.each([
    ['template-tests/data_CodeValueFhirTemplate_SampledData.json', ['hr']],
    ['template-tests/data_CodeValueFhirTemplate_Components.json', ['diastolic', 'systolic']],
    ['template-tests/data_CodeValueFhirTemplate_Quantity.json', ['diastolic', 'systolic']],
  ])('%s: a lower-case valueType ("sampledData", "quantity") is that value type', (file, names) => {
    const typeName = (JSON.parse(text(file)) as { template: { typeName: string } }).template
      .typeName;
    const m = loaded([
      { kind: 'device', text: deviceFor(typeName, names) },
      { kind: 'fhir', text: collection('fhir', file) },
    ]);
    const spec = m.fhirTemplates.get(typeName)!.spec;
    if (spec.kind !== 'CodeValueFhir') throw new Error('expected CodeValueFhir');
    const types = [spec.value, ...(spec.components ?? []).map((c) => c.value)]
      .filter((v) => v !== undefined)
      .map((v) => v.valueType);
    expect(types).toEqual(
      file.includes('Quantity') ? ['Quantity', 'Quantity'] : names.map(() => 'SampledData'),
    );
  });

  it('template type names in any case, with or without "Template" (data_CollectionContentTemplateEmptyWithType: "collectionContent")', () => {
    const r = load([
      {
        kind: 'device',
        text: text('template-tests/data_CollectionContentTemplateEmptyWithType.json'),
      },
    ]);
    expect(r.ok).toBe(true);
    const m = loaded(
      [
        {
          kind: 'device',
          text: JSON.stringify({
            templateType: 'collectioncontenttemplate',
            template: [
              {
                templateType: 'jsonPathContent',
                template: {
                  typeName: 'a',
                  typeMatchExpression: '$..[?(@a)]',
                  values: [{ valueName: 'a', valueExpression: '$.a' }],
                },
              },
              {
                templateType: 'IOTJSONPATHCONTENTTEMPLATE',
                template: {
                  typeName: 'b',
                  typeMatchExpression: '$..[?(@Body.b)]',
                  values: [{ valueName: 'b', valueExpression: '$.Body.b' }],
                },
              },
              {
                templateType: 'calculatedcontent',
                template: {
                  typeName: 'c',
                  typeMatchExpression: '$..[?(@c)]',
                  values: [{ valueName: 'c', valueExpression: '$.c' }],
                },
              },
            ],
          }),
        },
      ],
      false,
    );
    expect(m.deviceTemplates.map((t) => t.spec.kind)).toEqual([
      'JsonPathContent',
      'IotJsonPathContent',
      'CalculatedContent',
    ]);
  });

  it('an unknown template type is still refused, naming the types it could be', () => {
    const r = load([
      {
        kind: 'device',
        text: JSON.stringify({
          templateType: 'CollectionContent',
          template: [{ templateType: 'mockA', template: {} }],
        }),
      },
    ]);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems[0]!.message).toMatch(/unknown template type "mockA"/);
  });
});

describe('categories, and a template with neither value nor components (CodeValueFhirTemplateProcessorTests.GivenTemplateWithCategory_WhenCreateObservation_ThenCategoryReturned_Test)', () => {
  const mappings = loaded([
    { kind: 'device', text: deviceFor('code', ['p1', 'p2']) },
    { kind: 'fhir', text: text('processor-tests/category-and-code-only.json') },
  ]);

  it('writes the categories as MedTech does (a text-only category has no coding) and no value', async () => {
    const out = await normalizeMessage(mappings, {
      policy: ANY_TIME,
      payload: JSON.stringify({ type: 'x', time: '2019-01-01T00:00:00Z', p1: 'v1', p2: 'v2' }),
      meta: meta('d1'),
      patientId: 'p-1',
      identifierSystem: 'urn:iomt:observation',
    });
    expect(out.observations).toHaveLength(1);
    const o = out.observations[0]!.observation;
    expect(o.category).toEqual([
      {
        coding: [
          { code: 'a', display: 'b', system: 'c' },
          { code: 'd', display: 'e', system: 'f' },
        ],
        text: 'category with two codes',
      },
      { coding: [{ code: 'y', system: 'z' }], text: 'category with no display' },
      { text: 'category with no codes' },
    ]);
    const valueKeys = Object.keys(o).filter(
      (k) => k.startsWith('value') || k === 'dataAbsentReason' || k === 'component',
    );
    expect(valueKeys).toEqual([]);
    expect(o.code.coding?.[0]?.code).toBe('code');
  });
});
