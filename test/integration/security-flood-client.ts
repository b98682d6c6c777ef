/**
 * The attacker of security-connect-flood.test.ts, in a process of its own so
 * that its sockets do not share the broker's event loop (as a real attacker's
 * would not).
 *
 *   node --import tsx security-flood-client.ts <port> <count> <localAddress>
 *
 * Opens `count` TCP connections from `localAddress` and prints "ready" once
 * each is connected (or already closed by the broker); on a line "go" on stdin
 * it sends one CONNECT on every open connection at once (made-up device ids and
 * secrets), and prints one JSON line: each connection's CONNACK return code or
 * "closed".
 */
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { connectPacket, rawConnect, rawSocket } from './security-fixtures.js';

const [port, count, localAddress] = process.argv.slice(2);
const id = () => randomBytes(6).toString('hex');

const sockets: (Socket | undefined)[] = await Promise.all(
  Array.from({ length: Number(count) }, () =>
    rawSocket(Number(port), localAddress).catch(() => undefined),
  ),
);
// Give the broker a moment to close what it refuses at accept (the idle-socket cap).
await new Promise((r) => setTimeout(r, 200));
process.stdout.write('ready\n');

for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() !== 'go') continue;
  const results = await Promise.all(
    sockets.map((s) =>
      !s || s.destroyed
        ? Promise.resolve('closed' as const)
        : rawConnect(s, connectPacket(`c-${id()}`, `nobody-${id()}`, 'guess-0123456789')).then(
            (r) => r.returnCode,
          ),
    ),
  );
  process.stdout.write(`${JSON.stringify(results)}\n`);
  for (const s of sockets) s?.destroy();
  break;
}
