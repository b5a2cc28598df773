// Which container a process is in, from what the kernel says: its cgroup paths (/proc/<pid>/cgroup),
// or, when those name no container, the roots of the cgroup file systems mounted in its mount
// namespace (/proc/<pid>/mountinfo). Pure parsing here; reading /proc is in findContainer.
import { readFile, readlink } from 'node:fs/promises';

/** Who runs the container, as far as its cgroup path says. */
export type ContainerRuntime = 'docker' | 'podman' | 'containerd' | 'crio' | 'unknown';

export interface ContainerRef {
  /** The 64-hex container ID. */
  id: string;
  runtime: ContainerRuntime;
  /** Where it was found: the cgroup path or mount root, for messages. */
  source: string;
}

const ID = /(?:^|[^0-9a-f])([0-9a-f]{64})(?![0-9a-f])/;

/** The runtime a cgroup path names just before the container ID (`docker-<id>.scope`, `/docker/<id>`). */
function runtimeOf(before: string): ContainerRuntime {
  const near = before.slice(-64);
  if (/(?:^|[/:-])docker[-/:]$/.test(near) || /\/docker\/$/.test(near)) return 'docker';
  if (/libpod[-/:]$/.test(near)) return 'podman';
  if (/cri-containerd[-/:]$/.test(near) || /containerd[-/:]$/.test(near)) return 'containerd';
  if (/crio[-/:]$/.test(near)) return 'crio';
  return 'unknown';
}

/**
 * The container a cgroup path (or a cgroup mount root) names: the last 64-hex segment, walking back
 * from the end, so a container nested in another (kind, docker in docker) is the inner one.
 * Layouts: cgroupfs `/docker/<id>`, systemd `/system.slice/docker-<id>.scope`, podman
 * `libpod-<id>.scope`, containerd and CRI `cri-containerd-<id>.scope`, `crio-<id>.scope`,
 * `kubepods.slice/…:cri-containerd:<id>`, `/kubepods/<qos>/pod<uid>/<id>`.
 */
export function containerInPath(path: string): ContainerRef | undefined {
  const segments = path.split('/');
  for (let i = segments.length - 1; i >= 0; i--) {
    const seg = segments[i] as string;
    const m = ID.exec(seg);
    if (m === null) continue;
    const id = m[1] as string;
    const start = seg.indexOf(id);
    const before = `${segments.slice(0, i).join('/')}/${seg.slice(0, start)}`;
    return { id, runtime: runtimeOf(before), source: path };
  }
  return undefined;
}

/** The cgroup paths of a /proc/<pid>/cgroup text: `hierarchy:controllers:path` lines. */
export function cgroupPaths(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) throw new Error(`not a /proc cgroup line: ${JSON.stringify(line.slice(0, 120))}`);
    out.push(line.slice(second + 1));
  }
  return out;
}

/** The roots of the cgroup and cgroup2 mounts of a /proc/<pid>/mountinfo text (field 4, before " - "). */
export function cgroupMountRoots(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const dash = line.indexOf(' - ');
    if (dash < 0) continue;
    const fsType = line.slice(dash + 3).split(' ')[0];
    if (fsType !== 'cgroup' && fsType !== 'cgroup2') continue;
    // Octal escapes (\040 for a space) as the kernel writes them.
    const root = (line.slice(0, dash).split(' ')[3] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) =>
      String.fromCharCode(Number.parseInt(o, 8)),
    );
    if (root !== '' && root !== '/') out.push(root);
  }
  return out;
}

/**
 * The one container that `paths` name, undefined when none names a container; throws when two name
 * different containers (no guess is made between them).
 */
export function oneContainer(paths: readonly string[], where: string): ContainerRef | undefined {
  let found: ContainerRef | undefined;
  for (const p of paths) {
    const c = containerInPath(p);
    if (c === undefined) continue;
    if (found !== undefined && found.id !== c.id)
      throw new Error(
        `${where} names two containers, ${found.id} (${found.source}) and ${c.id} (${c.source})`,
      );
    // The path that names the runtime wins over one that does not (cgroup v1 lists one per hierarchy).
    if (found === undefined || found.runtime === 'unknown') found = c;
  }
  return found;
}

/** Reads a /proc file of `pid`; undefined when the process is gone (attestWorkload then refuses it). */
async function procText(pid: number, name: string): Promise<string | undefined> {
  try {
    return await readFile(`/proc/${pid}/${name}`, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw new Error(`cannot read /proc/${pid}/${name}: ${code ?? (err as Error).message}`, { cause: err });
  }
}

/**
 * The container process `pid` is in, or undefined when it is in none. The cgroup file is the
 * kernel's and cannot be forged by the process; it decides whenever it names a container. Only
 * when it names none (the agent in a cgroup namespace that hides the path) is mountinfo read, and
 * only for a process in the agent's own user namespace: mountinfo describes the process's mount
 * namespace, which a process with a user namespace of its own can fill with a bind mount of
 * another container's cgroup directory.
 */
export async function findContainer(pid: number): Promise<ContainerRef | undefined> {
  const cgroup = await procText(pid, 'cgroup');
  if (cgroup === undefined) return undefined;
  const fromCgroup = oneContainer(cgroupPaths(cgroup), `/proc/${pid}/cgroup`);
  if (fromCgroup !== undefined) return fromCgroup;
  const [theirs, ours] = await Promise.all([
    readlink(`/proc/${pid}/ns/user`).catch(() => undefined),
    readlink('/proc/self/ns/user').catch(() => undefined),
  ]);
  if (theirs === undefined || ours === undefined || theirs !== ours) return undefined;
  const mountinfo = await procText(pid, 'mountinfo');
  if (mountinfo === undefined) return undefined;
  return oneContainer(cgroupMountRoots(mountinfo), `/proc/${pid}/mountinfo`);
}
