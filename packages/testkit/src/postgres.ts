/**
 * A throwaway PostgreSQL cluster for tests: initdb into a temp dir, started on a private Unix
 * socket (no TCP), stopped and deleted afterwards. Uses the server binaries on PATH or under
 * /usr/lib/postgresql/<version>/bin. initdb refuses to run as root, so as root the cluster runs
 * as the `postgres` user.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface PostgresCluster {
  /** libpq connection string for the superuser `postgres` over the private socket. */
  readonly connectionString: string;
  readonly socketDir: string;
  readonly port: number;
  /** The data directory (postgresql.conf is there). */
  readonly dataDir: string;
  /** The directory of initdb and pg_ctl. */
  readonly bin: string;
  /** The user the server runs as when this process is root (postgres), else undefined (this process's). */
  readonly user: { uid: number; gid: number } | undefined;
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  /** listen_addresses, e.g. 127.0.0.1 to accept TCP on `port` too; default '' (the socket only). */
  listenAddresses?: string;
}

/** The directory holding initdb and pg_ctl, or undefined when PostgreSQL server binaries are not installed. */
export function findPostgresBin(): string | undefined {
  const onPath = (process.env.PATH ?? '')
    .split(':')
    .find((d) => d !== '' && existsSync(join(d, 'initdb')) && existsSync(join(d, 'pg_ctl')));
  if (onPath !== undefined) return onPath;
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base).sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const bin = join(base, v, 'bin');
    if (existsSync(join(bin, 'initdb'))) return bin;
  }
  return undefined;
}

function postgresUser(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined;
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

let nextPort = 15432 + (process.pid % 2000);

/** Starts a fresh cluster. Throws with the server's output when it cannot. */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<PostgresCluster> {
  const bin = findPostgresBin();
  if (bin === undefined) throw new Error('testkit: PostgreSQL server binaries (initdb, pg_ctl) not found');
  const dir = mkdtempSync(join(tmpdir(), 'pg-'));
  const data = join(dir, 'data');
  const as = postgresUser();
  if (as !== undefined) chownSync(dir, as.uid, as.gid);
  const opts = as === undefined ? {} : { uid: as.uid, gid: as.gid };
  await run(
    join(bin, 'initdb'),
    ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'],
    opts,
  );
  const port = nextPort++;
  const serverOpts = `-k ${dir} -p ${port} -c listen_addresses='${options.listenAddresses ?? ''}' -c fsync=off -c max_connections=200`;
  try {
    await run(
      join(bin, 'pg_ctl'),
      ['-D', data, '-o', serverOpts, '-l', join(dir, 'log'), '-w', 'start'],
      opts,
    );
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    connectionString: `postgresql://postgres@localhost/postgres?host=${encodeURIComponent(dir)}&port=${port}`,
    socketDir: dir,
    port,
    dataDir: data,
    bin,
    user: as,
    stop: async () => {
      try {
        await run(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop'], opts);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/**
 * Whether a PostgreSQL suite can run. When the server binaries are missing it registers, in the
 * current suite, a failing test if TESSERA_REQUIRE_POSTGRES=1 (as CI sets) or else a skipped test
 * plus a loud warning — so a missing PostgreSQL is never silently green. Returns true when available.
 */
export function postgresAvailable(suite: string): boolean {
  if (findPostgresBin() !== undefined) return true;
  const why =
    'PostgreSQL server binaries (initdb, pg_ctl) not found; install them (apt-get install -y postgresql)';
  if (process.env.TESSERA_REQUIRE_POSTGRES === '1') {
    it(`${suite}: PostgreSQL server binaries are installed`, () => {
      throw new Error(`${why}. TESSERA_REQUIRE_POSTGRES=1 makes this a failure`);
    });
  } else {
    console.warn(
      `*** ${suite.toUpperCase()} ON POSTGRESQL SKIPPED: ${why}; set TESSERA_REQUIRE_POSTGRES=1 to make this a failure. ***`,
    );
    it(`${suite} on PostgreSQL`, { skip: why }, () => {});
  }
  return false;
}
