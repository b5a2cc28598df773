import { readFileSync } from 'node:fs';
import type { PeerCredentials } from '../../common/peercred.js';
import type { Selector } from '../../server/datastore/types.js';
import type { WorkloadAttestor } from './types.js';

/**
 * The start time of a process (field 22 of /proc/<pid>/stat, in clock ticks since boot), or
 * undefined when it is gone. The command name (field 2) may hold spaces and parentheses, so the
 * fields are read after the last ')'.
 */
export function processStartTime(pid: number, statText?: string): string | undefined {
  let text = statText;
  if (text === undefined) {
    try {
      text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      return undefined;
    }
  }
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state), so field 22 is rest[19].
  return rest[19];
}

/**
 * Runs the attestors on the caller and de-duplicates their selectors. Guards against pid reuse:
 * the process's start time is read before and after, and must not have changed.
 */
export async function attestWorkload(
  caller: PeerCredentials,
  attestors: readonly WorkloadAttestor[],
): Promise<Selector[]> {
  const before = processStartTime(caller.pid);
  if (before === undefined)
    throw new Error(`workload attestation: process ${caller.pid} exited before it could be attested`);
  const all = (await Promise.all(attestors.map((a) => a.attest(caller)))).flat();
  if (processStartTime(caller.pid) !== before)
    throw new Error(`workload attestation: process ${caller.pid} exited or was replaced during attestation`);
  const seen = new Set<string>();
  return all.filter((s) => {
    const k = `${s.type}:${s.value}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
