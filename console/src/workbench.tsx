import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, errorText, when } from './api';
import { TextField, Checkbox } from './fields';

interface SourceFile {
  file: string;
  kind?: string;
  text: string;
}
interface Stored {
  files: SourceFile[];
  fixtures: unknown[];
}
interface Validation {
  ok: boolean;
  version?: string;
  problems: string[];
  notes: string[];
}
interface Issue {
  severity: string;
  code?: string;
  diagnostics?: string;
  expression?: string[];
}
interface DebugResult {
  ok: boolean;
  problems?: string[];
  version?: string;
  templates?: {
    template: string;
    file: string;
    matched: number;
    expressions: { field: string; value: unknown }[];
  }[];
  measurements?: unknown;
  observations?: Record<string, unknown>[];
  validations?: ({ issue?: Issue[] } | { unavailable: { code: string; message: string } })[];
  error?: { code: string; message: string };
  /** This input with this output, as a fixture of `iomt mappings test`. */
  fixture?: Fixture;
}
interface Fixture {
  name: string;
  settings: { deviceId: string; receivedAt: string };
  message: string;
  expectedError?: string;
}
interface RecentMessage {
  id: string;
  receivedAt: number;
  encoding: string;
  payload: string;
  outcome: string;
  errorCode?: string;
  templateVersion: string;
}
interface ShadowRun {
  passed: boolean;
  refusals: string[];
  lines: string[];
}
interface DeadLetter {
  id: string;
  deviceId: string;
  code: string;
  reason: string;
  message?: { payload: string; encoding: string; receivedAt: number };
}

