/**
 * Checks a pair of MedTech templates (the device mapping, e.g.
 * devicecontent.json, and the FHIR destination mapping, fhirmapping.json)
 * before they are copied into mappings/: whether they load unchanged, and
 * everything this pipeline does differently from the MedTech service, so that
 * an operator moving over knows exactly what to expect. Pure.
 */
import { rewriteLegacyLiterals } from './jmespath.js';
import { compileSources, locateIn, type LocatedProblem } from './load.js';
import type { MappingSet } from './compile.js';

export interface ImportReport {
  /** True when both files load unchanged. */
  readonly ok: boolean;
  /** Why they do not load (with file, line, column). */
  readonly problems: readonly LocatedProblem[];
  /** What loads, but behaves differently from MedTech (or needs a setting). */
  readonly differences: readonly LocatedProblem[];
  readonly mappings?: MappingSet;
}

/** Shape and identity differences when the set is not in MedTech compatibility mode. */
const ONCE = {
  compat:
    'the FHIR templates are not in MedTech compatibility mode: add "compatibility": "MedTech" to the CollectionFhir file so that new Observations take MedTech\'s identifier and id and merge with those MedTech wrote (docs/mappings.md, MedTech compatibility mode)',
  identifierScheme:
    "Observation.identifier and id follow this pipeline's scheme, not MedTech's ({patient}.{device}.{type}.{segment} under https://azure.microsoft.com/en-us/services/iomt-fhir-connector/): Observations MedTech wrote are neither matched nor merged",
  absent:
    'a value that is not a number is written with dataAbsentReason (MedTech raised an error); an optional component the reading lacks may be written with dataAbsentReason when no component is present (MedTech left it out); in a window or correlation group the first Quantity is taken (MedTech refused a group with several)',
  text: "Observation.code.text is the first coding's display, and no MedTech service coding (code = type name) is added; MedTech set text to the type name",
  effective:
    'a single reading is Observation.effectiveDateTime; MedTech wrote a zero-length effectivePeriod (the same instant)',
  issued: 'Observation.issued is not set (MedTech set it to the processing time)',
  amended:
    'a grouped Observation keeps status "final" when late readings merge into it (MedTech set "amended"), so the stored result does not depend on arrival order',
  issuedCompat:
    'Observation.issued is the broker receipt time (MedTech: the time it wrote the Observation; the mapping here has no clock)',
  windowEnd:
    "a window ends at its last millisecond (…:59:59.999Z; MedTech: its last 100 ns tick, …:59:59.9999999Z); the identifier, which carries seconds only, is the same; a Quantity, String or CodeableConcept merged across messages keeps the stored value (MedTech replaced it with the newer batch's)",
  wholeMessage:
    'a template that fails on a message (an expression error, a missing required value) refuses the whole message with a specific code; MedTech kept the readings the templates before it had produced',
  identity:
    "identity: set IDENTITY_RESOLUTION (Create, Lookup or LookupWithEncounter) as the MedTech service's Resolution type was; in Create mode the patient is the device's registry binding, not created from the payload",
} as const;

function note(file: string, path: readonly (string | number)[], message: string): LocatedProblem {
  return { file, path, message };
}

function entries(data: unknown): { templateType: string; template: Record<string, unknown> }[] {
  const t = (data as { template?: unknown } | undefined)?.template;
  return Array.isArray(t)
    ? (t as { templateType: string; template: Record<string, unknown> }[])
    : [];
}

function expressionText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null) return (v as { value?: string }).value;
  return undefined;
}

