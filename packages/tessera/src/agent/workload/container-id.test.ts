import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  cgroupMountRoots,
  cgroupPaths,
  containerInPath,
  findContainer,
  oneContainer,
} from './container-id.js';

const A = 'aa2a2df141f8d1fa3aaa35848e658734acd11f6d53e83325d53f553445779c53';
const B = '09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6';

describe('container IDs from cgroup paths', () => {
  it('reads the layouts of docker, systemd, podman, containerd and CRI-O, cgroup v1 and v2', () => {
    const cases: [string, string, string][] = [
      [`/docker/${A}`, A, 'docker'],
      [`/system.slice/docker-${A}.scope`, A, 'docker'],
      [`/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${A}.scope/container`, A, 'podman'],
      [`/machine.slice/libpod-${A}.scope`, A, 'podman'],
      [
        `/system.slice/containerd.service/kubepods-besteffort-pod1234_5678.slice:cri-containerd:${A}`,
        A,
        'containerd',
      ],
      [
        `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podx.slice/cri-containerd-${A}.scope`,
        A,
        'containerd',
      ],
      [`/kubepods.slice/kubepods-pod1.slice/crio-${A}.scope`, A, 'crio'],
      [`/kubepods/besteffort/pod2c48913c-b29f-11e7-9350-020000000001/${A}`, A, 'unknown'],
      [`/kubepods/kubepods/besteffort/pod2c48913c/${A}`, A, 'unknown'],
      // Docker in docker (kind): the inner container is the caller's.
      [`/docker/${B}/docker/${A}`, A, 'docker'],
      [`/docker/${B}/kubepods/besteffort/pod2c48913c/${A}`, A, 'unknown'],
    ];
    for (const [path, id, runtime] of cases)
      assert.deepEqual(containerInPath(path), { id, runtime, source: path }, path);
  });

  it('finds no container where there is no 64-hex ID on its own', () => {
    for (const path of [
      '/',
      '/user.slice/user-0.slice/session-1.scope',
      '/process_api/1da0920caf57f2912d599074ff75c1b4',
      `/x${A}y`.replace(/y$/, '0'), // 65 hex digits
      `/docker/${A.slice(1)}`,
    ])
      assert.equal(containerInPath(path), undefined, path);
  });

  it('parses /proc/<pid>/cgroup lines and refuses two different containers', () => {
    const text = `12:pids:/docker/${A}\n1:name=systemd:/docker/${A}\n0::/docker/${A}\n`;
    assert.deepEqual(cgroupPaths(text), [`/docker/${A}`, `/docker/${A}`, `/docker/${A}`]);
    assert.equal(oneContainer(cgroupPaths(text), 'x')?.id, A);
    assert.equal(oneContainer(cgroupPaths('0::/\n'), 'x'), undefined);
    assert.throws(
      () => oneContainer([`/docker/${A}`, `/docker/${B}`], '/proc/1/cgroup'),
      new RegExp(`/proc/1/cgroup names two containers, ${A}.*and ${B}`),
    );
    assert.throws(() => cgroupPaths('garbage\n'), /not a \/proc cgroup line/);
  });

  it('a path that names the runtime wins over one that does not, for the same container', () => {
    assert.equal(
      oneContainer([`/kubepods/pod1/${A}`, `/system.slice/docker-${A}.scope`], 'x')?.runtime,
      'docker',
    );
  });

  it('reads the roots of cgroup mounts from mountinfo, skipping "/" and other file systems', () => {
    const mountinfo = [
      '80 79 0:47 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755',
      `81 80 0:29 /docker/${A} /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu`,
      '82 80 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw',
      '83 79 0:31 /a\\040b /mnt rw shared:1 - cgroup2 cgroup2 rw',
      '84 79 254:0 /var/lib/docker /data rw - ext4 /dev/vda rw',
    ].join('\n');
    assert.deepEqual(cgroupMountRoots(mountinfo), [`/docker/${A}`, '/a b']);
  });

  it('a process that is gone is in no container (attestWorkload then refuses it as gone)', async () => {
    assert.equal(await findContainer(2 ** 22 + 1), undefined);
  });
});
