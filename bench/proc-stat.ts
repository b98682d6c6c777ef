/**
 * CPU time from /proc, for the benchmarks: a process's (every thread's) and
 * this process's threads by name. utime and stime are the 14th and 15th fields
 * of a stat line, counted after the command name in parentheses (which may hold
 * spaces), in clock ticks (getconf CLK_TCK, read once).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let ticksPerSecond: number | undefined;

/** The thread or process name and its CPU-seconds (user + system) from one stat file. */
function readStat(path: string): { name: string; seconds: number } {
  ticksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  const stat = readFileSync(path, 'utf8');
  const close = stat.lastIndexOf(')');
  const fields = stat.slice(close + 2).split(' ');
  return {
    name: stat.slice(stat.indexOf('(') + 1, close),
    seconds: (Number(fields[11]) + Number(fields[12])) / ticksPerSecond,
  };
}

/** CPU-seconds a process has used, all its threads together. */
export function procCpuSeconds(pid: number): number {
  return readStat(`/proc/${pid}/stat`).seconds;
}

/** CPU-seconds of this process's threads, summed by thread name (trailing digits as `#`). */
export function threadCpu(): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const { name, seconds } = readStat(`/proc/self/task/${tid}/stat`);
      const key = name.replace(/\d+$/, '#');
      out.set(key, (out.get(key) ?? 0) + seconds);
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** Ticks these CPUs spent busy (anything but idle and iowait) and in all, from /proc/stat. */
export function cpuTicks(cpus: readonly number[]): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const row of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(row);
    if (!m || !cpus.includes(Number(m[1]))) continue;
    const t = m[2]!.trim().split(/\s+/).map(Number);
    const all = t.slice(0, 8).reduce((a, b) => a + b, 0); // guest time is counted in user already
    total += all;
    busy += all - t[3]! - t[4]!;
  }
  return { busy, total };
}

/** Runs `fn` and says what share of its wall time these CPUs were busy. */
export async function busyWhile<T>(
  cpus: readonly number[] | undefined,
  fn: () => Promise<T>,
): Promise<{ value: T; busy: number }> {
  const a = cpus ? cpuTicks(cpus) : undefined;
  const value = await fn();
  const b = cpus ? cpuTicks(cpus) : undefined;
  return { value, busy: a && b ? (b.busy - a.busy) / Math.max(1, b.total - a.total) : NaN };
}
