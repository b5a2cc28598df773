// A real Docker daemon for tests: Debian's dockerd (docker.io), started by the test on a socket in
// a temp dir with its own data and exec roots, no bridge and no iptables, and live-restore so its
// containers outlive a stop of the daemon (what "dockerd is down" looks like to a workload). No
// registry: the one image is `docker import` of a root file system made here (busybox-static and
// the static go-spiffe peer, go/bin/interop-static from setup-workload-attestors.sh).
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { onPath, suiteUnavailable } from '@tessera/testkit';
import { INTEROP_DIR } from './verdicts.js';

/** go-spiffe's workload peer built with CGO_ENABLED=0: it runs in a container with no libc. */
export const GO_STATIC_BINARY = join(INTEROP_DIR, 'go', 'bin', 'interop-static');
export const BUSYBOX = '/bin/busybox';

/** What the docker suite runs. */
export const DOCKER_PROGRAMS = [
  'dockerd',
  'docker',
  'containerd',
  'containerd-shim-runc-v2',
  'runc',
] as const;

/** True (skip) when dockerd, the static peer or root is missing, said loudly (or a failure with TESSERA_REQUIRE_INTEROP=1). */
export function dockerUnavailable(suite: string): boolean {
  const missing: string[] = DOCKER_PROGRAMS.filter((p) => !onPath(p));
  for (const f of [GO_STATIC_BINARY, BUSYBOX]) if (!existsSync(f)) missing.push(f);
  if (process.getuid?.() !== 0) missing.push('root (dockerd runs as root)');
  if (missing.length === 0) return false;
  return suiteUnavailable(
    suite,
    `missing ${missing.join(', ')}; run test/interop/setup.sh as root (apt-get install -y docker.io busybox-static, and the static go-spiffe peer)`,
    'dockerd and the static go-spiffe peer are available',
  );
}

export interface Dockerd {
  /** The daemon's API socket. */
  readonly socket: string;
  /** Runs the docker CLI against this daemon (API 1.41: the CLI may be newer than the daemon). */
  docker(args: readonly string[]): Promise<string>;
  /** SIGTERM, and wait for it to exit; live-restore keeps the containers running. */
  stop(): Promise<void>;
  /** Starts it again on the same directories (it finds its running containers). */
  start(): Promise<void>;
  /** SIGSTOP / SIGCONT: a daemon that accepts connections and answers nothing. */
  pause(): void;
  resume(): void;
  /** Removes every container, stops the daemon, unmounts what it left mounted, deletes its dirs. */
  cleanup(): Promise<void>;
}

const API_VERSION = '1.41';

export async function startDockerd(dir: string): Promise<Dockerd> {
  const socket = join(dir, 'docker.sock');
  const env = { ...process.env, DOCKER_HOST: `unix://${socket}`, DOCKER_API_VERSION: API_VERSION };
  let child: ChildProcess | undefined;
  let log = '';

  const start = async () => {
    const d = spawn(
      'dockerd',
      [
        '--host',
        `unix://${socket}`,
        '--data-root',
        join(dir, 'root'),
        '--exec-root',
        join(dir, 'exec'),
        '--pidfile',
        join(dir, 'dockerd.pid'),
        '--bridge=none',
        '--iptables=false',
        '--ip6tables=false',
        '--live-restore',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child = d;
    // dockerd says "API listen on <socket>" once it serves; that line is the readiness event.
    await new Promise<void>((resolve, reject) => {
      const lines = createInterface({ input: d.stderr as NodeJS.ReadableStream });
      const onExit = (code: number | null) =>
        reject(new Error(`dockerd exited (${code}) before it served its API:\n${log.slice(-3000)}`));
      d.once('exit', onExit);
      lines.on('line', (line) => {
        log += `${line}\n`;
        if (line.includes('API listen on')) {
          d.off('exit', onExit);
          resolve();
        }
      });
    });
  };
  await start();

  const docker = (args: readonly string[]) =>
    new Promise<string>((resolve, reject) =>
      execFile('docker', [...args], { env, timeout: 60_000 }, (err, stdout, stderr) =>
        err === null
          ? resolve(stdout)
          : reject(new Error(`docker ${args.join(' ')}: ${err.message}\n${stderr}`)),
      ),
    );
  const stop = async () => {
    const d = child;
    if (d === undefined || d.exitCode !== null || d.signalCode !== null) return;
    d.kill('SIGCONT');
    d.kill('SIGTERM');
    await once(d, 'exit');
  };
  return {
    socket,
    docker,
    stop,
    start,
    pause: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
    async cleanup() {
      try {
        if (child?.exitCode !== null || child?.signalCode !== null) await start();
        const ids = (await docker(['ps', '-aq', '--no-trunc'])).split('\n').filter((l) => l !== '');
        if (ids.length > 0) await docker(['rm', '-f', ...ids]);
      } finally {
        await stop();
        // Mounts dockerd left under its data root (the root's bind mount on itself, overlays), deepest first.
        const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
          .split('\n')
          .map((l) => l.split(' ')[4] ?? '')
          .filter((m) => m === dir || m.startsWith(`${dir}/`))
          .sort((a, b) => b.length - a.length);
        for (const m of mounts)
          await new Promise<void>((resolve) => execFile('umount', ['-l', m], () => resolve()));
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

/**
 * A root file system in `dir`/rootfs: busybox (sh, sleep, cat, echo) and the static go-spiffe peer
 * as /interop; imported as image `name`. Returns the image ID (sha256:…).
 */
export async function importTestImage(d: Dockerd, dir: string, name: string): Promise<string> {
  const root = join(dir, 'rootfs');
  mkdirSync(join(root, 'bin'), { recursive: true });
  copyFileSync(BUSYBOX, join(root, 'bin', 'busybox'));
  for (const tool of ['sh', 'sleep', 'cat', 'echo', 'rm']) symlinkSync('busybox', join(root, 'bin', tool));
  copyFileSync(GO_STATIC_BINARY, join(root, 'interop'));
  const tar = join(dir, 'rootfs.tar');
  await new Promise<void>((resolve, reject) =>
    execFile('tar', ['-C', root, '-cf', tar, '.'], (err) => (err === null ? resolve() : reject(err))),
  );
  return (await d.docker(['import', tar, name])).trim();
}
