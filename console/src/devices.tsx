import { useEffect, useState } from 'preact/hooks';
import { api, errorText, mask, when } from './api';
import { TextField, Checkbox } from './fields';

interface Device {
  deviceId: string;
  kind: string;
  status: string;
  createdAt: string;
  updatedAt: string;
  /** The list answers it masked (`pa•••cf`) unless revealed. */
  currentPatient?: string;
  patientMasked?: boolean;
}
interface HistoryRecord {
  seq: number;
  at: number;
  recordedAt: number;
  kind: string;
  patientId?: string;
  gatewayId?: string;
  actor?: string;
  source?: string;
  note?: string;
  correction?: boolean;
}
interface History {
  device: Device;
  records: HistoryRecord[];
  periods: { patientId: string; start: number; end?: number }[];
  currentPatient?: string;
  gateways: string[];
  warnings?: string[];
}

/** The API masks patient ids; reveal=true shows them and is audited by the API before they leave it. */
const revealedHistory = (deviceId: string) =>
  api<History>('GET', `/api/devices/${encodeURIComponent(deviceId)}?reveal=true`);

/** The list's patient ids come masked from the API: a reveal reads the device's history unmasked. */
function useListReveal() {
  const [revealed, setRevealed] = useState<Map<string, string>>(new Map());
  const reveal = async (deviceId: string) => {
    const h = await revealedHistory(deviceId);
    setRevealed(new Map([...revealed, [deviceId, h.currentPatient ?? '—']]));
  };
  return { revealed, reveal };
}

