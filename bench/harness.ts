// A small benchmark harness: warm-up, a fixed duration of measured batches, then median and p99
// per operation and ops/s; and reference figures measured in the same run (openssl speed), so the
// ratio printed beside each result survives a noisy machine.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';

export interface BenchOptions {
  /** Warm-up time before measuring; default 500 ms. */
  warmupMs?: number;
  /** Measuring time; default 2000 ms. */
  durationMs?: number;
  /** Operations per timed batch (for fast operations); default 1. */
  batch?: number;
}

export interface BenchResult {
  name: string;
  iterations: number;
  opsPerSec: number;
  medianUs: number;
  p99Us: number;
}

/** The p-th percentile (nearest rank) of an ascending array; NaN when empty. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, i)] as number;
}

/** Runs `fn` repeatedly: warm-up, then batches for `durationMs`; times are per operation. */
export async function bench(
  name: string,
  fn: () => unknown,
  options: BenchOptions = {},
): Promise<BenchResult> {
  const warmupMs = options.warmupMs ?? 500;
  const durationMs = options.durationMs ?? 2000;
  const batch = options.batch ?? 1;
  const runBatch = async (): Promise<void> => {
    for (let i = 0; i < batch; i++) {
      const r = fn();
      if (r instanceof Promise) await r;
    }
  };
  const warmEnd = performance.now() + warmupMs;
  while (performance.now() < warmEnd) await runBatch();
  const perOp: number[] = [];
  let ops = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(durationMs) * 1_000_000n;
  let now = start;
  while (now < end) {
    const t0 = process.hrtime.bigint();
    await runBatch();
    now = process.hrtime.bigint();
    perOp.push(Number(now - t0) / 1000 / batch);
    ops += batch;
  }
  const elapsedS = Number(now - start) / 1e9;
  perOp.sort((a, b) => a - b);
  return {
    name,
    iterations: ops,
    opsPerSec: ops / elapsedS,
    medianUs: percentile(perOp, 50),
    p99Us: percentile(perOp, 99),
  };
}

export interface OpensslRate {
  sign: number;
  verify: number;
}

/**
 * `openssl speed -seconds N -mr <alg>` in this run; -mr lines look like `+F4:<n>:<bits>:<sign/s>:<verify/s>`
 * for ECDSA and `+F2:<n>:<bits>:<sign/s>:<verify/s>` for RSA.
 */
export function opensslSpeed(algorithm: 'ecdsap256' | 'ecdsap384' | 'rsa2048', seconds = 2): OpensslRate {
  const out = execFileSync('openssl', ['speed', '-seconds', String(seconds), '-mr', algorithm], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const line = out.split('\n').find((l) => /^\+F[2-9]:/.test(l));
  const parts = line?.split(':');
  if (parts === undefined || parts.length < 5)
    throw new Error(`bench: cannot parse openssl speed -mr output for ${algorithm}:\n${out}`);
  return { sign: Number(parts[3]), verify: Number(parts[4]) };
}

/**
 * The rate of sign+verify pairs `rate` allows on one core, 1 / (1/sign + 1/verify): one issuance is
 * one CSR signature check plus one certificate signature, so this is the reference for CA signing.
 */
export function pairRate(rate: OpensslRate): number {
  return 1 / (1 / rate.sign + 1 / rate.verify);
}

export interface Row {
  result: BenchResult;
  reference?: { name: string; opsPerSec: number };
  /** Goal as a fraction of the reference rate. */
  goal?: number;
}

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** Prints one aligned table; writes JSON to $BENCH_JSON when set. Returns false when a goal was missed. */
export function printTable(title: string, rows: Row[]): boolean {
  const header = ['benchmark', 'ops/s', 'median µs', 'p99 µs', 'reference', 'ref ops/s', 'ratio', 'goal', ''];
  const lines = rows.map(({ result, reference, goal }) => {
    const ratio = reference === undefined ? undefined : result.opsPerSec / reference.opsPerSec;
    const verdict = goal === undefined || ratio === undefined ? '' : ratio >= goal ? 'PASS' : 'FAIL';
    return [
      result.name,
      fmt(result.opsPerSec),
      fmt(result.medianUs, 1),
      fmt(result.p99Us, 1),
      reference?.name ?? '-',
      reference === undefined ? '-' : fmt(reference.opsPerSec),
      ratio === undefined ? '-' : `${fmt(ratio * 100, 1)}%`,
      goal === undefined ? '-' : `>= ${fmt(goal * 100)}%`,
      verdict,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const pad = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 || i === 4 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ');
  console.log(`\n${title}`);
  console.log(pad(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const l of lines) console.log(pad(l));
  if (process.env.BENCH_JSON) {
    writeFileSync(process.env.BENCH_JSON, JSON.stringify({ title, rows }, null, 2));
  }
  return lines.every((l) => l[8] !== 'FAIL');
}

/** Open file descriptors of a process (Linux; this one by default), or NaN. */
export function openFds(pid: number | 'self' = 'self'): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return Number.NaN;
  }
}

/** The soft limit on open files of this process (Linux; Infinity when unlimited or unknown). */
export function fdLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = Number(line?.split(/\s{2,}/)[1]);
    return Number.isFinite(soft) ? soft : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/** VmRSS and VmHWM (peak) of a process, in MB (Linux). */
export function memoryOf(pid: number): { rssMb: number; peakMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'))?.[1]);
  return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
}
