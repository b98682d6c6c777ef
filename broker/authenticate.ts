/**
 * CONNECT: username = device id, password = device secret, checked against the
 * registry. The device record is kept on the connection so that later packets
 * never go back to Redis for identity.
 */
import type { AedesOptions, AuthenticateError, Client } from 'aedes';
import type { DeviceRecord, DeviceRegistry } from '../src/devices/registry.js';
import type { Logger } from '../src/logger.js';

/** MQTT 3.1.1 CONNACK return codes (MQTT-3.2.2-3). */
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;

type AuthenticateHandler = NonNullable<AedesOptions['authenticate']>;

const identities = new WeakMap<Client, DeviceRecord>();

/** The authenticated device of a connection, if any. */
export function deviceOf(client: Client | null): DeviceRecord | undefined {
  return client ? identities.get(client) : undefined;
}

function refusal(returnCode: number, message: string): AuthenticateError {
  const err = new Error(message) as AuthenticateError;
  err.returnCode = returnCode;
  return err;
}

export function createAuthenticate(registry: DeviceRegistry, log: Logger): AuthenticateHandler {
  return (client, username, password, done) => {
    const remoteAddress = (client.conn as { remoteAddress?: string }).remoteAddress;
    if (!username || !password) {
      log.warn(
        {
          event: 'connect-refused',
          deviceId: username ?? null,
          reason: 'missing-credentials',
          remoteAddress,
        },
        'connect refused',
      );
      done(refusal(BAD_USERNAME_OR_PASSWORD, 'username and password required'), false);
      return;
    }
    registry.authenticate(username, password.toString('utf8')).then(
      (record) => {
        if (!record) {
          log.warn(
            {
              event: 'connect-refused',
              deviceId: username,
              reason: 'unknown-device-or-wrong-secret',
              remoteAddress,
            },
            'connect refused',
          );
          done(refusal(NOT_AUTHORIZED, 'not authorized'), false);
          return;
        }
        identities.set(client, record);
        log.info(
          { event: 'connected', deviceId: username, clientId: client.id },
          'device connected',
        );
        done(null, true);
      },
      (err: unknown) => {
        // Redis unreachable: refuse rather than guess; the device retries.
        log.error(
          { event: 'connect-refused', deviceId: username, reason: 'registry-unavailable', err },
          'connect refused',
        );
        done(refusal(3 /* server unavailable */, 'registry unavailable'), false);
      },
    );
  };
}
