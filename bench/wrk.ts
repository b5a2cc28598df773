// Helpers for benchmarks that drive an HTTP server with wrk (Debian package `wrk`): run it, parse
// its `--latency` report; CPU time of processes from /proc, so a figure on a small machine can be
// explained by who spent the cores; and a self-time summary of a V8 .cpuprofile (node --cpu-prof).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export const WRK_INSTALL_HINT = 'apt-get install -y wrk   (Debian/Ubuntu; wrk 4.x, a C HTTP load generator)';

/** wrk's version line, or undefined when it is not installed. */
export function wrkVersion(): string | undefined {
  const r = spawnSync('wrk', ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined) return undefined;
  return `${r.stdout}${r.stderr}`.split('\n')[0]?.trim();
}

export interface WrkResult {
  requestsPerSec: number;
  requests: number;
  seconds: number;
  /** Latency percentiles from `--latency`, in µs. */
  p50Us: number;
  p75Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
  /** Responses with a status other than 2xx/3xx. */
  non2xx: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  /** CPU seconds wrk itself used (user + system). */
  cpuS: number;
  output: string;
}

const UNIT_US: Record<string, number> = { us: 1, ms: 1000, s: 1_000_000, m: 60_000_000, h: 3_600_000_000 };

function durationUs(v: string | undefined, output: string): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(v ?? '');
  if (m === null) throw new Error(`bench: cannot read wrk duration ${JSON.stringify(v)} in:\n${output}`);
  return Number(m[1]) * (UNIT_US[m[2] as string] as number);
}

/** Parses the report `wrk --latency` prints. */
export function parseWrk(output: string): Omit<WrkResult, 'cpuS'> {
  const pct = (p: string) => durationUs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(output)?.[1], output);
  const done = /^\s+(\d+) requests in ([\d.]+)(us|ms|s|m|h),/m.exec(output);
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output);
  if (done === null || rps === null) throw new Error(`bench: cannot parse the wrk report:\n${output}`);
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  return {
    requestsPerSec: Number(rps[1]),
    requests: Number(done[1]),
    seconds: durationUs(`${done[2]}${done[3]}`, output) / 1e6,
    p50Us: pct('50'),
    p75Us: pct('75'),
    p90Us: pct('90'),
    p99Us: pct('99'),
    maxUs: durationUs(/^\s+Latency\s+\S+\s+\S+\s+(\S+)/m.exec(output)?.[1], output),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0),
    socketErrors: {
      connect: Number(errors?.[1] ?? 0),
      read: Number(errors?.[2] ?? 0),
      write: Number(errors?.[3] ?? 0),
      timeout: Number(errors?.[4] ?? 0),
    },
    output,
  };
}

export interface WrkOptions {
  connections: number;
  threads: number;
  seconds: number;
}

/**
 * Runs `wrk --latency` against `url` (asynchronously, so this process keeps serving meanwhile).
 * wrk's own CPU comes from this process's reaped-children times, so no other child may exit while
 * it runs.
 */
export async function runWrk(url: string, o: WrkOptions): Promise<WrkResult> {
  const before = childrenCpuSeconds();
  const child = spawn(
    'wrk',
    [`-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`, '--timeout', '5s', '--latency', url],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    output += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    output += d;
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  if (code !== 0) throw new Error(`bench: wrk exited with ${code}:\n${output}`);
  return { ...parseWrk(output), cpuS: childrenCpuSeconds() - before, output };
}

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** Fields of /proc/<pid>/stat from the third (state) on, so index i is field i + 3. */
function statFields(pid: number | 'self'): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** CPU seconds (all threads) a process has used so far, in user space and in the kernel (Linux); NaN when unknown. */
export function cpuTimes(pid: number | 'self'): { user: number; system: number } {
  try {
    const f = statFields(pid);
    return { user: Number(f[11]) / ticksPerSecond(), system: Number(f[12]) / ticksPerSecond() }; // utime, stime
  } catch {
    return { user: Number.NaN, system: Number.NaN };
  }
}

/** CPU seconds (user + system, all threads) a process has used so far (Linux); NaN when unknown. */
export function cpuSeconds(pid: number | 'self'): number {
  const t = cpuTimes(pid);
  return t.user + t.system;
}

/** CPU seconds this process's waited-for children have used (cutime + cstime). */
export function childrenCpuSeconds(): number {
  try {
    const f = statFields('self');
    return (Number(f[13]) + Number(f[14])) / ticksPerSecond();
  } catch {
    return Number.NaN;
  }
}

/**
 * The machine's CPU time so far, in seconds summed over cores (first line of /proc/stat): busy,
 * of which interrupt and softirq time (loopback TCP is mostly processed there and charged to no
 * process), and the total.
 */
export function machineCpuSeconds(): { busy: number; irq: number; total: number } {
  try {
    // user nice system idle iowait irq softirq steal (guest time is already inside user)
    const ticks = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '')
      .trim()
      .split(/\s+/)
      .slice(1, 9)
      .map(Number);
    const [, , , idle = 0, iowait = 0, irq = 0, softirq = 0] = ticks;
    const total = ticks.reduce((a, b) => a + b, 0);
    const hz = ticksPerSecond();
    return { busy: (total - idle - iowait) / hz, irq: (irq + softirq) / hz, total: total / hz };
  } catch {
    return { busy: Number.NaN, irq: Number.NaN, total: Number.NaN };
  }
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

export interface HotSpot {
  /** Share of the profile's non-idle samples spent in this function itself. */
  selfShare: number;
  name: string;
  where: string;
}

/** The functions with the most self time in a V8 .cpuprofile, idle time left out. */
export function hotSpots(profilePath: string, top = 20): { spots: HotSpot[]; busySamples: number } {
  const profile = JSON.parse(readFileSync(profilePath, 'utf8')) as {
    nodes: ProfileNode[];
    samples: number[];
  };
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const counts = new Map<string, HotSpot & { n: number }>();
  let busy = 0;
  for (const id of profile.samples) {
    const frame = byId.get(id)?.callFrame;
    if (frame === undefined || frame.functionName === '(idle)') continue;
    busy++;
    const file = frame.url.replace(/^file:\/\//, '').replace(/^.*\/(node_modules|packages)\//, '$1/');
    const where = file === '' ? '' : `${file}:${frame.lineNumber + 1}`;
    const key = `${frame.functionName}@${where}`;
    const entry = counts.get(key) ?? { selfShare: 0, name: frame.functionName || '(anonymous)', where, n: 0 };
    entry.n++;
    counts.set(key, entry);
  }
  const spots = [...counts.values()]
    .sort((a, b) => b.n - a.n)
    .slice(0, top)
    .map(({ n, name, where }) => ({ selfShare: n / Math.max(1, busy), name, where }));
  return { spots, busySamples: busy };
}
