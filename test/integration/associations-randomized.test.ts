/**
 * 1,000 readings from four devices, each moved between patients six times over
 * an hour (with an unassociated gap), arriving in random order with random
 * delays, some twice, while the FHIR server goes down and comes back at random
 * (so FHIR jobs are retried) — and the readings that fell in the gap are
 * replayed once the gap is filled. In the end every reading is in FHIR exactly
 * once, on the patient this test scheduled for its device time, and in
 * ClickHouse the same. The seed is printed; IOMT_TEST_SEED replays a run.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DeviceService, queueAssociationSync } from '../../src/devices/index.js';
import { DeadLetterStore } from '../../src/dlq/index.js';
import { seededRandom } from '../../src/simulator/vitals.js';
import { chartedInClickHouse, chartedInFhir, misattributed } from '../support/attribution.js';
import {
  connectDevice,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

const fhirUrl = inject('fhirUrl');
const MIN = 60_000;
const DEVICES = 4;
const READINGS_PER_DEVICE = 250;
const SEED = Number(process.env.IOMT_TEST_SEED ?? Date.now() % 1_000_000);

interface Device {
  readonly id: string;
  client: MqttClient;
  /** The test's own schedule: from each start on, this patient (null: nobody). */
  readonly schedule: { start: number; patient: string | null }[];
  /** device time → the payload sent for it */
  readonly readings: Map<number, string>;
}

function scheduled(d: Device, at: number): string | null {
  let patient: string | null = null;
  for (const s of d.schedule) if (s.start <= at) patient = s.patient;
  return patient;
}