export function DevicesPage({ selected, actor }: { selected: string | undefined; actor: string }) {
  const [devices, setDevices] = useState<Device[]>([]);
  const [search, setSearch] = useState('');
  const [error, setError] = useState('');
  const { revealed, reveal } = useListReveal();
  const load = async () => {
    try {
      setDevices((await api<{ devices: Device[] }>('GET', '/api/devices')).devices);
    } catch (e) {
      setError(errorText(e));
    }
  };
  useEffect(() => {
    void load();
  }, []);
  const q = search.trim().toLowerCase();
  const shownDevices = devices.filter((d) => !q || d.deviceId.toLowerCase().includes(q));
  return (
    <section>
      <h1>Devices</h1>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <AddDevice actor={actor} onAdded={() => void load()} />
      <label class="search">
        Search devices
        <input
          type="search"
          name="search"
          value={search}
          onInput={(e) => setSearch(e.currentTarget.value)}
        />
      </label>
      <table class="list">
        <caption class="sr-only">Devices and gateways</caption>
        <thead>
          <tr>
            <th scope="col">Device</th>
            <th scope="col">Kind</th>
            <th scope="col">Status</th>
            <th scope="col">Patient now</th>
            <th scope="col">Registered</th>
          </tr>
        </thead>
        <tbody>
          {shownDevices.map((d) => (
            <tr key={d.deviceId} class={d.deviceId === selected ? 'selected' : ''}>
              <td>
                <a href={`#/devices/${encodeURIComponent(d.deviceId)}`}>{d.deviceId}</a>
              </td>
              <td>{d.kind}</td>
              <td>{d.status}</td>
              <td>
                {revealed.has(d.deviceId) ? (
                  revealed.get(d.deviceId)
                ) : (
                  <>
                    <span aria-label="masked patient id">
                      {d.patientMasked ? d.currentPatient : mask(d.currentPatient)}
                    </span>{' '}
                    {d.currentPatient && (
                      <button
                        type="button"
                        class="small"
                        onClick={() =>
                          void reveal(d.deviceId).catch((e: unknown) => setError(errorText(e)))
                        }
                        aria-label={`Reveal the patient of ${d.deviceId}`}
                      >
                        Reveal
                      </button>
                    )}
                  </>
                )}
              </td>
              <td>{when(d.createdAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {selected && (
        <DeviceDetail key={selected} id={selected} actor={actor} onChanged={() => void load()} />
      )}
    </section>
  );
}

function SecretOnce({ deviceId, secret }: { deviceId: string; secret: string }) {
  const [copied, setCopied] = useState('');
  return (
    <div class="secret" role="status">
      <p>
        The secret of <strong>{deviceId}</strong>, shown once (only its hash is kept). Give it to
        the device now:
      </p>
      <code id="device-secret">{secret}</code>{' '}
      <button
        type="button"
        onClick={() =>
          void navigator.clipboard.writeText(secret).then(
            () => setCopied('Copied.'),
            () => setCopied('Copying was refused by the browser: select the secret instead.'),
          )
        }
      >
        Copy secret
      </button>{' '}
      <span aria-live="polite">{copied}</span>
    </div>
  );
}

function AddDevice({ actor, onAdded }: { actor: string; onAdded: () => void }) {
  const [deviceId, setDeviceId] = useState('');
  const [kind, setKind] = useState('device');
  const [patient, setPatient] = useState('');
  const [newPatient, setNewPatient] = useState(false);
  const [error, setError] = useState('');
  const [added, setAdded] = useState<{ deviceId: string; secret: string } | undefined>();
  const submit = async (e: Event) => {
    e.preventDefault();
    setError('');
    setAdded(undefined);
    try {
      const r = await api<{ deviceId: string; secret: string }>('POST', '/api/devices', {
        deviceId,
        kind,
        actor,
        ...(patient ? { patient, newPatient } : {}),
      });
      setAdded(r);
      setDeviceId('');
      setPatient('');
      onAdded();
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <details class="add">
      <summary>Add a device</summary>
      <form onSubmit={(e) => void submit(e)}>
        <TextField
          label="Device id"
          name="deviceId"
          value={deviceId}
          onValue={setDeviceId}
          required
        />
        <label>
          Kind
          <select name="kind" value={kind} onChange={(e) => setKind(e.currentTarget.value)}>
            <option value="device">device</option>
            <option value="gateway">gateway</option>
          </select>
        </label>
        <TextField label="Patient (optional)" name="patient" value={patient} onValue={setPatient} />
        <Checkbox
          label="The patient is new (the pipeline may create it)"
          name="newPatient"
          checked={newPatient}
          onChecked={setNewPatient}
        />
        <button type="submit">Add device</button>
        {error && (
          <p role="alert" class="error">
            {error}
          </p>
        )}
      </form>
      {added && <SecretOnce deviceId={added.deviceId} secret={added.secret} />}
    </details>
  );
}

/** `r.patientId` comes masked from the API unless the page revealed the history. */
function describe(r: HistoryRecord): string {
  const p = r.patientId ?? '';
  switch (r.kind) {
    case 'assign':
      return `assigned to patient ${p}`;
    case 'unassign':
      return 'unassigned';
    case 'link':
      return `linked to gateway ${r.gatewayId ?? ''}`;
    case 'unlink':
      return `unlinked from gateway ${r.gatewayId ?? ''}`;
    case 'registered':
      return 'registered';
    case 'secret-rotated':
      return 'secret rotated';
    case 'removed':
      return 'disabled (credentials removed)';
    default:
      return r.kind;
  }
}

function DeviceDetail({
  id,
  actor,
  onChanged,
}: {
  id: string;
  actor: string;
  onChanged: () => void;
}) {
  const [history, setHistory] = useState<History | undefined>();
  const [error, setError] = useState('');
  const [secret, setSecret] = useState<string | undefined>();
  const [patient, setPatient] = useState('');
  const [newPatient, setNewPatient] = useState(false);
  const [note, setNote] = useState('');
  const [gateway, setGateway] = useState('');
  const [relays, setRelays] = useState<string[]>([]);
  const [confirmDisable, setConfirmDisable] = useState(false);
  // Once revealed, the page reads the history unmasked again after each change (each read audited).
  const [revealed, setRevealed] = useState(false);
  const load = async (reveal = revealed) => {
    try {
      const h = reveal
        ? await revealedHistory(id)
        : await api<History>('GET', `/api/devices/${encodeURIComponent(id)}`);
      setHistory(h);
      setRelays(
        h.device.kind === 'gateway'
          ? (
              await api<{ devices: string[] }>(
                'GET',
                `/api/gateways/${encodeURIComponent(id)}/devices`,
              )
            ).devices
          : [],
      );
    } catch (e) {
      setError(errorText(e));
    }
  };
  useEffect(() => {
    setRevealed(false);
    void load(false);
  }, [id]);
  const act = async (fn: () => Promise<unknown>) => {
    setError('');
    try {
      await fn();
      await load();
      onChanged();
    } catch (e) {
      setError(errorText(e));
    }
  };
  const path = `/api/devices/${encodeURIComponent(id)}`;
  return (
    <article class="detail" aria-labelledby="device-title">
      <h2 id="device-title">Device {id}</h2>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      {history && (
        <p>
          Patient now:{' '}
          {history.currentPatient ? (
            <>
              <strong class="patient-now">{history.currentPatient}</strong>
              {!revealed && (
                <>
                  {' '}
                  <button
                    type="button"
                    class="small"
                    onClick={() => {
                      setRevealed(true);
                      void load(true);
                    }}
                  >
                    Reveal patient id
                  </button>
                </>
              )}
            </>
          ) : (
            'none'
          )}
          {history.gateways.length > 0 && <> · relayed by {history.gateways.join(', ')}</>}
        </p>
      )}
      <button
        type="button"
        hidden={history?.device.status === 'removed'}
        onClick={() =>
          void act(async () =>
            setSecret(
              (await api<{ secret: string }>('POST', `${path}/rotate-secret`, { actor })).secret,
            ),
          )
        }
      >
        Rotate secret
      </button>
      {secret && <SecretOnce deviceId={id} secret={secret} />}{' '}
      {history?.device.status === 'active' && (
        <button type="button" class="danger" onClick={() => setConfirmDisable(true)}>
          Disable device
        </button>
      )}
      {history?.device.status === 'removed' && (
        <p class="status-disabled">
          Disabled: its credentials are removed, it can no longer connect. Its history stays.
        </p>
      )}
      {confirmDisable && (
        <div role="alertdialog" aria-labelledby="disable-q" class="confirm">
          <p id="disable-q">
            Disable {id}? Its credentials are removed and its open connections end now; it is
            unassigned from its patient. Readings it took before keep their patient.
          </p>
          <button
            type="button"
            class="danger"
            onClick={() => {
              setConfirmDisable(false);
              void act(() => api('DELETE', path, { actor }));
            }}
          >
            Disable {id}
          </button>{' '}
          <button type="button" onClick={() => setConfirmDisable(false)}>
            Cancel
          </button>
        </div>
      )}
      <form
        class="link"
        onSubmit={(e) => {
          e.preventDefault();
          void act(async () => {
            await api('POST', `/api/gateways/${encodeURIComponent(gateway)}/devices`, {
              deviceId: id,
              actor,
            });
            setGateway('');
          });
        }}
      >
        <h3>Gateways</h3>
        {history && history.gateways.length > 0 ? (
          <ul aria-label="Gateways relaying for this device">
            {history.gateways.map((g) => (
              <li key={g}>
                {g}{' '}
                <button
                  type="button"
                  class="small"
                  onClick={() =>
                    void act(() =>
                      api(
                        'DELETE',
                        `/api/gateways/${encodeURIComponent(g)}/devices/${encodeURIComponent(id)}`,
                        { actor },
                      ),
                    )
                  }
                >
                  Unlink {g}
                </button>
              </li>
            ))}
          </ul>
        ) : (
          <p>No gateway relays for it.</p>
        )}
        {relays.length > 0 && <p class="relays">As a gateway it relays for: {relays.join(', ')}</p>}
        <TextField
          label="Gateway id"
          name="gateway"
          value={gateway}
          onValue={setGateway}
          required
        />
        <button type="submit">Link to this gateway</button>
      </form>
      <form
        class="assign"
        onSubmit={(e) => {
          e.preventDefault();
          void act(() =>
            api('POST', `${path}/assign`, {
              patient,
              newPatient,
              actor,
              ...(note ? { note } : {}),
            }),
          );
        }}
      >
        <h3>Assign a patient</h3>
        <TextField
          label="Patient"
          name="assign-patient"
          value={patient}
          onValue={setPatient}
          required
        />
        <Checkbox
          label="The patient is new"
          name="assign-new"
          checked={newPatient}
          onChecked={setNewPatient}
        />
        <TextField label="Note" name="note" value={note} onValue={setNote} />
        <button type="submit">Assign from now</button>{' '}
        <button
          type="button"
          onClick={() =>
            void act(() => api('POST', `${path}/unassign`, { actor, ...(note ? { note } : {}) }))
          }
        >
          Unassign now
        </button>
      </form>
      <h3>History</h3>
      <ol class="timeline" aria-label="Association history">
        {history?.records
          .slice()
          .sort((a, b) => a.at - b.at || a.seq - b.seq)
          .map((r) => (
            <li key={r.seq}>
              <time dateTime={new Date(r.at).toISOString()}>{when(r.at)}</time> {describe(r)}
              <span class="by">
                {' '}
                — by {r.actor ?? '?'} ({r.source ?? '?'}){r.note ? `: ${r.note}` : ''}
              </span>
            </li>
          ))}
      </ol>
    </article>
  );
}
