/**
 * Realistic vitals for the simulator: each patient drifts slowly around its own
 * baseline (a bounded random walk), with the occasional desaturation. Pure: the
 * random source and the clock come in as arguments.
 */

export interface VitalsState {
  hr: number;
  spo2: number;
  rr: number;
  systolic: number;
  diastolic: number;
  temperature: number;
  seq: number;
}

export type Random = () => number;

/** A small seeded PRNG (mulberry32) so a simulation can be replayed. */
export function seededRandom(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));
const round = (v: number, digits: number) => Number(v.toFixed(digits));

export function initialVitals(random: Random): VitalsState {
  return {
    hr: 60 + random() * 30,
    spo2: 95 + random() * 3.5,
    rr: 12 + random() * 6,
    systolic: 110 + random() * 25,
    diastolic: 68 + random() * 15,
    temperature: 36.4 + random() * 0.8,
    seq: 0,
  };
}

export function nextVitals(s: VitalsState, random: Random): VitalsState {
  const step = (v: number, size: number) => v + (random() - 0.5) * size;
  const desat = random() < 0.01 ? -4 : 0;
  return {
    hr: clamp(step(s.hr, 4), 40, 160),
    spo2: clamp(step(s.spo2, 0.8) + desat, 82, 100),
    rr: clamp(step(s.rr, 1.2), 8, 30),
    systolic: clamp(step(s.systolic, 4), 85, 190),
    diastolic: clamp(step(s.diastolic, 3), 50, 115),
    temperature: clamp(step(s.temperature, 0.06), 35.5, 40),
    seq: s.seq + 1,
  };
}

/**
 * The message a bedside monitor publishes (mappings/device/vitals.json): heart
 * rate, SpO2 and respiratory rate every time; blood pressure and temperature
 * every fifth reading, as a cuff and a thermometer would.
 */
export function vitalsMessage(s: VitalsState, at: Date): Record<string, unknown> {
  const msg: Record<string, unknown> = {
    timestamp: at.toISOString(),
    heartRate: Math.round(s.hr),
    spo2: round(s.spo2, 1),
    respiratoryRate: Math.round(s.rr),
  };
  if (s.seq % 5 === 0) {
    msg.bloodPressure = {
      systolic: Math.round(s.systolic),
      diastolic: Math.round(Math.min(s.diastolic, s.systolic - 20)),
    };
    msg.temperature = round(s.temperature, 1);
  }
  return msg;
}
