import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, errorText, setCsrfToken, whenSignedOut } from './api';
import { AuditPage } from './audit';
import { DeadLettersPage } from './dead-letters';
import { DevicesPage } from './devices';
import { PatientPage } from './patient';
import { PipelinePage } from './pipeline';
import { WorkbenchPage } from './workbench';
import { TextField } from './fields';

interface Session {
  actor: string;
  csrfToken: string;
  idleMs: number;
}

const PAGES = [
  ['pipeline', 'Pipeline'],
  ['dead-letters', 'Dead letters'],
  ['devices', 'Devices'],
  ['workbench', 'Mapping workbench'],
  ['patient', 'Patient vitals'],
  ['audit', 'Audit'],
] as const;
type Page = (typeof PAGES)[number][0];

function route(): { page: Page; arg: string | undefined } {
  const [page, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const known = PAGES.find(([p]) => p === page);
  return {
    page: known ? known[0] : 'dead-letters',
    arg: rest.length ? decodeURIComponent(rest.join('/')) : undefined,
  };
}

export function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [where, setWhere] = useState(route());

  useEffect(() => {
    whenSignedOut(() => setSession(null));
    api<Session>('GET', '/console/api/session')
      .then((s) => {
        setCsrfToken(s.csrfToken);
        setSession(s);
      })
      .catch(() => setSession(null));
    const onHash = () => setWhere(route());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    const title = PAGES.find(([p]) => p === where.page)?.[1] ?? '';
    document.title = `${title} · IoMT operator console`;
  }, [where.page]);

  if (session === undefined)
    return (
      <main>
        <p>Loading…</p>
      </main>
    );
  if (session === null)
    return (
      <SignIn
        onSignedIn={(s) => {
          setCsrfToken(s.csrfToken);
          setSession(s);
        }}
      />
    );

  const signOut = async () => {
    await api('DELETE', '/console/api/session').catch(() => undefined);
    setCsrfToken('');
    setSession(null);
  };

  return (
    <>
      <header class="top">
        <span class="brand">IoMT operator console</span>
        <nav aria-label="Pages">
          <ul>
            {PAGES.map(([p, label]) => (
              <li key={p}>
                <a href={`#/${p}`} aria-current={where.page === p ? 'page' : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <span class="who">
          Signed in as <strong>{session.actor}</strong>{' '}
          <button type="button" onClick={() => void signOut()}>
            Sign out
          </button>
        </span>
      </header>
      <main>
        {where.page === 'pipeline' && <PipelinePage />}
        {where.page === 'dead-letters' && <DeadLettersPage selected={where.arg} />}
        {where.page === 'devices' && <DevicesPage selected={where.arg} actor={session.actor} />}
        {where.page === 'workbench' && (
          <WorkbenchPage deadLetterId={where.arg} actor={session.actor} />
        )}
        {where.page === 'patient' && <PatientPage patientId={where.arg} />}
        {where.page === 'audit' && <AuditPage />}
      </main>
    </>
  );
}

function SignIn({ onSignedIn }: { onSignedIn: (s: Session) => void }) {
  const [name, setName] = useState('');
  const [token, setToken] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      onSignedIn(await api<Session>('POST', '/console/api/session', { token, name }));
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? 'Sign-in refused: the admin token is not right.'
          : err instanceof ApiError && err.status === 429
            ? `Sign-in refused: ${err.message}. Wait, then try again with the right token.`
            : errorText(err),
      );
    } finally {
      setBusy(false);
      setToken('');
    }
  };
  return (
    <main class="signin">
      <h1>IoMT operator console</h1>
      <form onSubmit={(e) => void submit(e)}>
        <TextField
          label="Your name (recorded in the audit trail)"
          name="name"
          autocomplete="username"
          value={name}
          onValue={setName}
          required
        />
        <TextField
          label="Admin token"
          name="token"
          type="password"
          autocomplete="current-password"
          value={token}
          onValue={setToken}
          required
        />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        {error && (
          <p role="alert" class="error">
            {error}
          </p>
        )}
      </form>
    </main>
  );
}
