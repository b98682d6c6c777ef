import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Readiness {
  status: string;
  checks: Record<string, string>;
  templates?: { active?: string };
}

const QUEUES = ['ingest', 'fhir', 'analytics', 'dead-letter'];
const PENDING = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children'];
const EVERY_MS = 2000;
const KEEP = 150; // five minutes of samples

/** Prometheus text exposition → samples (comments skipped). */
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

const sum = (
  s: Sample[],
  name: string,
  where: (l: Record<string, string>) => boolean = () => true,
) => s.filter((x) => x.name === name && where(x.labels)).reduce((a, x) => a + x.value, 0);

/** A quantile from a cumulative histogram (the upper bound of the bucket it falls in). */
function quantile(s: Sample[], name: string, q: number): number | undefined {
  const buckets = s
    .filter((x) => x.name === `${name}_bucket`)
    .map((x) => ({ le: x.labels.le === '+Inf' ? Infinity : Number(x.labels.le), n: x.value }))
    .sort((a, b) => a.le - b.le);
  const total = buckets[buckets.length - 1]?.n ?? 0;
  if (total === 0) return undefined;
  return buckets.find((b) => b.n >= q * total)?.le;
}

function seconds(v: number | undefined): string {
  if (v === undefined) return '—';
  if (v === Infinity) return '> 60 s';
  return v < 1 ? `≤ ${Math.round(v * 1000)} ms` : `≤ ${v} s`;
}

