// The `unix` workload attestor: uid, user, gid, group, supplementary groups, the executable's path
// and (opt-in) its SHA-256, all from the kernel (the connection's peer credentials, /proc) and the
// local user and group files, never from what the caller says. No shelling out.
import { createHash } from 'node:crypto';
import { type FileHandle, open, readFile, readlink } from 'node:fs/promises';
import type { PeerCredentials } from '../../common/peercred.js';
import type { Selector } from '../../server/datastore/types.js';
import type { WorkloadAttestor } from './types.js';

export interface UnixWorkloadAttestorOptions {
  /** Add `unix:sha256:<hex>` of the caller's executable (hashed once per binary). Default false. */
  sha256?: boolean;
  /** Where user and group names come from; tests point these elsewhere. */
  passwdFile?: string;
  groupFile?: string;
}

/** How many binaries' hashes are kept; the oldest is forgotten first. */
const MAX_CACHED_HASHES = 1024;

/** id → name from /etc/passwd or /etc/group (`name:x:id:...`); the first line for an id wins, as getpwuid. */
async function namesById(file: string): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return out; // no such file: no names, only numbers
  }
  for (const line of text.split('\n')) {
    const [name, , id] = line.split(':');
    if (name !== undefined && name !== '' && id !== undefined && /^\d+$/.test(id) && !out.has(Number(id)))
      out.set(Number(id), name);
  }
  return out;
}

/** The process's supplementary groups: the `Groups:` line of /proc/<pid>/status (empty when gone). */
async function supplementaryGids(pid: number): Promise<number[]> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/status`, 'utf8');
  } catch {
    return []; // gone: attestWorkload's start-time check refuses the caller
  }
  const line = text.split('\n').find((l) => l.startsWith('Groups:'));
  return (line?.slice('Groups:'.length).trim().split(/\s+/) ?? []).filter((g) => /^\d+$/.test(g)).map(Number);
}

/** SHA-256 of an open file, read from its start. */
async function sha256Of(file: FileHandle): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let position = 0; ; ) {
    const { bytesRead } = await file.read(buf, 0, buf.length, position);
    if (bytesRead === 0) return h.digest('hex');
    h.update(buf.subarray(0, bytesRead));
    position += bytesRead;
  }
}

/** The identity of a binary's content as the file system sees it. */
const fileKey = (st: { dev: number; ino: number; mtimeMs: number; size: number }) =>
  `${st.dev}:${st.ino}:${st.mtimeMs}:${st.size}`;

/** The keys of the selectors this attestor yields: `unix:<key>:<value>`. */
export const UNIX_SELECTOR_KEYS = [
  'uid',
  'user',
  'gid',
  'group',
  'supplementary_gid',
  'supplementary_group',
  'path',
  'sha256',
] as const;

export class UnixWorkloadAttestor implements WorkloadAttestor {
  readonly type = 'unix';
  readonly #sha256: boolean;
  readonly #passwdFile: string;
  readonly #groupFile: string;
  /** Binary hashes by (device, inode, mtime, size): each binary is hashed once until it changes. */
  readonly #hashes = new Map<string, Promise<string>>();

  constructor(opts: UnixWorkloadAttestorOptions = {}) {
    this.#sha256 = opts.sha256 ?? false;
    this.#passwdFile = opts.passwdFile ?? '/etc/passwd';
    this.#groupFile = opts.groupFile ?? '/etc/group';
  }

  async attest(caller: PeerCredentials): Promise<Selector[]> {
    const sel = (value: string): Selector => ({ type: 'unix', value });
    const [users, groups, supplementary, exe] = await Promise.all([
      namesById(this.#passwdFile),
      namesById(this.#groupFile),
      supplementaryGids(caller.pid),
      // Another user's process when the agent lacks ptrace rights over it (EACCES), or gone: no path.
      readlink(`/proc/${caller.pid}/exe`).catch(() => undefined),
    ]);
    const out: Selector[] = [sel(`uid:${caller.uid}`)];
    const user = users.get(caller.uid);
    if (user !== undefined) out.push(sel(`user:${user}`));
    out.push(sel(`gid:${caller.gid}`));
    const group = groups.get(caller.gid);
    if (group !== undefined) out.push(sel(`group:${group}`));
    for (const g of supplementary) {
      out.push(sel(`supplementary_gid:${g}`));
      const name = groups.get(g);
      if (name !== undefined) out.push(sel(`supplementary_group:${name}`));
    }
    // A binary deleted or replaced since the process started has no path that names it any more.
    if (exe !== undefined && !exe.endsWith(' (deleted)')) {
      out.push(sel(`path:${exe}`));
      if (this.#sha256) out.push(sel(`sha256:${await this.#hashOf(caller.pid)}`));
    }
    return out;
  }

  /**
   * The SHA-256 of the executable of `pid`, opened through /proc/<pid>/exe (the very file the
   * process runs, even if its path has since been reused) and read through that descriptor, so the
   * process may exit meanwhile. A hash is kept only if the file did not change while it was read.
   */
  async #hashOf(pid: number): Promise<string> {
    const file = await open(`/proc/${pid}/exe`, 'r');
    try {
      const key = fileKey(await file.stat());
      let hash = this.#hashes.get(key);
      if (hash === undefined) {
        hash = sha256Of(file).then(async (h) => {
          if (fileKey(await file.stat()) !== key) this.#hashes.delete(key);
          return h;
        });
        hash.catch(() => this.#hashes.delete(key));
        this.#hashes.set(key, hash);
        if (this.#hashes.size > MAX_CACHED_HASHES) {
          const oldest = this.#hashes.keys().next().value;
          if (oldest !== undefined) this.#hashes.delete(oldest);
        }
      }
      // Awaited before the finally closes `file`, which a first hashing reads from.
      return await hash;
    } finally {
      await file.close();
    }
  }
}