describe(`randomized attribution (seed ${SEED})`, () => {
  let proxy: TcpProxy;
  let h: Harness;
  const random = seededRandom(SEED);
  const shuffle = <T>(xs: T[]): T[] => {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [xs[i], xs[j]] = [xs[j]!, xs[i]!];
    }
    return xs;
  };
  const ACTOR = { actor: 'ward.system', source: 'feed' } as const;

  beforeAll(async () => {
    proxy = await startTcpProxy(new URL(fhirUrl));
    h = await startHarness({
      fhirUrl: proxy.url,
      overrides: {
        worker: { retryCapMs: 1000 },
        mqtt: { deviceMaxRate: 1000, deviceBurst: 1000 },
      },
    });
  });
  afterAll(async () => {
    await h?.close();
    await proxy?.close();
  });

  it(
    'charts 1,000 readings, each once, on the patient of its device time',
    { timeout: 1_200_000 },
    async () => {
      const T = Date.now();
      const step = (what: string) =>
        process.stdout.write(
          `[randomized attribution] seed ${SEED}, +${((Date.now() - T) / 1000).toFixed(1)} s: ${what}\n`,
        );
      step('start');
      // 1. An hour of history, recorded as it happened (a clock the test sets):
      //    P1 → P2 → gap → P3 → P4, for each device.
      let clock = T - 60 * MIN;
      const past = new DeviceService({
        registry: h.pipeline.registry,
        associations: h.pipeline.associations,
        revoke: () => Promise.resolve(),
        sync: queueAssociationSync(h.pipeline.queues),
        patientExists: () => Promise.resolve(true),
        createPatients: false,
        identityMode: 'Create',
        now: () => clock,
      });
      const devices: Device[] = [];
      const gapStart = T - 35 * MIN;
      const gapEnd = T - 30 * MIN;
      for (let i = 0; i < DEVICES; i++) {
        const id = uniqueId(`rnd${i}`);
        const p = (n: number) => `${id}-p${n}`;
        const schedule: Device['schedule'] = [];
        clock = T - 60 * MIN;
        const { secret } = await past.add(id, { ...ACTOR, patient: p(1), newPatient: true });
        schedule.push({ start: clock, patient: p(1) });
        for (const [at, n] of [
          [T - 45 * MIN, 2],
          [gapStart, 0],
          [gapEnd, 3],
          [T - 15 * MIN, 4],
        ] as const) {
          clock = at;
          if (n === 0) await past.unassign(id, ACTOR);
          else await past.assign(id, p(n), { ...ACTOR, newPatient: true });
          schedule.push({ start: at, patient: n === 0 ? null : p(n) });
        }
        devices.push({
          id,
          client: await connectDevice(h.mqttUrl, id, secret),
          schedule,
          readings: new Map(),
        });
      }

      step('history recorded');
      // 2. The FHIR server goes down and comes back at random until told to stop.
      let flapping = true;
      const flaps = (async () => {
        let downs = 0;
        while (flapping) {
          await new Promise((r) => setTimeout(r, 1000 + random() * 2000));
          if (!flapping) break;
          await proxy.down();
          downs++;
          await new Promise((r) => setTimeout(r, 300 + random() * 1500));
          await proxy.up();
        }
        return downs;
      })();

      // 3. Readings: distinct device times per device; sent shuffled, some twice.
      const taken = (d: Device, at: number) => {
        const payload = JSON.stringify({
          timestamp: new Date(at).toISOString(),
          heartRate: 50 + Math.floor(random() * 80),
        });
        d.readings.set(at, payload);
        return { d, payload };
      };
      const pastTime = (d: Device, from: number, to: number) => {
        for (;;) {
          const at = Math.floor(from + random() * (to - from));
          if (!d.readings.has(at)) return at;
        }
      };
      const send = async (batch: { d: Device; payload: string }[]) => {
        const resends = batch.filter(() => random() < 0.1);
        for (const { d, payload } of shuffle([...batch, ...resends])) {
          await publish(d.client, `devices/${d.id}/telemetry`, payload);
          if (random() < 0.05) await new Promise((r) => setTimeout(r, random() * 50));
        }
      };
      // Phase A: 150 readings per device from the past hour (some in the gap).
      const phaseA = devices.flatMap((d) =>
        Array.from({ length: 150 }, () => taken(d, pastTime(d, T - 60 * MIN, Date.now() - 1000))),
      );
      await send(phaseA);
      step('phase A sent');
      // Phases B and C: the devices move again now (real time), then publish live
      // readings (taken after the move) and stored ones (taken before).
      for (const n of [5, 6]) {
        for (const d of devices) {
          await h.pipeline.devices.assign(d.id, `${d.id}-p${n}`, { ...ACTOR, newPatient: true });
          const start = (await h.pipeline.associations.history(d.id)).at(-1)!.at;
          d.schedule.push({ start, patient: `${d.id}-p${n}` });
        }
        const batch: { d: Device; payload: string }[] = [];
        for (const d of devices) {
          const start = d.schedule.at(-1)!.start;
          let live = start;
          for (let k = 0; k < 25; k++) {
            live = Math.max(live + 1 + Math.floor(random() * 20), start);
            batch.push(taken(d, live));
          }
          for (let k = 0; k < 25; k++) batch.push(taken(d, pastTime(d, T - 60 * MIN, start)));
        }
        // Live readings must not be dated in the future: wait for the clock to pass them.
        const latest = Math.max(...devices.map((d) => Math.max(...d.readings.keys())));
        await waitFor(
          () => Promise.resolve(Date.now()),
          (now) => now > latest,
          30_000,
          'the clock',
        );
        await send(batch);
        step(`phase after P${n} sent`);
      }
      flapping = false;
      const downs = await flaps;
      await proxy.up();
      for (const d of devices) expect(d.readings.size).toBe(READINGS_PER_DEVICE);

      // 4. The readings of the gap are held, not charted: NoPatientAssociated.
      const inGap = devices.reduce(
        (n, d) => n + [...d.readings.keys()].filter((at) => scheduled(d, at) === null).length,
        0,
      );
      expect(inGap).toBeGreaterThan(0);
      const store = new DeadLetterStore(h.pipeline.queues, {
        associations: { reader: h.pipeline.associations, createPatients: false },
      });
      await waitFor(
        async () => (await store.list({ code: 'NoPatientAssociated' })).length,
        (n) => n >= inGap,
        300_000,
        `${inGap} readings of the gap held`,
      );
      step('gap readings held');
      // 5. The ward's records fill the gap (a patient nobody recorded in time), then replay.
      for (const d of devices) {
        await h.pipeline.devices.assign(d.id, `${d.id}-pgap`, {
          ...ACTOR,
          at: gapStart,
          newPatient: true,
          note: 'paper record entered late',
        });
        d.schedule.push({ start: gapStart, patient: `${d.id}-pgap` });
        d.schedule.push({ start: gapEnd, patient: `${d.id}-p3` });
        d.schedule.sort((a, b) => a.start - b.start);
      }
      const replayed = await store.replay({ code: 'NoPatientAssociated' });
      expect(replayed.skipped).toEqual([]);

      // 6. Every reading is charted once, on the patient of its time — FHIR, then ClickHouse.
      for (const d of devices) {
        const expected = new Map([...d.readings.keys()].map((at) => [at, scheduled(d, at)!]));
        const inFhir = await waitFor(
          () => chartedInFhir(fhirUrl, d.id),
          (c) => c.length >= READINGS_PER_DEVICE,
          180_000,
          `the readings of ${d.id} in HAPI`,
        );
        expect(misattributed(expected, inFhir)).toEqual([]);
        step(`${d.id} checked in FHIR`);
        const inClickHouse = await waitFor(
          () => chartedInClickHouse(h.pipeline.analyticsStore!, d.id),
          (c) => c.length >= READINGS_PER_DEVICE,
          300_000,
          `the readings of ${d.id} in ClickHouse`,
        );
        expect(misattributed(expected, inClickHouse)).toEqual([]);
      }
      // Nothing else was held.
      expect(await store.list()).toEqual([]);
      process.stdout.write(
        `[randomized attribution] ${DEVICES * READINGS_PER_DEVICE} readings, ${inGap} held in the gap and replayed, FHIR down ${downs} times\n`,
      );
      for (const d of devices) d.client.end(true);
    },
  );
});
