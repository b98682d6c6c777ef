/**
 * The shipped template library (mappings/): every fixture — sample message,
 * expected measurements and Observations, or the expected refusal — passes,
 * and every template in the library is exercised by at least one fixture.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  loadMappings,
  readFixtures,
  runFixture,
  type Fixture,
  type MappingSet,
} from '../../src/mapping/index.js';

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../mappings');
let mappings: MappingSet;
let fixtures: Fixture[];

beforeAll(async () => {
  const r = await loadMappings(dir);
  if (!r.ok) throw new Error(JSON.stringify(r.problems, null, 2));
  mappings = r.mappings;
  fixtures = await readFixtures(dir);
});

describe('template library', () => {
  it('has fixtures for the devices the library promises', () => {
    const names = fixtures.map((f) => f.name);
    for (const device of [
      'pulse-oximeter',
      'bp-cuff',
      'thermometer',
      'glucose-meter',
      'weight-scale',
      'step-counter',
      'pleth-waveform',
      'gateway',
    ]) {
      expect(names).toContain(device);
    }
  });

  it('every fixture produces exactly its expected measurements and Observations (or refusal)', async () => {
    const failures: string[] = [];
    for (const f of fixtures) {
      const outcome = await runFixture(mappings, f);
      if (!outcome.ok) failures.push(`${f.name}:\n  ${outcome.differences.join('\n  ')}`);
    }
    expect(failures).toEqual([]);
  });

  it('every template type of the library is exercised by a fixture', async () => {
    const produced = new Set<string>();
    for (const f of fixtures) {
      const outcome = await runFixture(mappings, f);
      for (const m of (outcome.actual?.measurements ?? []) as { type: string }[])
        produced.add(m.type);
    }
    const untested = [...mappings.fhirTemplates.keys()].filter((t) => !produced.has(t));
    expect(untested).toEqual([]);
  });

  it('a fixture that no longer matches names each difference by its path', async () => {
    const f = fixtures.find((x) => x.name === 'weight-scale')!;
    const broken: Fixture = {
      ...f,
      message: f.message.replace('165.2', '166.2'),
    };
    const outcome = await runFixture(mappings, broken);
    expect(outcome.ok).toBe(false);
    expect(outcome.differences).toContain('measurements[0].values.kg: expected 74.93, got 75.39');
    expect(outcome.differences).toContain(
      'observations[0].valueQuantity.value: expected 74.93, got 75.39',
    );
  });
});
