// Whether processes of other users can connect to the agent's socket. The agent makes the socket
// 0777 and its own directory 0755 (attestation, not file modes, decides who gets what), but a
// directory above it that it did not create may be closed — a 0700 /run/tessera left by an older
// server, a socket_path under a home directory — and then every workload of another user gets only
// "permission denied" from connect(2). Connecting needs search (x) on every directory of the path
// and write on the socket; for "any other user" that is the "others" bits.
import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import { DEFAULT_WORKLOAD_API_SOCKET } from '@tessera/spiffe';

/** A directory (or the socket itself) that keeps other users out. */
export interface SocketAccessProblem {
  readonly path: string;
  /** Its permission bits, e.g. 0o700. */
  readonly mode: number;
  readonly uid: number;
  /** 'directory': others lack x; 'socket': others lack w. */
  readonly kind: 'directory' | 'socket';
}

/** What keeps processes of other users from connecting to `socketPath`: none when they can. */
export function socketAccessProblems(socketPath: string): SocketAccessProblem[] {
  const problems: SocketAccessProblem[] = [];
  const dirs: string[] = [];
  for (let d = dirname(socketPath); ; d = dirname(d)) {
    dirs.unshift(d);
    if (d === dirname(d)) break;
  }
  for (const d of dirs) {
    const st = statSync(d, { throwIfNoEntry: false });
    if (st !== undefined && (st.mode & 0o001) === 0)
      problems.push({ path: d, mode: st.mode & 0o7777, uid: st.uid, kind: 'directory' });
  }
  const st = statSync(socketPath, { throwIfNoEntry: false });
  if (st !== undefined && (st.mode & 0o002) === 0)
    problems.push({ path: socketPath, mode: st.mode & 0o7777, uid: st.uid, kind: 'socket' });
  return problems;
}

const octal = (mode: number) => `0${mode.toString(8)}`;

/**
 * The warning for `problems` of the socket `socketPath` (set by `configKey`): what is closed, its
 * mode and owner, who can still connect, and the commands that open it.
 */
export function socketAccessWarning(
  socketPath: string,
  configKey: string,
  problems: readonly SocketAccessProblem[],
): string {
  const dirs = problems.filter((p) => p.kind === 'directory');
  const socket = problems.find((p) => p.kind === 'socket');
  const what = [
    ...dirs.map((p) => `${p.path} is ${octal(p.mode)} (owner uid ${p.uid}): others may not enter it`),
    ...(socket === undefined ? [] : [`the socket is ${octal(socket.mode)}: others may not write to it`]),
  ].join('; ');
  const fixes = [
    ...(dirs.length === 0 ? [] : [`chmod o+x ${dirs.map((p) => p.path).join(' ')}`]),
    ...(socket === undefined ? [] : [`chmod o+w ${socketPath}`]),
  ].join(' and ');
  return (
    `agent socket ${socketPath}: processes of other users cannot connect to it: ${what}. ` +
    `Their Workload API calls fail with "permission denied"; only root, and users the owner and group bits let through, can connect. ` +
    `Run ${fixes}, or set ${configKey} to a path every directory of which others may enter (the default is ${DEFAULT_WORKLOAD_API_SOCKET})`
  );
}
