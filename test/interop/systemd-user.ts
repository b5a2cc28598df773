// A real systemd for tests: `systemd --user` (Debian's systemd) as root, in a cgroup of its own
// (a fresh directory under the named systemd hierarchy and the unified one, created and removed by
// the harness) and in its own cgroup and mount namespaces, where /sys/fs/cgroup is a tmpfs holding
// only those two hierarchies mounted afresh (so the manager sees its cgroup as the root and cannot
// reach the host's controller hierarchies), and /run/systemd/system exists (systemd refuses to run a
// user instance on a host not booted with systemd otherwise). Its runtime directory
// (XDG_RUNTIME_DIR) is a temp dir: the private socket is <dir>/systemd/private, the user bus (from
// dbus-user-session's dbus.socket) <dir>/bus. The host's own cgroups and its pid 1 are not touched.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { onPath, suiteUnavailable } from '@tessera/testkit';

export const SYSTEMD = '/lib/systemd/systemd';

/** Where the host's hierarchies systemd uses are mounted: cgroup v1 with a unified one beside it (hybrid), or v2 only. */
function hierarchies(): { named?: string; unified: string } | undefined {
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) return { unified: '/sys/fs/cgroup' };
  if (existsSync('/sys/fs/cgroup/systemd/cgroup.procs') && existsSync('/sys/fs/cgroup/unified/cgroup.procs'))
    return { named: '/sys/fs/cgroup/systemd', unified: '/sys/fs/cgroup/unified' };
  return undefined;
}

/** True (skip) when systemd, systemd-run, unshare, root or a usable cgroup layout is missing; loudly. */
export function systemdUnavailable(suite: string, needs: readonly string[] = []): boolean {
  const missing: string[] = ['systemd-run', 'systemctl', 'unshare'].filter((p) => !onPath(p));
  if (!existsSync(SYSTEMD)) missing.push(SYSTEMD);
  for (const f of needs) if (!existsSync(f)) missing.push(f);
  if (process.getuid?.() !== 0) missing.push('root (to make a cgroup and namespaces for systemd --user)');
  if (hierarchies() === undefined) missing.push('a cgroup2 hierarchy (hybrid or unified) at /sys/fs/cgroup');
  if (missing.length === 0) return false;
  return suiteUnavailable(
    suite,
    `missing ${missing.join(', ')}; run test/interop/setup.sh as root (apt-get install -y systemd dbus-user-session)`,
    'systemd --user can run',
  );
}

export interface SystemdUser {
  /** XDG_RUNTIME_DIR of the manager. */
  readonly runtimeDir: string;
  /** The user bus (dbus-daemon started by the manager's dbus.socket). */
  readonly busAddress: string;
  /** The manager's private socket (a direct D-Bus connection, no bus daemon). */
  readonly privateAddress: string;
  /** Runs `systemd-run --user --wait --unit=<unit> …` and resolves when the unit has exited. */
  run(
    unit: string,
    command: readonly string[],
    opts?: { env?: Record<string, string>; stdout?: string },
  ): Promise<void>;
  /** systemctl --user … against this manager. */
  systemctl(args: readonly string[]): Promise<string>;
  /** Stops the manager (its units with it), then removes the cgroup directories it ran in. */
  stop(): Promise<void>;
}

function exec(file: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(file, [...args], { env, timeout: 60_000 }, (err, stdout, stderr) =>
      err === null
        ? resolve(stdout)
        : reject(
            Object.assign(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`), {
              code: err.code,
            }),
          ),
    ),
  );
}

/** Removes a cgroup directory and the ones below it, deepest first (cgroup directories hold no files to delete). */
function removeCgroup(dir: string): void {
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir))
    if (statSync(join(dir, name)).isDirectory()) removeCgroup(join(dir, name));
  rmdirSync(dir);
}

export async function startSystemdUser(dir: string): Promise<SystemdUser> {
  const h = hierarchies();
  if (h === undefined) throw new Error('systemd-user: no cgroup2 hierarchy at /sys/fs/cgroup');
  const runtimeDir = join(dir, 'runtime');
  mkdirSync(runtimeDir, { recursive: true, mode: 0o700 });
  const name = `tessera-test-${process.pid}-${Date.now()}`;
  const cgroups = [h.unified, ...(h.named === undefined ? [] : [h.named])].map((root) => join(root, name));
  for (const c of cgroups) mkdirSync(c);
  // Inside the namespaces: /sys/fs/cgroup is replaced by the two hierarchies, mounted afresh, so
  // their root is the cgroup made above; /run/systemd is a tmpfs with the directory systemd looks for.
  const inside =
    h.named === undefined
      ? 'mount --make-rprivate / && mount -t cgroup2 cgroup2 /sys/fs/cgroup'
      : [
          'mount --make-rprivate /',
          'mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup',
          'mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified',
          'mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd',
          'mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified',
        ].join(' && ');
  const script = [
    'set -e',
    ...cgroups.map((c) => `echo $$ > ${c}/cgroup.procs`),
    `exec unshare --cgroup --mount --kill-child=SIGTERM sh -c '${inside} && mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && exec ${SYSTEMD} --user'`,
  ].join('\n');
  const env: NodeJS.ProcessEnv = { ...process.env, XDG_RUNTIME_DIR: runtimeDir };
  delete env.DBUS_SESSION_BUS_ADDRESS;
  let stderr = '';
  const child: ChildProcess = spawn('bash', ['-c', script], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const cleanup = () => {
    for (const c of cgroups) removeCgroup(c);
  };
  try {
    // The private socket appears once the manager is up; no event says so to a process that is not
    // its parent manager, so its existence is polled, with a deadline.
    const privateSocket = join(runtimeDir, 'systemd', 'private');
    for (const deadline = Date.now() + 20_000; !existsSync(privateSocket); ) {
      if (child.exitCode !== null) throw new Error(`systemd --user exited (${child.exitCode}):\n${stderr}`);
      if (Date.now() > deadline)
        throw new Error(`systemd --user did not make ${privateSocket} within 20 s:\n${stderr}`);
      await delay(50);
    }
    // Then wait for its start-up jobs (the user bus socket among them) to finish.
    await exec('systemctl', ['--user', 'is-system-running', '--wait'], env).catch(() => undefined);
  } catch (err) {
    child.kill('SIGTERM');
    if (child.exitCode === null) await once(child, 'exit');
    cleanup();
    throw err;
  }
  return {
    runtimeDir,
    busAddress: `unix:path=${join(runtimeDir, 'bus')}`,
    privateAddress: `unix:path=${join(runtimeDir, 'systemd', 'private')}`,
    async run(unit, command, opts = {}) {
      await exec(
        'systemd-run',
        [
          '--user',
          '--wait',
          '--collect',
          '--quiet',
          `--unit=${unit}`,
          ...Object.entries(opts.env ?? {}).map(([k, v]) => `--setenv=${k}=${v}`),
          ...(opts.stdout === undefined ? [] : [`--property=StandardOutput=file:${opts.stdout}`]),
          ...command,
        ],
        env,
      ).catch((err: Error & { code?: unknown }) => {
        // systemd-run --wait exits with the unit's status: a refused peer is not the harness failing.
        if (typeof err.code !== 'number') throw err;
      });
    },
    systemctl: (args) => exec('systemctl', ['--user', ...args], env),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        await exec('systemctl', ['--user', 'exit'], env).catch(() => child.kill('SIGTERM'));
        await once(child, 'exit');
      }
      cleanup();
    },
  };
}
