import { useEffect, useState } from 'preact/hooks';
import { api, errorText } from './api';

interface Entry {
  at: string;
  actor: string;
  action: string;
  status: number;
  detail?: string;
}

export function AuditPage() {
  const [entries, setEntries] = useState<Entry[]>([]);
  const [error, setError] = useState('');
  useEffect(() => {
    api<{ entries: Entry[] }>('GET', '/console/api/audit?limit=200')
      .then((r) => setEntries(r.entries))
      .catch((e: unknown) => setError(errorText(e)));
  }, []);
  return (
    <section>
      <h1>Audit trail</h1>
      <p>Every change made from the console, and every reveal of a patient id: who, what, when.</p>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <table>
        <caption class="sr-only">Console audit entries, newest first</caption>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Who</th>
            <th scope="col">What</th>
            <th scope="col">Status</th>
          </tr>
        </thead>
        <tbody>
          {entries.map((e, i) => (
            <tr key={i}>
              <td>{e.at}</td>
              <td>{e.actor}</td>
              <td>
                {e.action}
                {e.detail ? ` — ${e.detail}` : ''}
              </td>
              <td>{e.status}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
