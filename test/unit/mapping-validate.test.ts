/**
 * Validation errors with positions: each problem names file, line and column —
 * for an expression error, the line and column of the offending character
 * inside the expression, however the string is written — and the cross-checks
 * between device and FHIR templates.
 */
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatProblem, loadMappings, type LocatedProblem } from '../../src/mapping/index.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'iomt-validate-'));
  await mkdir(path.join(dir, 'device'));
  await mkdir(path.join(dir, 'fhir'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const FHIR_HR = JSON.stringify(
  {
    templateType: 'CollectionFhir',
    template: [
      {
        templateType: 'CodeValueFhir',
        template: {
          typeName: 'hr',
          codes: [{ system: 'http://loinc.org', code: '8867-4' }],
          value: {
            valueType: 'Quantity',
            valueName: 'hr',
            unit: '/min',
            code: '/min',
            system: 'http://unitsofmeasure.org',
          },
        },
      },
    ],
  },
  null,
  2,
);

async function problems(files: Record<string, string>): Promise<LocatedProblem[]> {
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
  const r = await loadMappings(dir);
  if (r.ok) throw new Error('expected problems');
  return [...r.problems];
}

/** 1-based line and column of `needle` in `text` (plus `extra` characters). */
function where(text: string, needle: string, extra = 0): { line: number; column: number } {
  const at = text.indexOf(needle) + extra;
  const before = text.slice(0, at).split('\n');
  return { line: before.length, column: before.at(-1)!.length + 1 };
}

describe('template validation', () => {
  it('points inside a JSON string at the character JSONata stumbles on, past escapes', async () => {
    const device = `{
  "templateType": "CollectionContent",
  "template": [
    {
      "templateType": "JsonataContent",
      "template": {
        "typeName": "hr",
        "typeMatchExpression": "kind = \\"monitor\\" and ++ hr",
        "values": [{ "valueName": "hr", "valueExpression": "hr" }]
      }
    }
  ]
}
`;
    const [p, ...rest] = await problems({ 'device/d.json': device, 'fhir/f.json': FHIR_HR });
    expect(rest).toEqual([]);
    // `kind = "monitor" and ++ hr`: JSONata stops at the first "+" (character 22),
    // which sits two characters further right in the file because of the \" escapes.
    expect(p!.expressionPosition).toBe(21);
    expect({ line: p!.line, column: p!.column }).toEqual(where(device, '++'));
    expect(formatProblem(p!)).toBe(
      `device/d.json:8:${where(device, '++').column}: JSONata syntax error: The symbol "+" cannot be used as a unary operator [expression character 22] (at template.0.template.typeMatchExpression)`,
    );
  });

  it('points into a YAML block expression, on the right line', async () => {
    const device = `templateType: CollectionContent
template:
  - templateType: JsonataContent
    template:
      typeName: hr
      typeMatchExpression: kind = "monitor"
      values:
        - valueName: hr
          valueExpression: |
            (
              $x := hr;
              $x * (2
            )
`;
    const [p] = await problems({ 'device/d.yaml': device, 'fhir/f.json': FHIR_HR });
    expect(p!.message).toMatch(/^JSONata syntax error: Expected "\)"/);
    expect(p!.line).toBe(13);
  });

  it('names an unknown field (a typo) at its own line', async () => {
    const device = `{
  "templateType": "CollectionContent",
  "template": [
    {
      "templateType": "JsonataContent",
      "template": {
        "typeName": "hr",
        "typeMatchExpression": "true",
        "values": [{ "valueName": "hr", "valueExpresion": "hr" }]
      }
    }
  ]
}
`;
    const found = await problems({ 'device/d.json': device, 'fhir/f.json': FHIR_HR });
    const messages = found.map((p) => `${p.line}: ${p.message}`);
    expect(messages).toContain('9: unknown field "valueExpresion"');
  });

  it('positions JSONPath and JMESPath errors of MedTech templates', async () => {
    const device = `{
  "templateType": "CollectionContent",
  "template": [
    {
      "templateType": "CalculatedContent",
      "template": {
        "typeName": "hr",
        "typeMatchExpression": "$..[?(@heartRate)",
        "deviceIdExpression": { "value": "nosuch(@)", "language": "JmesPath" },
        "timestampExpression": "$.matchedToken.t",
        "values": [{ "valueName": "hr", "valueExpression": "$.matchedToken.hr", "required": "true" }]
      }
    }
  ]
}
`;
    const found = await problems({ 'device/d.json': device, 'fhir/f.json': FHIR_HR });
    expect(found.map((p) => [p.line, p.message])).toEqual([
      [8, 'JSONPath syntax error: "[" is never closed'],
      [9, 'JMESPath syntax error: unknown function(s): nosuch()'],
    ]);
    expect(found[0]!.column).toBe(where(device, '[?(@heartRate)').column);
  });

  it('reports a file that is not JSON at its line and column', async () => {
    const found = await problems({
      'device/d.json': '{\n  "templateType": ,\n}\n',
      'fhir/f.json': FHIR_HR,
    });
    expect(found[0]!.file).toBe('device/d.json');
    expect(found[0]!.line).toBe(2);
  });

  it('cross-checks: a device type without a FHIR template, a FHIR value never produced', async () => {
    const device = JSON.stringify({
      templateType: 'CollectionContent',
      template: [
        {
          templateType: 'JsonataContent',
          template: {
            typeName: 'hr',
            typeMatchExpression: 'true',
            values: [{ valueName: 'pulse', valueExpression: 'pulse' }],
          },
        },
        {
          templateType: 'JsonataContent',
          template: {
            typeName: 'temp',
            typeMatchExpression: 'true',
            values: [{ valueName: 't', valueExpression: 't' }],
          },
        },
      ],
    });
    const found = await problems({ 'device/d.json': device, 'fhir/f.json': FHIR_HR });
    expect(found.map((p) => p.message)).toEqual([
      'FHIR template "hr" uses value "hr", which the device template in device/d.json (template.0.template) never produces',
      'device type "temp" has no FHIR template',
    ]);
  });
});
