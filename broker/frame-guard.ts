/**
 * Bounds the memory one connection can take before any MQTT handler runs. The
 * MQTT parser buffers a whole packet before aedes sees it, so a client that
 * announces a 200 MB PUBLISH would be buffered in full. This guard reads only
 * the fixed header of each packet as bytes flow past — a type byte, then the
 * Remaining Length as 1 to 4 bytes of 7 bits with a continuation bit
 * (MQTT 3.1.1 §2.2.3) — and closes the connection as soon as a packet says it
 * is longer than the limit, having buffered at most one socket read.
 *
 * It wraps the stream's `read()`, which is how aedes pulls bytes (aedes
 * lib/client.js `nextBatch`), so it works alike for TCP, TLS and WebSocket
 * streams and never changes what aedes receives.
 */
import type { Duplex } from 'node:stream';

export type FrameViolation = 'packet-too-large' | 'malformed-length';

export class FrameScanner {
  #state: 'header' | 'length' | 'body' = 'header';
  #value = 0;
  #multiplier = 1;
  #lengthBytes = 0;
  #remaining = 0;

  constructor(private readonly maxRemainingLength: number) {}

  /** Feeds bytes; returns the first violation found, or undefined. */
  scan(buf: Uint8Array): FrameViolation | undefined {
    let i = 0;
    while (i < buf.length) {
      if (this.#state === 'header') {
        i++;
        this.#state = 'length';
        this.#value = 0;
        this.#multiplier = 1;
        this.#lengthBytes = 0;
      } else if (this.#state === 'length') {
        const b = buf[i++] ?? 0;
        this.#value += (b & 0x7f) * this.#multiplier;
        this.#multiplier *= 128;
        this.#lengthBytes++;
        if (b & 0x80) {
          // MQTT-2.2.3: at most four bytes of Remaining Length.
          if (this.#lengthBytes >= 4) return 'malformed-length';
          continue;
        }
        if (this.#value > this.maxRemainingLength) return 'packet-too-large';
        this.#remaining = this.#value;
        this.#state = this.#remaining > 0 ? 'body' : 'header';
      } else {
        const take = Math.min(this.#remaining, buf.length - i);
        i += take;
        this.#remaining -= take;
        if (this.#remaining === 0) this.#state = 'header';
      }
    }
    return undefined;
  }
}

/**
 * Installs the guard on `stream`. On a violation the stream is destroyed before
 * the bytes reach the parser, and `onViolation` is called once.
 */
export function guardFrames(
  stream: Duplex,
  maxRemainingLength: number,
  onViolation: (violation: FrameViolation) => void,
): void {
  const scanner = new FrameScanner(maxRemainingLength);
  const read = stream.read.bind(stream);
  let violated = false;
  stream.read = (size?: number): unknown => {
    if (violated) return null;
    const chunk: unknown = read(size);
    if (chunk instanceof Uint8Array) {
      const violation = scanner.scan(chunk);
      if (violation) {
        violated = true;
        onViolation(violation);
        stream.destroy();
        return null;
      }
    }
    return chunk;
  };
}