/** `device/vitals.json:12:5: …` → the line and column a diagnostic names in `file`. */
function position(problem: string, file: string): { line: number; column: number } | undefined {
  const m = new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:(\\d+):(\\d+)`).exec(
    problem,
  );
  return m ? { line: Number(m[1]), column: Number(m[2]) } : undefined;
}

function offsetOf(text: string, line: number, column: number): number {
  const lines = text.split('\n');
  let at = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) at += (lines[i]?.length ?? 0) + 1;
  return at + Math.max(0, column - 1);
}

function errorsOf(
  v: DebugResult['validations'] extends (infer T)[] | undefined ? T : never,
): Issue[] {
  return 'issue' in v
    ? (v.issue ?? []).filter((i) => i.severity === 'error' || i.severity === 'fatal')
    : [];
}

export function WorkbenchPage({
  deadLetterId,
  actor,
}: {
  deadLetterId: string | undefined;
  actor: string;
}) {
  const [active, setActive] = useState<string | undefined>();
  const [files, setFiles] = useState<SourceFile[]>([]);
  const [fixtures, setFixtures] = useState<Fixture[]>([]);
  const [fixtureName, setFixtureName] = useState('');
  const [saved, setSaved] = useState('');
  const [recent, setRecent] = useState<RecentMessage[] | undefined>();
  const [shadow, setShadow] = useState<ShadowRun | undefined>();
  const [shadowing, setShadowing] = useState(false);
  const [current, setCurrent] = useState('');
  const [validation, setValidation] = useState<Validation | undefined>();
  const [error, setError] = useState('');
  const [deadLetter, setDeadLetter] = useState<DeadLetter | undefined>();
  const [payload, setPayload] = useState(
    '{\n  "timestamp": "2026-01-01T00:00:00Z",\n  "heartRate": 72\n}',
  );
  const [deviceId, setDeviceId] = useState('debug-device');
  const [receivedAt, setReceivedAt] = useState<number | undefined>();
  const [result, setResult] = useState<DebugResult | undefined>();
  const [running, setRunning] = useState(false);
  const [note, setNote] = useState('');
  const [acceptChanges, setAcceptChanges] = useState(false);
  const [proposed, setProposed] = useState<string | undefined>();
  const [diff, setDiff] = useState<unknown>();
  const [lifecycle, setLifecycle] = useState<
    { text: string; ok: boolean; detail?: unknown } | undefined
  >();
  const editor = useRef<HTMLTextAreaElement>(null);

  const loadActive = async () => {
    const v = await api<{ active: string | null }>('GET', '/api/mappings/versions');
    setActive(v.active ?? undefined);
    if (!v.active) return;
    const stored = await api<Stored>(
      'GET',
      `/api/mappings/versions/${encodeURIComponent(v.active)}`,
    );
    setFiles(stored.files.map((f) => ({ file: f.file, text: f.text })));
    setFixtures(stored.fixtures as Fixture[]);
    setCurrent((c) => c || stored.files[0]?.file || '');
  };
  useEffect(() => {
    loadActive().catch((e: unknown) => setError(errorText(e)));
  }, []);
  useEffect(() => {
    if (!deadLetterId) return;
    api<DeadLetter>('GET', `/api/dlq/${encodeURIComponent(deadLetterId)}`)
      .then((d) => {
        setDeadLetter(d);
        setDeviceId(d.deviceId);
        if (d.message) {
          setPayload(d.message.encoding === 'base64' ? atob(d.message.payload) : d.message.payload);
          setReceivedAt(d.message.receivedAt);
        }
      })
      .catch((e: unknown) => setError(errorText(e)));
  }, [deadLetterId]);

  // Inline diagnostics: the templates are validated as they are edited (what `iomt mappings validate` says).
  useEffect(() => {
    if (files.length === 0) return;
    const t = setTimeout(() => {
      api<Validation>('POST', '/api/mappings/validate', { files })
        .then(setValidation)
        .catch((e: unknown) => setError(errorText(e)));
    }, 300);
    return () => clearTimeout(t);
  }, [files]);

  const text = files.find((f) => f.file === current)?.text ?? '';
  const edit = (value: string) => {
    setFiles(files.map((f) => (f.file === current ? { ...f, text: value } : f)));
    setProposed(undefined);
    setDiff(undefined);
    setShadow(undefined);
  };
  const jump = (p: string) => {
    const file = files.find((f) => p.startsWith(f.file))?.file;
    if (!file) return;
    setCurrent(file);
    const pos = position(p, file);
    setTimeout(() => {
      const el = editor.current;
      if (!el || !pos) return;
      const at = offsetOf(el.value, pos.line, pos.column);
      el.focus();
      el.setSelectionRange(at, at + 1);
    }, 0);
  };

  const run = async () => {
    setRunning(true);
    setError('');
    try {
      setResult(
        await api<DebugResult>('POST', '/api/mappings/debug', {
          files,
          message: { payload, deviceId, ...(receivedAt ? { receivedAt } : {}) },
          validate: true,
        }),
      );
    } catch (e) {
      setError(errorText(e));
    } finally {
      setRunning(false);
    }
  };

  const loadRecent = async () => {
    setError('');
    try {
      setRecent(
        (
          await api<{ messages: RecentMessage[] }>(
            'GET',
            `/api/devices/${encodeURIComponent(deviceId)}/messages?limit=10`,
          )
        ).messages,
      );
    } catch (e) {
      setError(errorText(e));
    }
  };
  const takeRecent = (id: string) => {
    const m = recent?.find((r) => r.id === id);
    if (!m) return;
    setDeadLetter(undefined);
    setPayload(m.encoding === 'base64' ? atob(m.payload) : m.payload);
    setReceivedAt(m.receivedAt);
  };

  // The input and what the edited templates made of it join the candidate's fixtures.
  const saveFixture = () => {
    const f = result?.fixture;
    if (!f) return;
    const name = (fixtureName.trim() || f.name).replace(/[^A-Za-z0-9._-]/g, '-');
    setFixtures([...fixtures.filter((x) => x.name !== name), { ...f, name }]);
    setSaved(
      `Saved fixture ${name} (${f.expectedError ? `refused with ${f.expectedError}` : 'with its measurements and Observations'}): it is proposed with these templates and every activation tests it.`,
    );
    setProposed(undefined);
    setShadow(undefined);
  };

  const shadowRun = async () => {
    if (!proposed) return;
    setShadowing(true);
    try {
      setShadow(
        await api<ShadowRun>('POST', '/api/mappings/shadow-run', {
          version: proposed,
          acceptChanges,
        }),
      );
    } catch (e) {
      setShadow({ passed: false, refusals: [errorText(e)], lines: [] });
    } finally {
      setShadowing(false);
    }
  };

  const propose = async () => {
    setLifecycle(undefined);
    setShadow(undefined);
    try {
      const r = await api<{ version: string; created: boolean }>('POST', '/api/mappings/propose', {
        files,
        fixtures,
        actor,
        ...(note ? { note } : {}),
      });
      setProposed(r.version);
      setLifecycle({
        ok: true,
        text: `Proposed version ${r.version}${r.created ? '' : ' (already stored)'}.`,
      });
      if (active)
        setDiff(
          await api(
            'GET',
            `/api/mappings/diff?a=${encodeURIComponent(active)}&b=${encodeURIComponent(r.version)}`,
          ),
        );
    } catch (e) {
      setLifecycle({ ok: false, text: errorText(e) });
    }
  };
  const activate = async () => {
    if (!proposed) return;
    try {
      const r = await api<{ outcome: string; to: string; report?: unknown }>(
        'POST',
        '/api/mappings/activate',
        {
          version: proposed,
          actor,
          acceptChanges,
          ...(note ? { note } : {}),
        },
      );
      setLifecycle({
        ok: true,
        text: `Version ${r.to}: ${r.outcome}. Workers switch to it within seconds.`,
        detail: r.report,
      });
      await loadActive();
    } catch (e) {
      const detail =
        e instanceof ApiError
          ? (e.body as { result?: { report?: unknown } }).result?.report
          : undefined;
      setLifecycle({ ok: false, text: `Refused by the gates: ${errorText(e)}`, detail });
    }
  };
  const rollback = async () => {
    try {
      const r = await api<{ outcome: string; to: string }>('POST', '/api/mappings/rollback', {
        actor,
        ...(note ? { note } : {}),
      });
      setLifecycle({ ok: true, text: `Rolled back: version ${r.to} is active.` });
      setProposed(undefined);
      await loadActive();
    } catch (e) {
      setLifecycle({ ok: false, text: errorText(e) });
    }
  };

  const currentProblems = (validation?.problems ?? []).filter((p) => p.startsWith(current));
  return (
    <section class="workbench">
      <h1>Mapping workbench</h1>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <p>
        Active version: <code>{active ?? 'none'}</code>
      </p>
      <div class="grid2">
        <div>
          <h2>Templates</h2>
          <label>
            Template file
            <select name="file" value={current} onChange={(e) => setCurrent(e.currentTarget.value)}>
              {files.map((f) => (
                <option key={f.file} value={f.file}>
                  {f.file}
                </option>
              ))}
            </select>
          </label>
          <label>
            Template text
            <textarea
              ref={editor}
              name="template"
              spellcheck={false}
              value={text}
              aria-invalid={currentProblems.length > 0}
              aria-describedby="diagnostics"
              onInput={(e) => edit(e.currentTarget.value)}
            />
          </label>
          <div id="diagnostics" role="status" aria-live="polite" class="diagnostics">
            {validation?.ok && (
              <p class="ok">The templates validate (version {validation.version}).</p>
            )}
            {validation && !validation.ok && (
              <ul>
                {validation.problems.map((p) => (
                  <li key={p} class="diag">
                    <button type="button" class="small" onClick={() => jump(p)}>
                      Go to
                    </button>{' '}
                    {p}
                  </li>
                ))}
              </ul>
            )}
          </div>
        </div>
        <div>
          <h2>Input</h2>
          {deadLetter ? (
            <p>
              Dead letter <code>{deadLetter.id}</code>: {deadLetter.code} — {deadLetter.reason}
              {receivedAt ? ` (received ${when(receivedAt)})` : ''}
            </p>
          ) : (
            <p>
              Paste a message, or open a dead letter from the{' '}
              <a href="#/dead-letters">dead letters</a> page.
            </p>
          )}
          <TextField label="Device id" name="debug-device" value={deviceId} onValue={setDeviceId} />
          <button type="button" onClick={() => void loadRecent()}>
            Recent messages of this device
          </button>
          {recent && recent.length === 0 && <p>No message of {deviceId} in device_messages.</p>}
          {recent && recent.length > 0 && (
            <label>
              Recent message
              <select name="recent" onChange={(e) => takeRecent(e.currentTarget.value)} value="">
                <option value="">choose one of {recent.length}…</option>
                {recent.map((m) => (
                  <option key={m.id} value={m.id}>
                    {when(m.receivedAt)} — {m.outcome}
                    {m.errorCode ? ` (${m.errorCode})` : ''}
                  </option>
                ))}
              </select>
            </label>
          )}
          <label>
            Message
            <textarea
              name="message"
              spellcheck={false}
              value={payload}
              onInput={(e) => setPayload(e.currentTarget.value)}
            />
          </label>
          <button type="button" onClick={() => void run()} disabled={running || files.length === 0}>
            Run the templates on this message
          </button>
        </div>
      </div>
      {result && <DebugView result={result} />}
      {result?.fixture && (
        <div class="fixture">
          <TextField
            label="Fixture name"
            name="fixture-name"
            value={fixtureName}
            onValue={setFixtureName}
          />
          <button type="button" onClick={saveFixture}>
            Save this input and its output as a fixture
          </button>
          <p role="status" class="fixture-saved">
            {saved}
          </p>
        </div>
      )}
      <h2>Propose, activate, roll back</h2>
      <div class="lifecycle">
        <TextField
          label="Note for the audit"
          name="lifecycle-note"
          value={note}
          onValue={setNote}
        />
        <button type="button" onClick={() => void propose()} disabled={!validation?.ok}>
          Propose these templates
        </button>{' '}
        <Checkbox
          label="Accept changed Observations in the shadow run"
          name="accept-changes"
          checked={acceptChanges}
          onChecked={setAcceptChanges}
        />
        <button type="button" onClick={() => void shadowRun()} disabled={!proposed || shadowing}>
          {shadowing ? 'Running the shadow run…' : 'Run the gates and the shadow run'}
        </button>{' '}
        <button type="button" onClick={() => void activate()} disabled={!proposed}>
          Activate {proposed ? `version ${proposed}` : ''} through the gates
        </button>{' '}
        <button type="button" onClick={() => void rollback()}>
          Roll back to the previous version
        </button>
      </div>
      {shadow && (
        <section class={shadow.passed ? 'ok-box' : 'error-box'} aria-labelledby="shadow-title">
          <h3 id="shadow-title">Shadow-run report (before activation)</h3>
          <p class="shadow-verdict">
            {shadow.passed
              ? 'The gates pass: this version may be activated.'
              : `The gates refuse it: ${shadow.refusals.join('; ')}`}
          </p>
          <pre class="payload shadow-report" tabIndex={0} aria-label="Shadow-run report">
            {shadow.lines.join('\n')}
          </pre>
        </section>
      )}
      {lifecycle && (
        <div role="status" class={lifecycle.ok ? 'ok-box' : 'error-box'}>
          <p class="lifecycle-result">{lifecycle.text}</p>
          {lifecycle.detail !== undefined && (
            <details>
              <summary>Gate report</summary>
              <pre class="payload">{JSON.stringify(lifecycle.detail, null, 2)}</pre>
            </details>
          )}
        </div>
      )}
      {diff !== undefined && (
        <details>
          <summary>Difference from the active version</summary>
          <pre class="payload">{JSON.stringify(diff, null, 2)}</pre>
        </details>
      )}
    </section>
  );
}

function DebugView({ result }: { result: DebugResult }) {
  if (result.problems)
    return (
      <div role="alert" class="error">
        The templates do not compile: {result.problems.join('; ')}
      </div>
    );
  return (
    <section class="debug" aria-labelledby="debug-title">
      <h2 id="debug-title">Result</h2>
      {result.error ? (
        <p class="error debug-error">
          Refused: {result.error.code} — {result.error.message}
        </p>
      ) : (
        <p class="ok debug-ok">
          Mapped: {result.observations?.length ?? 0} Observation(s) with version {result.version}.
        </p>
      )}
      <h3>Device templates</h3>
      <ul>
        {(result.templates ?? []).map((t) => (
          <li key={t.file + t.template}>
            {t.matched > 0 ? '✔' : '✘'} {t.template} ({t.file}):{' '}
            {t.matched > 0 ? `matched ${t.matched} time(s)` : 'no match'}
            {t.expressions.length > 0 && (
              <ul>
                {t.expressions.map((x, i) => (
                  <li key={i}>
                    {x.field} = <code>{JSON.stringify(x.value)}</code>
                  </li>
                ))}
              </ul>
            )}
          </li>
        ))}
      </ul>
      {result.measurements !== undefined && (
        <details>
          <summary>Measurements</summary>
          <pre class="payload">{JSON.stringify(result.measurements, null, 2)}</pre>
        </details>
      )}
      {(result.observations ?? []).map((o, i) => {
        const v = result.validations?.[i];
        const errors = v ? errorsOf(v) : [];
        return (
          <article key={i} class="observation" aria-label={`Observation ${i + 1}`}>
            <h3>Observation {i + 1}</h3>
            <p class="validate-result">
              {v === undefined
                ? '$validate: not run'
                : 'unavailable' in v
                  ? `$validate: the FHIR server did not answer (${v.unavailable.code})`
                  : errors.length === 0
                    ? `$validate: valid (${(v.issue ?? []).length} issue(s), none an error)`
                    : `$validate: ${errors.length} error(s)`}
            </p>
            {errors.length > 0 && (
              <ul>
                {errors.map((e, j) => (
                  <li key={j} class="diag">
                    {e.diagnostics} {e.expression?.join(', ')}
                  </li>
                ))}
              </ul>
            )}
            <pre class="payload" tabIndex={0} aria-label={`Observation ${i + 1} JSON`}>
              {JSON.stringify(o, null, 2)}
            </pre>
          </article>
        );
      })}
    </section>
  );
}
