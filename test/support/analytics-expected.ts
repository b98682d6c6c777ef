/**
 * The known answer of each documented query in docs/analytics.md, computed from
 * the simulated ward's own records (test/support/analytics-dataset.ts) — not
 * from SQL — and, where the dataset planted a fact, checked against that fact too.
 */
import { expect } from 'vitest';
import { DEFAULT_REFERENCE_RANGES } from '../../src/clickhouse/index.js';
import { LOINC, UNIT_OF, type Dataset, type Point } from './analytics-dataset.js';

export type Row = Record<string, unknown>;

const MIN = 60_000;
const HOUR = 3_600_000;
/** DateTime64(3) and DateTime text forms. */
const ms3 = (ms: number) => new Date(ms).toISOString().slice(0, 23).replace('T', ' ');
const s0 = (ms: number) => new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const groupBy = <T>(xs: readonly T[], key: (x: T) => string) => {
  const m = new Map<string, T[]>();
  for (const x of xs) m.set(key(x), [...(m.get(key(x)) ?? []), x]);
  return m;
};
export const sorted = (keys: Iterable<string>) => [...keys].sort();
/** ClickHouse quantileExact(level): the element at floor(level × n) of the sorted values. */
const quantileExact = (xs: readonly number[], level: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(level * s.length))]!;
};

/** Numbers (64-bit integers arrive as strings) within `tolerance`, other values equal. */
function expectRows(actual: Row[], expected: Row[], tolerance = 1e-9): void {
  expect(actual.length, JSON.stringify(actual.slice(0, 3))).toBe(expected.length);
  expected.forEach((want, i) => {
    const got = actual[i]!;
    for (const [k, v] of Object.entries(want)) {
      if (typeof v === 'number') {
        expect(
          Math.abs(Number(got[k]) - v),
          `row ${i} ${k}: ${String(got[k])} vs ${v}`,
        ).toBeLessThanOrEqual(tolerance);
      } else {
        expect(got[k], `row ${i} ${k}`).toEqual(v);
      }
    }
  });
}

/** The final Observations (latest version once) with the simulation's own timing facts. */
function finalObservations(d: Dataset) {
  const latest = new Map<string, (typeof d.batches)[number][number]>();
  for (const env of d.batches.flat()) {
    const prev = latest.get(env.observation.id!);
    const at = (e: typeof env) => Date.parse(e.observation.meta!.lastUpdated!);
    if (!prev || at(env) > at(prev)) latest.set(env.observation.id!, env);
  }
  return [...latest.values()].map((e) => ({
    id: e.observation.id!,
    patient: e.observation.subject!.reference!.slice('Patient/'.length),
    device: e.observation.device!.reference!.slice('Device/'.length),
    at: Date.parse(e.observation.effectiveDateTime!),
    receivedAt: e.provenance.receivedAt,
    committedAt: Date.parse(e.observation.meta!.lastUpdated!),
    templateName: e.provenance.templateName,
    templateVersion: e.provenance.templateVersion,
  }));
}

