// The `unix` workload attestor: uid, user, gid, group, supplementary groups, the executable's path
// and (opt-in) its SHA-256, all read from the kernel and /proc, never from the caller.
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, readlinkSync, statSync } from 'node:fs';
import type { PeerCredentials } from '../../common/peercred.js';
import type { Selector } from '../../server/datastore/types.js';
import type { WorkloadAttestor } from './types.js';

/** name → id and id → name from /etc/passwd or /etc/group (name:x:id:...). */
function namesById(file: string): Map<number, string> {
  const out = new Map<number, string>();
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const [name, , id] = line.split(':');
    if (name !== undefined && name !== '' && id !== undefined && /^\d+$/.test(id) && !out.has(Number(id)))
      out.set(Number(id), name);
  }
  return out;
}

/** The process's supplementary groups (the `Groups:` line of /proc/<pid>/status). */
function supplementaryGids(pid: number): number[] {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Groups:'));
    return (line?.slice('Groups:'.length).trim().split(/\s+/) ?? [])
      .filter((g) => /^\d+$/.test(g))
      .map(Number);
  } catch {
    return [];
  }
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

export class UnixWorkloadAttestor implements WorkloadAttestor {
  readonly type = 'unix';
  readonly #sha256: boolean;
  /** Binary hashes by (device, inode, mtime, size): a binary is hashed once until it changes. */
  readonly #hashes = new Map<string, string>();

  constructor(opts: { sha256?: boolean } = {}) {
    this.#sha256 = opts.sha256 ?? false;
  }

  async attest(caller: PeerCredentials): Promise<Selector[]> {
    const sel = (value: string): Selector => ({ type: 'unix', value });
    const users = namesById('/etc/passwd');
    const groups = namesById('/etc/group');
    const out: Selector[] = [sel(`uid:${caller.uid}`), sel(`gid:${caller.gid}`)];
    const user = users.get(caller.uid);
    if (user !== undefined) out.push(sel(`user:${user}`));
    const group = groups.get(caller.gid);
    if (group !== undefined) out.push(sel(`group:${group}`));
    for (const g of supplementaryGids(caller.pid)) {
      out.push(sel(`supplementary_gid:${g}`));
      const name = groups.get(g);
      if (name !== undefined) out.push(sel(`supplementary_group:${name}`));
    }
    let exe: string | undefined;
    try {
      exe = readlinkSync(`/proc/${caller.pid}/exe`);
    } catch {
      exe = undefined; // another user's process without ptrace rights, or gone: no path selector
    }
    if (exe !== undefined && !exe.endsWith(' (deleted)')) {
      out.push(sel(`path:${exe}`));
      if (this.#sha256) {
        const st = statSync(`/proc/${caller.pid}/exe`);
        const key = `${st.dev}:${st.ino}:${st.mtimeMs}:${st.size}`;
        let hash = this.#hashes.get(key);
        if (hash === undefined) {
          hash = await sha256File(`/proc/${caller.pid}/exe`);
          this.#hashes.set(key, hash);
        }
        out.push(sel(`sha256:${hash}`));
      }
    }
    return out;
  }
}