export function checkMedTechTemplates(input: {
  readonly deviceName: string;
  readonly deviceText: string;
  readonly fhirName: string;
  readonly fhirText: string;
}): ImportReport {
  const deviceFile = `device/${input.deviceName}`;
  const fhirFile = `fhir/${input.fhirName}`;
  const result = compileSources([
    { file: deviceFile, kind: 'device', text: input.deviceText },
    { file: fhirFile, kind: 'fhir', text: input.fhirText },
  ]);
  const differences: LocatedProblem[] = [...result.notes];
  let device: unknown;
  let fhir: unknown;
  try {
    device = JSON.parse(input.deviceText);
    fhir = JSON.parse(input.fhirText);
  } catch {
    // Not JSON (YAML, or broken): compileSources has reported what matters.
  }

  entries(device).forEach((e, i) => {
    const base = ['template', i, 'template'];
    const t = e.template;
    const kind = e.templateType.replace(/Template$/, '');
    if (kind === 'JsonataContent') return;
    if (t.deviceIdExpression !== undefined && kind !== 'IotJsonPathContent') {
      differences.push(
        note(
          deviceFile,
          [...base, 'deviceIdExpression'],
          'the device id read from the payload must be the authenticated MQTT device, or a device its gateway is linked to (`iomt gateways link`); MedTech trusted the payload',
        ),
      );
    }
    if (
      t.timestampExpression === undefined &&
      kind !== 'IotJsonPathContent' &&
      kind !== 'IotCentralJsonPathContent'
    ) {
      differences.push(
        note(
          deviceFile,
          base,
          'no timestampExpression: the broker receipt time is used (MedTech required one)',
        ),
      );
    }
    if (kind === 'IotJsonPathContent') {
      differences.push(
        note(
          deviceFile,
          base,
          "IotJsonPathContent: the time is Properties.iothub-creation-time-utc as in MedTech only when the message carries it (MEDTECH_ENVELOPE=eventhub for bridged IoT Hub events, or a topic/field property of that name); otherwise it is the broker receipt time (iothub-enqueuedtime). The device is SystemProperties.iothub-connection-device-id: the authenticated MQTT device, or the bridged event's, checked as a gateway link",
        ),
      );
    }
    const jmes = (t.defaultExpressionLanguage as string | undefined)?.toLowerCase() === 'jmespath';
    const expressions: [(string | number)[], unknown][] = [
      ...Object.entries(t).map(([k, v]): [(string | number)[], unknown] => [[k], v]),
      ...(Array.isArray(t.values) ? (t.values as Record<string, unknown>[]) : []).flatMap(
        (v, i): [(string | number)[], unknown][] => [
          [['values', i, 'valueExpression'], v.valueExpression],
        ],
      ),
    ];
    for (const [key, value] of expressions) {
      const source = expressionText(value);
      const language = (value as { language?: string } | undefined)?.language?.toLowerCase();
      if (source && (language === 'jmespath' || (jmes && language === undefined))) {
        if (/\bdivide\s*\(/.test(source)) {
          differences.push(
            note(
              deviceFile,
              [...base, ...key],
              "divide() of two integers is exact here (40 / 50 = 0.8, as MedTech's documentation shows); MedTech's code divided two JSON integers as C# longs (0)",
            ),
          );
        }
        if (/\b(add|subtract|multiply)\s*\(/.test(source)) {
          differences.push(
            note(
              deviceFile,
              [...base, ...key],
              "add/subtract/multiply of two integers outside a C# long is an error here, as MedTech's documentation says; MedTech's code wrapped around silently",
            ),
          );
        }
        if (rewriteLegacyLiterals(source) !== source) {
          differences.push(
            note(
              deviceFile,
              [...base, ...key],
              'a backtick literal that is not JSON (`name`) is read as the string "name", as JmesPath.Net did',
            ),
          );
        }
      }
    }
  });

  const fhirEntries = entries(fhir);
  const compat =
    typeof (fhir as { compatibility?: unknown } | undefined)?.compatibility === 'string' &&
    (fhir as { compatibility: string }).compatibility.toLowerCase() === 'medtech';
  if (fhirEntries.length > 0) {
    const keys = compat
      ? (['issuedCompat', 'identity'] as const)
      : ([
          'compat',
          'identifierScheme',
          'text',
          'effective',
          'issued',
          'absent',
          'identity',
        ] as const);
    for (const key of keys) differences.push(note(fhirFile, [], ONCE[key]));
    const grouped = fhirEntries.some((e) => {
      const p = e.template.periodInterval;
      return p === -1 || p === 60 || p === 1440;
    });
    if (grouped) differences.push(note(fhirFile, [], ONCE.amended));
    if (grouped && compat) differences.push(note(fhirFile, [], ONCE.windowEnd));
    // Every message: one template failing refuses the whole message.
    differences.push(note(deviceFile, [], ONCE.wholeMessage));
  }

  // Our own notes by path → with line and column, as compileSources gives its own.
  const own = differences.splice(result.notes.length);
  differences.push(
    ...locateIn(
      { file: deviceFile, kind: 'device', text: input.deviceText },
      own.filter((d) => d.file === deviceFile),
    ),
    ...locateIn(
      { file: fhirFile, kind: 'fhir', text: input.fhirText },
      own.filter((d) => d.file === fhirFile),
    ),
  );
  return result.ok
    ? { ok: true, problems: [], differences, mappings: result.mappings }
    : { ok: false, problems: result.problems, differences };
}
