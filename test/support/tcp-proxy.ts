/**
 * A TCP proxy on a port of its own in front of a real server, that a test can
 * take down and bring back on the same port: while down, connections are
 * refused and open ones are cut, as when the server itself is down. Used to
 * make the real HAPI unreachable for part of a test without stopping the HAPI
 * other tests share.
 */
import net from 'node:net';

export interface TcpProxy {
  readonly port: number;
  readonly url: string;
  /** Stops listening and cuts every open connection. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(target: URL): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  let port = 0;
  let server: net.Server | undefined;

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = net.createServer((client) => {
        const upstream = net.connect(Number(target.port), target.hostname);
        for (const sock of [client, upstream]) {
          sockets.add(sock);
          sock.on('close', () => sockets.delete(sock));
          sock.on('error', () => {
            client.destroy();
            upstream.destroy();
          });
        }
        client.pipe(upstream).pipe(client);
      });
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        port = (s.address() as net.AddressInfo).port;
        server = s;
        resolve();
      });
    });

  const down = async () => {
    const s = server;
    server = undefined;
    for (const sock of sockets) sock.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  };

  await listen();
  const path = target.pathname.replace(/\/+$/, '');
  return {
    port,
    url: `http://127.0.0.1:${port}${path}`,
    down,
    async up() {
      if (!server) await listen();
    },
    close: down,
  };
}
