import { useEffect, useState } from 'preact/hooks';
import { api, errorText, when } from './api';
import { TextField } from './fields';

interface Summary {
  id: string;
  failedAt: number;
  stage: string;
  code: string;
  deviceId: string;
  reason: string;
  holds: string;
  traceId: string;
}
interface Listing {
  total: number;
  byCode: Record<string, number>;
  entries: Summary[];
}
interface Entry {
  id: string;
  failedAt: number;
  stage: string;
  code: string;
  reason: string;
  deviceId: string;
  traceId: string;
  message?: {
    id: string;
    topic: string;
    receivedAt: number;
    payload: string;
    encoding: 'utf8' | 'base64';
  };
  observation?: unknown;
  associations?: string[];
}
interface ReplayResult {
  replayed: number;
  byStage: Record<string, number>;
  skipped: { id: string; why: string }[];
}
interface ItemResult {
  id: string;
  outcome: string;
}

const STAGES = ['', 'broker', 'normalize', 'fhir', 'analytics'];

function toBase64(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function DeadLettersPage({ selected }: { selected: string | undefined }) {
  const [code, setCode] = useState('');
  const [device, setDevice] = useState('');
  const [stage, setStage] = useState('');
  const [since, setSince] = useState('');
  const [until, setUntil] = useState('');
  const [listing, setListing] = useState<Listing | undefined>();
  const [error, setError] = useState('');
  const [results, setResults] = useState<ItemResult[]>([]);
  const [progress, setProgress] = useState('');
  const [confirmPurge, setConfirmPurge] = useState(false);

  const filter = () => ({
    ...(code ? { code } : {}),
    ...(device ? { device } : {}),
    ...(stage ? { stage } : {}),
    ...(since.trim() ? { since: since.trim() } : {}),
    ...(until.trim() ? { until: until.trim() } : {}),
  });

  const load = async () => {
    setError('');
    try {
      setListing(await api<Listing>('GET', `/api/dlq?${new URLSearchParams(filter()).toString()}`));
    } catch (e) {
      setError(errorText(e));
    }
  };
  useEffect(() => {
    void load();
  }, [code, stage]);

  const replayEach = async (ids: string[]) => {
    const out: ItemResult[] = [];
    setResults([]);
    for (const [i, id] of ids.entries()) {
      setProgress(`Replaying ${i + 1} of ${ids.length}…`);
      try {
        const r = await api<ReplayResult>('POST', '/api/dlq/replay', { ids: [id] });
        const skip = r.skipped.find((s) => s.id === id);
        out.push({
          id,
          outcome: skip
            ? `skipped: ${skip.why}`
            : `replayed into ${Object.entries(r.byStage)
                .filter(([, n]) => n > 0)
                .map(([s]) => s)
                .join(', ')}`,
        });
      } catch (e) {
        out.push({ id, outcome: `failed: ${errorText(e)}` });
      }
      setResults([...out]);
    }
    setProgress(
      `Replayed ${out.filter((r) => r.outcome.startsWith('replayed')).length} of ${ids.length}.`,
    );
    await load();
  };

  const purge = async (ids: string[]) => {
    setConfirmPurge(false);
    try {
      const r = await api<{ purged: number }>('POST', '/api/dlq/purge', { ids });
      setProgress(`Purged ${r.purged} dead letter(s).`);
      setResults([]);
      if (selected && ids.includes(selected)) location.hash = '#/dead-letters';
    } catch (e) {
      setError(errorText(e));
    }
    await load();
  };

  const ids = listing?.entries.map((e) => e.id) ?? [];
  return (
    <section>
      <h1>Dead letters</h1>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <div class="counts" aria-label="Dead letters by code">
        <h2>By code</h2>
        <ul>
          {Object.entries(listing?.byCode ?? {}).map(([c, n]) => (
            <li key={c}>
              <button
                type="button"
                aria-pressed={code === c}
                onClick={() => setCode(code === c ? '' : c)}
              >
                {c}: <span class="count">{n}</span>
              </button>
            </li>
          ))}
          {listing && Object.keys(listing.byCode).length === 0 && (
            <li>None: nothing has failed.</li>
          )}
        </ul>
      </div>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          void load();
        }}
      >
        <TextField label="Code" name="code" value={code} onValue={setCode} />
        <TextField label="Device" name="device" value={device} onValue={setDevice} />
        <label>
          Stage
          <select name="stage" value={stage} onChange={(e) => setStage(e.currentTarget.value)}>
            {STAGES.map((s) => (
              <option key={s} value={s}>
                {s || 'any'}
              </option>
            ))}
          </select>
        </label>
        <TextField label="Failed since" name="since" value={since} onValue={setSince} />
        <TextField label="Failed before" name="until" value={until} onValue={setUntil} />
        <button type="submit">Filter</button>
        <p class="hint">
          Times: ISO 8601 (2026-12-04T03:00:00Z) or a span back from now: 15m, 2h, 7d.
        </p>
      </form>
      <div class="actions">
        <p aria-live="polite">
          {listing ? `${listing.total} dead letter(s) match.` : ''} {progress}
        </p>
        <button type="button" disabled={ids.length === 0} onClick={() => void replayEach(ids)}>
          Replay all {ids.length} shown
        </button>{' '}
        <button
          type="button"
          class="danger"
          disabled={ids.length === 0}
          onClick={() => setConfirmPurge(true)}
        >
          Purge all {ids.length} shown…
        </button>
        {confirmPurge && (
          <div role="alertdialog" aria-labelledby="purge-q" class="confirm">
            <p id="purge-q">
              Purge {ids.length} dead letter(s) for good? Their raw payloads are deleted and cannot
              be replayed.
            </p>
            <button type="button" class="danger" onClick={() => void purge(ids)}>
              Purge {ids.length}
            </button>{' '}
            <button type="button" onClick={() => setConfirmPurge(false)}>
              Cancel
            </button>
          </div>
        )}
      </div>
      {results.length > 0 && (
        <table class="results">
          <caption>Replay results</caption>
          <thead>
            <tr>
              <th scope="col">Dead letter</th>
              <th scope="col">Result</th>
            </tr>
          </thead>
          <tbody>
            {results.map((r) => (
              <tr key={r.id}>
                <td>{r.id}</td>
                <td class="result">{r.outcome}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <table class="list">
        <caption class="sr-only">Dead letters, oldest first</caption>
        <thead>
          <tr>
            <th scope="col">Failed at</th>
            <th scope="col">Code</th>
            <th scope="col">Stage</th>
            <th scope="col">Device</th>
            <th scope="col">Reason</th>
            <th scope="col">Holds</th>
          </tr>
        </thead>
        <tbody>
          {listing?.entries.map((d) => (
            <tr key={d.id} class={d.id === selected ? 'selected' : ''}>
              <td>
                <a href={`#/dead-letters/${encodeURIComponent(d.id)}`}>{when(d.failedAt)}</a>
              </td>
              <td>{d.code}</td>
              <td>{d.stage}</td>
              <td>{d.deviceId}</td>
              <td class="reason">{d.reason}</td>
              <td>{d.holds}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {selected && (
        <DeadLetter
          id={selected}
          onReplay={() => void replayEach([selected])}
          onPurge={() => void purge([selected])}
        />
      )}
    </section>
  );
}

function DeadLetter({
  id,
  onReplay,
  onPurge,
}: {
  id: string;
  onReplay: () => void;
  onPurge: () => void;
}) {
  const [entry, setEntry] = useState<Entry | undefined>();
  const [error, setError] = useState('');
  const [view, setView] = useState<'text' | 'base64'>('text');
  const [confirm, setConfirm] = useState(false);
  useEffect(() => {
    setEntry(undefined);
    setError('');
    api<Entry>('GET', `/api/dlq/${encodeURIComponent(id)}`)
      .then((e) => {
        setEntry(e);
        setView(e.message?.encoding === 'base64' ? 'base64' : 'text');
      })
      .catch((e: unknown) => setError(errorText(e)));
  }, [id]);
  if (error)
    return (
      <p role="alert" class="error">
        {error}
      </p>
    );
  if (!entry) return <p>Loading {id}…</p>;
  const m = entry.message;
  const payload =
    m === undefined
      ? ''
      : view === 'base64'
        ? m.encoding === 'base64'
          ? m.payload
          : toBase64(m.payload)
        : m.encoding === 'base64'
          ? '(binary: not valid UTF-8; see the base64 view)'
          : m.payload;
  return (
    <article class="detail" aria-labelledby="dl-title">
      <h2 id="dl-title">Dead letter {entry.id}</h2>
      <dl>
        <dt>Code</dt>
        <dd>{entry.code}</dd>
        <dt>Stage</dt>
        <dd>{entry.stage}</dd>
        <dt>Reason</dt>
        <dd class="reason">{entry.reason}</dd>
        <dt>Device</dt>
        <dd>{entry.deviceId}</dd>
        <dt>Failed at</dt>
        <dd>{when(entry.failedAt)}</dd>
        <dt>Trace</dt>
        <dd>{entry.traceId}</dd>
        {m && (
          <>
            <dt>Received</dt>
            <dd>
              {when(m.receivedAt)} on {m.topic}
            </dd>
          </>
        )}
      </dl>
      {m && (
        <>
          <fieldset>
            <legend>Payload view</legend>
            <label>
              <input
                type="radio"
                name="view"
                checked={view === 'text'}
                onChange={() => setView('text')}
              />{' '}
              Text
            </label>
            <label>
              <input
                type="radio"
                name="view"
                checked={view === 'base64'}
                onChange={() => setView('base64')}
              />{' '}
              Base64
            </label>
          </fieldset>
          <pre class="payload" tabIndex={0} aria-label="Raw payload">
            {payload}
          </pre>
          <p>
            <a href={`#/workbench/${encodeURIComponent(entry.id)}`}>
              Open in the mapping workbench
            </a>
          </p>
        </>
      )}
      {entry.observation !== undefined && (
        <pre class="payload" tabIndex={0} aria-label="Observation">
          {JSON.stringify(entry.observation, null, 2)}
        </pre>
      )}
      <button type="button" onClick={onReplay}>
        Replay this dead letter
      </button>{' '}
      <button type="button" class="danger" onClick={() => setConfirm(true)}>
        Purge…
      </button>
      {confirm && (
        <div role="alertdialog" aria-labelledby="purge-one" class="confirm">
          <p id="purge-one">Purge this dead letter for good?</p>
          <button type="button" class="danger" onClick={onPurge}>
            Purge it
          </button>{' '}
          <button type="button" onClick={() => setConfirm(false)}>
            Cancel
          </button>
        </div>
      )}
    </article>
  );
}
