/**
 * Binds a TCP server, turning "address in use" into one line that names the
 * setting to change (Mosquitto often holds 1883 already).
 */
import type { Server } from 'node:net';
import { PipelineError } from '../src/errors.js';

export function listen(
  server: Server,
  port: number,
  host: string,
  setting: string,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      if (err.code === 'EADDRINUSE') {
        reject(
          new PipelineError(
            'PortInUse',
            `port ${port} on ${host} is already in use: set ${setting} to a free port`,
            { cause: err },
          ),
        );
      } else if (err.code === 'EACCES') {
        reject(
          new PipelineError(
            'PortInUse',
            `not allowed to listen on port ${port} on ${host}: set ${setting} to a port above 1023`,
            { cause: err },
          ),
        );
      } else {
        reject(err);
      }
    };
    const onListening = () => {
      server.off('error', onError);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
}
