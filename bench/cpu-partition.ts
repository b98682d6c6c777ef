/**
 * `--partition`: the FHIR server on CPUs of its own, as in a deployment where
 * it runs on hosts of its own. Pins the FHIR server's java process and every
 * PostgreSQL process (the postmaster too, so new backends follow) to the first
 * half of this machine's CPUs, and the pipeline side (this process with every
 * thread it starts, its children, the Redis server) to the other half, with
 * taskset(1). undo() gives every process every CPU again.
 */
import { execFileSync } from 'node:child_process';
import { availableParallelism } from 'node:os';

export interface CpuPartition {
  readonly server: string;
  /** The server side's CPU numbers (for bench/proc-stat.ts cpuTicks). */
  readonly serverCpus: readonly number[];
  readonly pipeline: string;
  undo(): void;
}

/** The pid of the process listening on a local TCP port (ss -ltnp), if any. */
export function pidListening(port: number | string): number | undefined {
  try {
    const out = execFileSync('ss', ['-ltnpH', `sport = :${port}`], { encoding: 'utf8' });
    const m = /pid=(\d+)/.exec(out);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function pgrep(name: string): number[] {
  try {
    return execFileSync('pgrep', ['-x', name], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

function pin(pids: readonly number[], cpus: string): void {
  for (const pid of pids) {
    try {
      execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
    } catch {
      // a PostgreSQL backend that ended meanwhile
    }
  }
}

export function partitionCpus(serverPid: number, redisPort: number | string): CpuPartition {
  const n = availableParallelism();
  if (n < 2) throw new Error('--partition needs at least 2 CPUs');
  const half = Math.floor(n / 2);
  const server = half === 1 ? '0' : `0-${half - 1}`;
  const pipeline = half === n - 1 ? String(half) : `${half}-${n - 1}`;
  const all = `0-${n - 1}`;
  const redisPid = pidListening(redisPort);
  const serverSide = () => [serverPid, ...pgrep('postgres')];
  const pipelineSide = [process.pid, ...(redisPid ? [redisPid] : [])];
  pin(serverSide(), server);
  pin(pipelineSide, pipeline);
  return {
    server,
    serverCpus: Array.from({ length: half }, (_, i) => i),
    pipeline,
    undo() {
      pin(serverSide(), all);
      pin(pipelineSide, all);
    },
  };
}