/** The expected answer of each documented query, from the dataset's records. */
export const EXPECTED: Record<string, (d: Dataset, rows: Row[]) => void> = {
  'spo2-desaturation': (d, rows) => {
    const want: Row[] = [];
    for (const [patient, pts] of groupBy(
      d.points.filter((p) => p.code === LOINC.spo2),
      (p) => p.patient,
    )) {
      let run: Point[] = [];
      const close = () => {
        if (run.length > 0 && run.at(-1)!.at - run[0]!.at > 5 * MIN) {
          const minutes = (run.at(-1)!.at - run[0]!.at) / MIN;
          want.push({
            patient_id: patient,
            episode_start: ms3(run[0]!.at),
            episode_end: ms3(run.at(-1)!.at),
            minutes,
            readings: String(run.length),
          });
        }
        run = [];
      };
      for (const p of [...pts].sort((a, b) => a.at - b.at)) {
        if (p.value < 90) run.push(p);
        else close();
      }
      close();
    }
    expectRows(rows, want);
    // The planted fact: only pat-b, 8 readings over 7 minutes.
    expect(rows.map((r) => [r.patient_id, r.readings])).toEqual([['pat-b', '8']]);
  },

  'hourly-features': (d, rows) => {
    const hourOf = (p: Point) => Math.floor(p.at / HOUR) * HOUR;
    const groups = groupBy(d.points, (p) => `${p.patient}|${hourOf(p)}`);
    const want = sorted(groups.keys()).map((k) => {
      const pts = groups.get(k)!;
      const of = (code: string) => pts.filter((p) => p.code === code).map((p) => p.value);
      return {
        patient_id: pts[0]!.patient,
        hour: s0(hourOf(pts[0]!)),
        hr_mean: mean(of(LOINC.hr)),
        hr_max: Math.max(...of(LOINC.hr)),
        spo2_min: Math.min(...of(LOINC.spo2)),
        rr_mean: mean(of(LOINC.rr)),
        sbp_mean: mean(of(LOINC.systolic)),
        hr_readings: of(LOINC.hr).length,
      };
    });
    expectRows(rows, want, 1e-6);
  },

  'silent-devices': (d, rows) => {
    const last = new Map<string, number>();
    for (const m of d.messageFacts)
      last.set(m.device, Math.max(last.get(m.device) ?? 0, m.receivedAt));
    const silent = sorted(
      [...last].filter(([, t]) => t < Date.now() - 30 * MIN).map(([dev]) => dev),
    );
    expectRows(
      rows,
      silent.map((dev) => ({ device_id: dev, last_message: ms3(last.get(dev)!) })),
    );
    expect(rows.map((r) => r.device_id)).toEqual(['dev-mon-f']);
    expect(Number(rows[0]!.silent_minutes)).toBeGreaterThanOrEqual(90);
  },

  'data-gaps': (d, rows) => {
    const want: Row[] = [];
    for (const dev of sorted(new Set(d.messageFacts.map((m) => m.device)))) {
      const times = d.messageFacts
        .filter((m) => m.device === dev)
        .map((m) => m.receivedAt)
        .sort((a, b) => a - b);
      for (let i = 1; i < times.length; i++) {
        if (times[i]! - times[i - 1]! > 600_000) {
          const minutes = Math.floor(times[i]! / MIN) - Math.floor(times[i - 1]! / MIN);
          want.push({
            device_id: dev,
            gap_start: ms3(times[i - 1]!),
            gap_end: ms3(times[i]!),
            gap_minutes: minutes,
          });
        }
      }
    }
    expectRows(rows, want);
    expect(rows.map((r) => [r.device_id, Number(r.gap_minutes)])).toEqual([['dev-mon-d', 26]]);
  },

  'out-of-range-by-unit': (d, rows) => {
    const ranges = new Map(
      DEFAULT_REFERENCE_RANGES.map(([code, label, low, high]) => [code, { label, low, high }]),
    );
    const pts = d.points.filter((p) => ranges.has(p.code));
    const groups = groupBy(pts, (p) => `${UNIT_OF[p.patient]}|${p.code}`);
    const want = sorted(groups.keys()).map((k) => {
      const g = groups.get(k)!;
      const r = ranges.get(g[0]!.code)!;
      const out = g.filter((p) => p.value < r.low || p.value > r.high).length;
      return {
        unit: UNIT_OF[g[0]!.patient],
        code: g[0]!.code,
        measure: r.label,
        readings: g.length,
        out_of_range: out,
        pct: Math.round((1000 * out) / g.length) / 10,
      };
    });
    expectRows(rows, want, 0.051);
    // Planted: the desaturations, and pat-a's corrected heart rate of 135 in the ICU.
    const row = (unit: string, code: string) =>
      rows.find((r) => r.unit === unit && r.code === code)!;
    expect(Number(row('ICU', LOINC.spo2).out_of_range)).toBe(8 + 3);
    expect(Number(row('WARD-3', LOINC.spo2).out_of_range)).toBe(8);
    expect(Number(row('ICU', LOINC.hr).out_of_range)).toBe(1);
  },

  'ingestion-latency': (d, rows) => {
    const groups = groupBy(finalObservations(d), (o) => o.device);
    const want = sorted(groups.keys()).map((dev) => {
      const g = groups.get(dev)!;
      const lat = g.map((o) => o.committedAt - o.receivedAt);
      return {
        device_id: dev,
        observations: g.length,
        p50_ms: quantileExact(lat, 0.5),
        p95_ms: quantileExact(lat, 0.95),
        max_ms: Math.max(...lat),
        device_to_broker_p50_ms: quantileExact(
          g.map((o) => o.receivedAt - o.at),
          0.5,
        ),
      };
    });
    expectRows(rows, want);
    // Planted: mon-c's slow tenth shows in its 95th percentile only.
    const c = rows.find((r) => r.device_id === 'dev-mon-c')!;
    expect([Number(c.p50_ms), Number(c.p95_ms)]).toEqual([450, 5000]);
  },

  'blood-pressure-trend': (d, rows) => {
    const pts = d.points.filter((p) => p.patient === 'pat-a');
    const groups = groupBy(
      pts.filter((p) => p.code === LOINC.systolic),
      (p) => String(Math.floor(p.at / HOUR) * HOUR),
    );
    const want = sorted(groups.keys()).map((h) => {
      const sys = groups.get(h)!.map((p) => p.value);
      const dia = pts
        .filter((p) => p.code === LOINC.diastolic && Math.floor(p.at / HOUR) * HOUR === Number(h))
        .map((p) => p.value);
      return {
        hour: s0(Number(h)),
        systolic: mean(sys),
        diastolic: mean(dia),
        readings: sys.length,
      };
    });
    expectRows(rows, want, 0.5);
    // Planted: systolic climbs over the six hours.
    expect(Number(rows.at(-1)!.systolic)).toBeGreaterThan(Number(rows[0]!.systolic) + 20);
  },

  'template-version': (d, rows) => {
    const tv2 = finalObservations(d).filter((o) => o.templateVersion === 'tv-2');
    const groups = groupBy(tv2, (o) => o.templateName);
    const want = sorted(groups.keys()).map((name) => {
      const g = groups.get(name)!;
      return {
        template_name: name,
        template_version: 'tv-2',
        observations: g.length,
        patients: new Set(g.map((o) => o.patient)).size,
        first_reading: ms3(Math.min(...g.map((o) => o.at))),
        last_reading: ms3(Math.max(...g.map((o) => o.at))),
      };
    });
    expectRows(rows, want);
    expect(rows.every((r) => Number(r.patients) === 1)).toBe(true);
  },

  'latest-vitals': (d, rows) => {
    const recent = d.points.filter((p) => p.at >= Date.now() - HOUR);
    const groups = groupBy(recent, (p) => p.patient);
    const latest = (g: Point[], code: string) =>
      g.filter((p) => p.code === code).sort((a, b) => b.at - a.at)[0]!.value;
    const want = sorted(groups.keys()).map((patient) => {
      const g = groups.get(patient)!;
      return {
        patient_id: patient,
        heart_rate: latest(g, LOINC.hr),
        spo2: latest(g, LOINC.spo2),
        resp_rate: latest(g, LOINC.rr),
        systolic: latest(g, LOINC.systolic),
        measured_at: ms3(Math.max(...g.map((p) => p.at))),
      };
    });
    expectRows(rows, want);
    expect(rows.map((r) => r.patient_id)).not.toContain('pat-f'); // silent for 90 minutes
  },

  'dead-letters': (d, rows) => {
    const dead = d.messageFacts.filter((m) => m.outcome === 'dead_lettered');
    const groups = groupBy(dead, (m) => `${m.errorCode}|${m.device}`);
    const stage = (code: string) => (code === 'FhirRejected' ? 'fhir' : 'normalize');
    const want = [...groups.values()]
      .map((g) => ({
        error_code: g[0]!.errorCode,
        error_stage: stage(g[0]!.errorCode),
        device_id: g[0]!.device,
        messages: g.length,
        last_seen: ms3(Math.max(...g.map((m) => m.receivedAt))),
      }))
      .sort((a, b) => b.messages - a.messages || a.error_code.localeCompare(b.error_code));
    expectRows(rows, want);
    expect(rows.map((r) => [r.error_code, r.device_id, Number(r.messages)])).toEqual([
      ['InvalidPayload', 'dev-mon-d', 3],
      ['NoPatientAssociated', 'dev-mon-b', 2],
      ['TimestampOutOfRange', 'dev-mon-e', 2],
      ['FhirRejected', 'dev-mon-a', 1],
    ]);
  },

  'readings-per-association': (d, rows) => {
    // Each Observation once (the batches repeat some), by device and device time.
    const observations = new Map<string, { device: string; patient: string; at: number }>();
    for (const e of d.batches.flat()) {
      const o = e.observation;
      observations.set(o.id!, {
        device: o.device!.reference!.slice('Device/'.length),
        patient: o.subject!.reference!.slice('Patient/'.length),
        at: Date.parse(o.effectiveDateTime!),
      });
    }
    const want = [...d.associationFacts]
      .sort((a, b) => a.device.localeCompare(b.device) || a.from - b.from)
      .map((f) => {
        const inPeriod = [...observations.values()].filter(
          (o) => o.device === f.device && o.at >= f.from && (f.to === undefined || o.at < f.to),
        );
        return {
          device: f.device.slice(4),
          patient_id: f.patient,
          valid_from: ms3(f.from),
          valid_to: f.to === undefined ? null : ms3(f.to),
          readings: inPeriod.length,
          on_another_patient: inPeriod.filter((o) => o.patient !== f.patient).length,
        };
      });
    expectRows(rows, want);
    // The planted facts: pat-z had mon-a without a reading; only the minutes the late
    // correction gave to pat-y hold readings charted on another patient (pat-c).
    expect(rows.find((r) => r.patient_id === 'pat-z')?.readings).toBe('0');
    const elsewhere = rows.filter((r) => r.on_another_patient !== '0');
    expect(elsewhere.map((r) => [r.device, r.patient_id])).toEqual([['mon-c', 'pat-y']]);
    expect(Number(elsewhere[0]!.on_another_patient)).toBeGreaterThan(0);
  },

  'charted-elsewhere': (d, rows) => {
    const observations = new Map<string, { device: string; patient: string; at: number }>();
    for (const e of d.batches.flat()) {
      const o = e.observation;
      observations.set(o.id!, {
        device: o.device!.reference!.slice('Device/'.length),
        patient: o.subject!.reference!.slice('Patient/'.length),
        at: Date.parse(o.effectiveDateTime!),
      });
    }
    const want = [...observations]
      .flatMap(([id, o]) => {
        const f = d.associationFacts.find(
          (a) => a.device === o.device && a.from <= o.at && (a.to === undefined || o.at < a.to),
        );
        return !f || f.patient !== o.patient
          ? [
              {
                id,
                patient_id: o.patient,
                associated: f?.patient ?? '',
                effective_start: ms3(o.at),
              },
            ]
          : [];
      })
      .sort(
        (a, b) => a.effective_start.localeCompare(b.effective_start) || a.id.localeCompare(b.id),
      );
    expectRows(rows, want);
    expect(new Set(rows.map((r) => `${String(r.patient_id)}→${String(r.associated)}`))).toEqual(
      new Set(['pat-c→pat-y']),
    );
  },

  'no-association': (d, rows) => {
    const held = d.messages.filter((m) => m.errorCode === 'NoPatientAssociated');
    const groups = groupBy(held, (m) => m.message.deviceId);
    const want = sorted(groups.keys()).map((device) => {
      const times = groups.get(device)!.map((m) => m.message.receivedAt);
      return {
        device,
        held: times.length,
        first_seen: ms3(Math.min(...times)),
        last_seen: ms3(Math.max(...times)),
      };
    });
    expectRows(rows, want);
    expect(rows.map((r) => [r.device, Number(r.held)])).toEqual([['mon-b', 2]]);
  },

  'messages-per-device': (d, rows) => {
    const groups = groupBy(d.messages, (m) => `dev-${m.message.deviceId}`);
    const want = sorted(groups.keys()).map((dev) => {
      const g = groups.get(dev)!;
      return {
        device_id: dev,
        messages: g.length,
        processed: g.filter((m) => m.outcome === 'processed').length,
        dead_lettered: g.filter((m) => m.outcome === 'dead_lettered').length,
        bytes: g.reduce((n, m) => n + Buffer.byteLength(m.message.payload), 0),
      };
    });
    expectRows(rows, want);
  },

  'corrected-observations': (d, rows) => expectCorrected(d, rows),
  'corrected-observations-argmax': (d, rows) => expectCorrected(d, rows),

  'waveform-per-second': (d, rows) => {
    const seconds = groupBy(
      d.ecg.values.map((v, i) => ({ v, t: d.ecg.start + i * d.ecg.periodMs })),
      (x) => String(Math.floor(x.t / 1000) * 1000),
    );
    const want = sorted(seconds.keys()).map((sec) => {
      const vs = seconds.get(sec)!.map((x) => x.v);
      return {
        observation_id: 'obs-pat-a-ecg-1',
        second: ms3(Number(sec)),
        samples: vs.length,
        min_mv: Math.min(...vs),
        max_mv: Math.max(...vs),
      };
    });
    expectRows(rows, want, 1e-9);
    expect(rows.reduce((n, r) => n + Number(r.samples), 0)).toBe(250);
  },

  'minute-trend': (d, rows) => {
    const low = d.points.filter(
      (p) => p.patient === 'pat-b' && p.code === LOINC.spo2 && p.value < 90,
    );
    expectRows(
      rows,
      low
        .sort((a, b) => a.at - b.at)
        .map((p) => ({
          minute: s0(p.at),
          count: 1,
          min: p.value,
          max: p.value,
          avg: p.value,
          last: p.value,
        })),
    );
    expect(rows).toHaveLength(8);
  },
};

function expectCorrected(d: Dataset, rows: Row[]): void {
  const p = d.points.find((x) => x.patient === 'pat-a' && x.code === LOINC.hr && x.value === 135)!;
  expectRows(rows, [
    {
      id: d.correctedObservationId,
      patient_id: 'pat-a',
      code: LOINC.hr,
      effective_start: ms3(p.at),
      value_num: 135,
      fhir_version_id: '2',
    },
  ]);
}
