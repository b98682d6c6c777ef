/**
 * Where the shadow run's messages come from — an adapter (ClickHouse, Redis).
 *
 * In: the analytics store (embedded engine or a server: the same SQL) and the
 * dead-letter queue. Out: samples, newest first — first the dead letters that
 * hold a raw message (they wait for a template fix), then the most recent
 * `device_messages` rows (the raw payload of every message the broker
 * accepted). A message in both is taken once. Only UTF-8 payloads: a base64 one
 * never reached a template.
 */
import type { Queue } from 'bullmq';
import {
  assertDatabaseName,
  DEVICE_MESSAGES_TABLE,
  type AnalyticsStore,
} from '../../clickhouse/index.js';
import { isPipelineError, PipelineError } from '../../errors.js';
import type { DeadLetterJobData } from '../../queues.js';
import type { ShadowSample } from './shadow-run.js';

export interface ShadowSource {
  /** Recent samples, newest first; throws ClickHouseUnavailable / QueueUnavailable. */
  samples(limits: { readonly deviceMessages: number; readonly deadLetters: number }): Promise<{
    readonly samples: readonly ShadowSample[];
  }>;
}

export interface ShadowSourceOptions {
  /** Absent: no ClickHouse here (the shadow run cannot run in this process). */
  readonly store: AnalyticsStore | undefined;
  /** Qualified names: a server connection may ignore the client's database. */
  readonly database: string;
  readonly deadLetters?: Queue<DeadLetterJobData>;
}

interface MessageRow {
  readonly message_id: string;
  readonly mqtt_device_id: string;
  readonly patient_id: string;
  readonly topic: string;
  /** 64-bit integers come back as strings. */
  readonly received_ms: string | number;
  readonly payload: string;
}

/** The newest rows; a missing table is no answer, not "no traffic" (a wrong database would pass every gate). */
async function readRows(
  store: AnalyticsStore,
  database: string,
  limit: number,
): Promise<MessageRow[]> {
  try {
    // FINAL: one row per message (the latest outcome); newest first.
    return await store.queryRows<MessageRow>(
      `SELECT message_id, mqtt_device_id, patient_id, topic,
              toUnixTimestamp64Milli(received_at) AS received_ms, payload
       FROM ${database}.${DEVICE_MESSAGES_TABLE} FINAL
       WHERE encoding = 'utf8'
       ORDER BY received_at DESC, message_id DESC
       LIMIT ${Math.floor(limit)}`,
    );
  } catch (err) {
    const name = isPipelineError(err) ? err.details.clickhouseError : undefined;
    if (name === 'UNKNOWN_TABLE' || name === 'UNKNOWN_DATABASE') {
      throw new PipelineError(
        'ClickHouseUnavailable',
        `ClickHouse has no ${database}.${DEVICE_MESSAGES_TABLE} (check CLICKHOUSE_DATABASE; the mirror creates it when it starts)`,
        { cause: err },
      );
    }
    throw err;
  }
}

export function createShadowSource(o: ShadowSourceOptions): ShadowSource {
  assertDatabaseName(o.database);
  return {
    async samples(limits) {
      if (!o.store) {
        throw new PipelineError(
          'ClickHouseUnavailable',
          'this process has no ClickHouse to read recent messages from (run the shadow run where the analytics store is: the admin API of the process running the mirror, or set CLICKHOUSE_URL)',
        );
      }
      const out: ShadowSample[] = [];
      const seen = new Set<string>();
      if (o.deadLetters && limits.deadLetters > 0) {
        // Dead letters wait in "waiting"; the newest are at the head of the list.
        const jobs = await o.deadLetters.getJobs(['waiting'], 0, limits.deadLetters - 1, false);
        for (const job of jobs) {
          const m = job?.data.message;
          if (!m || m.encoding !== 'utf8' || seen.has(m.id)) continue;
          seen.add(m.id);
          out.push({
            id: m.id,
            deviceId: m.deviceId,
            patientId: '',
            topic: m.topic,
            receivedAt: m.receivedAt,
            payload: m.payload,
            source: 'dead-letter',
          });
        }
      }
      if (limits.deviceMessages > 0) {
        const rows = await readRows(o.store, o.database, limits.deviceMessages);
        const deadAt = new Map(out.map((d, i) => [d.id, i]));
        for (const r of rows) {
          const i = deadAt.get(r.message_id);
          // A dead letter does not keep the patient; its row does.
          if (i !== undefined) out[i] = { ...out[i]!, patientId: r.patient_id };
          if (seen.has(r.message_id)) continue;
          seen.add(r.message_id);
          out.push({
            id: r.message_id,
            deviceId: r.mqtt_device_id,
            patientId: r.patient_id,
            topic: r.topic,
            receivedAt: Number(r.received_ms),
            payload: r.payload,
            source: 'device_messages',
          });
        }
      }
      return { samples: out };
    },
  };
}
