import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { api, currentCsrfToken, errorText, when } from './api';
import { TextField } from './fields';

interface Row {
  code: string;
  t: number;
  min: number;
  max: number;
  avg: number;
  last: number;
  last_at: string;
  unit: string;
}

/** Alert ranges an operator expects to see marked (adult, at rest); a code not listed is not marked. */
const RANGES: Record<string, { name: string; low: number; high: number }> = {
  '8867-4': { name: 'Heart rate', low: 50, high: 120 },
  '59408-5': { name: 'SpO2', low: 92, high: 100 },
  '2708-6': { name: 'SpO2', low: 92, high: 100 },
  '9279-1': { name: 'Respiratory rate', low: 8, high: 25 },
  '8310-5': { name: 'Body temperature', low: 36, high: 38 },
  '8480-6': { name: 'Systolic BP', low: 90, high: 160 },
  '8462-4': { name: 'Diastolic BP', low: 50, high: 100 },
};
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const EVERY_MS = 2000;

function outOfRange(code: string, v: number): boolean {
  const r = RANGES[code];
  return r !== undefined && (v < r.low || v > r.high);
}

export function PatientPage({ patientId }: { patientId: string | undefined }) {
  const [input, setInput] = useState(patientId ?? '');
  const [rows, setRows] = useState<Row[]>([]);
  const [error, setError] = useState('');
  const [updated, setUpdated] = useState<number | undefined>();

  useEffect(() => {
    if (!patientId) return;
    if (!FHIR_ID.test(patientId)) {
      setError('A patient id is 1–64 letters, digits, "-" or ".".');
      return;
    }
    let stopped = false;
    // Opening a patient's chart shows patient data: it is audited like a reveal.
    void api('POST', '/console/api/reveal', { subject: patientId, what: 'vitals chart' }).catch(
      () => undefined,
    );
    const sql =
      'SELECT code, toUnixTimestamp(minute) AS t, min, max, avg, last, last_at, unit FROM vitals_1m ' +
      `WHERE patient_id = '${patientId}' AND minute >= toStartOfMinute(now() - INTERVAL 1 HOUR) ORDER BY code, minute`;
    const loop = async () => {
      while (!stopped) {
        try {
          const res = await fetch('/api/analytics/query', {
            method: 'POST',
            credentials: 'same-origin',
            headers: { 'content-type': 'application/json', 'x-csrf-token': currentCsrfToken() },
            body: JSON.stringify({ sql, format: 'JSONEachRow' }),
          });
          const text = await res.text();
          if (!res.ok) throw new Error(text.slice(0, 300));
          setRows(
            text
              .split('\n')
              .filter((l) => l.trim())
              .map((l) => {
                const r = JSON.parse(l) as Record<string, unknown>;
                return {
                  ...r,
                  t: Number(r.t),
                  min: Number(r.min),
                  max: Number(r.max),
                  avg: Number(r.avg),
                  last: Number(r.last),
                } as Row;
              }),
          );
          setUpdated(Date.now());
          setError('');
        } catch (e) {
          setError(errorText(e));
        }
        await new Promise((r) => setTimeout(r, EVERY_MS));
      }
    };
    void loop();
    return () => {
      stopped = true;
    };
  }, [patientId]);

  const codes = [...new Set(rows.map((r) => r.code))];
  return (
    <section>
      <h1>Patient vitals</h1>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          location.hash = `#/patient/${encodeURIComponent(input.trim())}`;
        }}
      >
        <TextField label="Patient id" name="patient" value={input} onValue={setInput} required />{' '}
        <button type="submit">Show vitals</button>
      </form>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      {patientId && (
        <p aria-live="polite">
          Last hour, per minute (ClickHouse rollup <code>vitals_1m</code>), updated every{' '}
          {EVERY_MS / 1000} s{updated ? `; last update ${when(updated)}` : ''}. Points outside the
          alert range are marked red; minutes without a reading are gaps.
        </p>
      )}
      {patientId && codes.length === 0 && !error && <p>No readings in the last hour.</p>}
      {codes.length > 0 && (
        <table class="latest">
          <caption>Latest reading per vital sign</caption>
          <thead>
            <tr>
              <th scope="col">Vital (LOINC)</th>
              <th scope="col">Latest</th>
              <th scope="col">At</th>
              <th scope="col">Alert range</th>
            </tr>
          </thead>
          <tbody>
            {codes.map((c) => {
              const last = rows.filter((r) => r.code === c).at(-1)!;
              const r = RANGES[c];
              const out = outOfRange(c, last.last);
              return (
                <tr key={c} data-code={c}>
                  <td>
                    {r?.name ?? c} ({c})
                  </td>
                  <td class={out ? 'diag latest-value' : 'latest-value'}>
                    {last.last} {last.unit}
                    {out ? ' (out of range)' : ''}
                  </td>
                  <td>{last.last_at}</td>
                  <td>{r ? `${r.low}–${r.high}` : '—'}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {codes.map((c) => (
        <Chart key={c} code={c} rows={rows.filter((r) => r.code === c)} />
      ))}
    </section>
  );
}

/** One vital over the last hour: a minute grid (null where no reading: a gap), out-of-range minutes as red points. */
function Chart({ code, rows }: { code: string; rows: Row[] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | undefined>(undefined);
  const data = (): uPlot.AlignedData => {
    const end = Math.floor(Date.now() / 60000) * 60;
    const xs: number[] = [];
    for (let t = end - 3600; t <= end; t += 60) xs.push(t);
    const byT = new Map(rows.map((r) => [r.t, r]));
    const avg = xs.map((t) => byT.get(t)?.avg ?? null);
    const out = xs.map((t) => {
      const r = byT.get(t);
      if (!r) return null;
      return outOfRange(code, r.min) ? r.min : outOfRange(code, r.max) ? r.max : null;
    });
    return [xs, avg, out];
  };
  useEffect(() => {
    if (!box.current) return;
    const r = RANGES[code];
    plot.current = new uPlot(
      {
        width: Math.min(900, box.current.clientWidth || 900),
        height: 200,
        title: `${r?.name ?? code} (${code})`,
        series: [
          {},
          { label: 'per-minute mean', stroke: '#1f4e79', width: 2, spanGaps: false },
          {
            label: 'out of range',
            stroke: '#c00',
            width: 0,
            points: { show: true, size: 8, fill: '#c00' },
          },
        ],
      },
      data(),
      box.current,
    );
    return () => plot.current?.destroy();
  }, [code]);
  useEffect(() => {
    plot.current?.setData(data());
  }, [rows]);
  return (
    <div
      ref={box}
      class="chart"
      role="img"
      aria-label={`${RANGES[code]?.name ?? code} over the last hour`}
    />
  );
}
