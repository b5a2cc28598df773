import { readFile } from 'node:fs/promises';
import type { PeerCredentials } from '../../common/peercred.js';
import type { Selector } from '../../server/datastore/types.js';
import type { WorkloadAttestor } from './types.js';

/**
 * The start time of a process from the text of its /proc/<pid>/stat: field 22, in clock ticks
 * since boot. Field 2 is the command name in parentheses and may itself hold spaces and
 * parentheses (a process can name itself `a) (b`), so the fields are counted from after the LAST
 * ')'. Throws on text that is not a stat line.
 */
export function parseStartTime(statText: string): string {
  const close = statText.lastIndexOf(')');
  // After the ')' come a space and field 3 (the state); field 22 is 19 fields further on.
  const startTime = close < 0 ? undefined : statText.slice(close + 2).split(' ')[19];
  if (startTime === undefined || !/^\d+$/.test(startTime))
    throw new Error(
      `workload attestation: cannot read a start time (field 22) from the /proc stat line "${statText.slice(0, 80)}"`,
    );
  return startTime;
}

/** The start time of process `pid` (parseStartTime), or undefined when there is no such process. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw new Error(
      `workload attestation: cannot read /proc/${pid}/stat: ${code ?? (err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  return parseStartTime(text);
}

/**
 * The selectors of the process behind a connection: every attestor's, without duplicates, in the
 * order the attestors gave them. Guards against pid reuse: the process's start time is read before
 * and after the attestors run and must be the same, so selectors read from /proc belong to the
 * process that was there throughout. Throws when the process is gone or was replaced (an attestor
 * that failed because of that is the cause), or when an attestor fails.
 */
export async function attestWorkload(
  caller: PeerCredentials,
  attestors: readonly WorkloadAttestor[],
  opts: { acceptedStartTime?: string } = {},
): Promise<Selector[]> {
  const gone = (cause?: unknown) =>
    new Error(
      `workload attestation: process ${caller.pid} exited or was replaced during attestation`,
      cause === undefined ? undefined : { cause },
    );
  const before = await processStartTime(caller.pid);
  // The start time read when the connection was accepted closes the window between accepting and
  // attesting: the process behind the pid now must be the one that connected.
  if (before === undefined || (opts.acceptedStartTime !== undefined && before !== opts.acceptedStartTime))
    throw gone();
  const still = async () => (await processStartTime(caller.pid)) === before;
  let all: Selector[][];
  try {
    all = await Promise.all(attestors.map((a) => a.attest(caller)));
  } catch (err) {
    // An attestor that tripped over a vanished /proc/<pid> is the pid-reuse case, not its own bug.
    if (!(await still())) throw gone(err);
    throw err;
  }
  if (!(await still())) throw gone();
  const seen = new Set<string>();
  return all.flat().filter((s) => {
    const key = `${s.type}:${s.value}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