export function PipelinePage() {
  const [samples, setSamples] = useState<Sample[]>([]);
  const [ready, setReady] = useState<Readiness | undefined>();
  const [rate, setRate] = useState<number | undefined>();
  const [error, setError] = useState('');
  const history = useRef<number[][]>([[], ...QUEUES.map(() => [])]);
  const last = useRef<{ at: number; received: number } | undefined>(undefined);
  const chartBox = useRef<HTMLDivElement>(null);
  const chart = useRef<uPlot | undefined>(undefined);

  useEffect(() => {
    let stopped = false;
    const tick = async () => {
      try {
        const [m, r] = await Promise.all([
          fetch('/metrics', { credentials: 'same-origin' }),
          fetch('/readyz', { credentials: 'same-origin' }),
        ]);
        if (m.status === 401) {
          setError('Signed out: reload the page.');
          return;
        }
        const s = parseMetrics(await m.text());
        const now = Date.now();
        const received = sum(s, 'iomt_messages_received_total');
        if (last.current)
          setRate(((received - last.current.received) * 1000) / (now - last.current.at));
        last.current = { at: now, received };
        setSamples(s);
        setReady((await r.json()) as Readiness);
        setError('');
        const h = history.current;
        h[0]!.push(now / 1000);
        QUEUES.forEach((q, i) =>
          h[i + 1]!.push(
            sum(s, 'iomt_queue_jobs', (l) => l.queue === q && PENDING.includes(l.state ?? '')),
          ),
        );
        for (const series of h) if (series.length > KEEP) series.shift();
        chart.current?.setData(h as uPlot.AlignedData);
      } catch (e) {
        setError(`The admin API does not answer: ${e instanceof Error ? e.message : String(e)}`);
      }
    };
    const loop = async () => {
      while (!stopped) {
        await tick();
        await new Promise((r) => setTimeout(r, EVERY_MS));
      }
    };
    void loop();
    return () => {
      stopped = true;
    };
  }, []);

  useEffect(() => {
    if (!chartBox.current) return;
    chart.current = new uPlot(
      {
        width: Math.min(900, chartBox.current.clientWidth || 900),
        height: 220,
        title: 'Queue depth (jobs pending), last 5 minutes',
        series: [
          {},
          ...QUEUES.map((q, i) => ({
            label: q,
            stroke: ['#1f4e79', '#b34700', '#2e7d32', '#8b1a1a'][i],
            width: 2,
          })),
        ],
        axes: [{}, { label: 'jobs' }],
      },
      history.current as uPlot.AlignedData,
      chartBox.current,
    );
    return () => chart.current?.destroy();
  }, []);

  const paused = sum(samples, 'iomt_broker_paused');
  const errors = samples.filter((x) => x.name === 'iomt_errors_total' && x.value > 0);
  const templates = samples.filter((x) => x.name === 'iomt_template_messages_total' && x.value > 0);
  return (
    <section>
      <h1>Pipeline</h1>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <div class="tiles">
        <p>
          Messages received:{' '}
          <strong class="rate">{rate === undefined ? '—' : `${rate.toFixed(1)}/s`}</strong>
        </p>
        <p>
          Backpressure:{' '}
          <strong class="backpressure">
            {paused > 0 ? 'ON: brokers are metering PUBLISHes' : 'off'}
          </strong>
        </p>
        <p>
          Receipt to FHIR: p50{' '}
          <strong>{seconds(quantile(samples, 'iomt_receipt_to_fhir_seconds', 0.5))}</strong>, p99{' '}
          <strong>{seconds(quantile(samples, 'iomt_receipt_to_fhir_seconds', 0.99))}</strong> (since
          this process started)
        </p>
        <p>
          Active templates: <code>{ready?.templates?.active ?? '—'}</code>
        </p>
      </div>
      <h2>Readiness</h2>
      <table class="readiness">
        <caption class="sr-only">Readiness of each dependency</caption>
        <thead>
          <tr>
            <th scope="col">Dependency</th>
            <th scope="col">State</th>
          </tr>
        </thead>
        <tbody>
          {Object.entries(ready?.checks ?? {}).map(([name, state]) => (
            <tr key={name} data-check={name}>
              <td>{name}</td>
              <td class={state === 'ok' ? 'ok' : 'diag'}>{state}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Queues</h2>
      <div
        ref={chartBox}
        class="chart"
        role="img"
        aria-label="Queue depth over the last five minutes, per queue"
      />
      <table class="queues">
        <caption class="sr-only">Jobs per queue and state now</caption>
        <thead>
          <tr>
            <th scope="col">Queue</th>
            <th scope="col">Waiting</th>
            <th scope="col">Active</th>
            <th scope="col">Delayed (retrying)</th>
            <th scope="col">Pending in all</th>
          </tr>
        </thead>
        <tbody>
          {QUEUES.map((q) => {
            const of = (state: string) =>
              sum(samples, 'iomt_queue_jobs', (l) => l.queue === q && l.state === state);
            return (
              <tr key={q} data-queue={q}>
                <td>{q}</td>
                <td>{of('waiting')}</td>
                <td>{of('active')}</td>
                <td>{of('delayed')}</td>
                <td class="depth">
                  {sum(
                    samples,
                    'iomt_queue_jobs',
                    (l) => l.queue === q && PENDING.includes(l.state ?? ''),
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <h2>Errors by code</h2>
      {errors.length === 0 ? (
        <p>None since this process started.</p>
      ) : (
        <table>
          <caption class="sr-only">Errors by code and stage since this process started</caption>
          <thead>
            <tr>
              <th scope="col">Code</th>
              <th scope="col">Stage</th>
              <th scope="col">Count</th>
            </tr>
          </thead>
          <tbody>
            {errors.map((e) => (
              <tr key={`${e.labels.code}-${e.labels.stage}`}>
                <td>
                  <a href={`#/dead-letters`}>{e.labels.code}</a>
                </td>
                <td>{e.labels.stage}</td>
                <td>{e.value}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h2>Templates</h2>
      <table>
        <caption class="sr-only">Messages per device template, version and outcome</caption>
        <thead>
          <tr>
            <th scope="col">Template</th>
            <th scope="col">Version</th>
            <th scope="col">Outcome</th>
            <th scope="col">Messages</th>
          </tr>
        </thead>
        <tbody>
          {templates.map((t) => (
            <tr key={`${t.labels.template}-${t.labels.version}-${t.labels.outcome}`}>
              <td>{t.labels.template}</td>
              <td>{t.labels.version}</td>
              <td>{t.labels.outcome}</td>
              <td>{t.value}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
